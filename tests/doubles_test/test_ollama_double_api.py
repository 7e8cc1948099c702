"""The Ollama double against the unmodified `ollama` and `openai` clients, and its answers
checked against Ollama 0.12.3's source: generation, tool calls, thinking, formats, errors."""

from __future__ import annotations

import json
import urllib.request

import httpx
import ollama
import openai
import pytest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string", "description": "the city"}},
        },
    },
}
CALL = 'please call get_weather with {"city": "Paris", "units": {"temp": "C"}}'
ARGUMENTS = {"city": "Paris", "units": {"temp": "C"}}


def client(engine) -> ollama.Client:
    return ollama.Client(host=engine.url, timeout=10)


def oai(engine) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0)


def post(engine, path, body, **kwargs) -> httpx.Response:
    return httpx.post(engine.url + path, json=body, timeout=10, **kwargs)


def ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def sse(response: httpx.Response) -> list:
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# -- plain answers


def test_chat_answers_in_one_object(ollama_double):
    r = client(ollama_double).chat(model="llama3.2:3b", messages=user("why is the sky blue"))
    assert r.message.role == "assistant"
    assert r.message.content == "Echo: why is the sky blue"
    assert (r.done, r.done_reason) == (True, "stop")
    assert (r.eval_count, r.prompt_eval_count) == (6, 5)
    assert r.total_duration > 0


@pytest.mark.parametrize("stream", [None, "absent"])
def test_chat_streams_by_default_and_when_stream_is_null(ollama_double, stream):
    body = {"model": "llama3.2:3b", "messages": user("one two three")}
    if stream is None:
        body["stream"] = None  # Ollama: `req.Stream != nil && !*req.Stream` -> null streams
    request = urllib.request.Request(
        ollama_double.url + "/api/chat", data=json.dumps(body).encode()
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson"
        parts = [json.loads(line) for line in response]
    assert len(parts) == 5
    assert all(p["done"] is False for p in parts[:-1])
    assert "".join(p["message"]["content"] for p in parts) == "Echo: one two three"
    last = parts[-1]
    assert (last["done"], last["done_reason"]) == (True, "stop")
    for counter in ("total_duration", "load_duration", "prompt_eval_count", "eval_count"):
        assert last[counter] > 0
    assert "total_duration" not in parts[0]  # Go's omitempty: zero counters are left out


def test_generate_plain_streamed_and_cut_by_num_predict(ollama_double):
    c = client(ollama_double)
    assert c.generate(model="llama3.2:3b", prompt="hello world").response == "Echo: hello world"
    streamed = list(c.generate(model="llama3.2:3b", prompt="hello world", stream=True))
    assert "".join(p.response for p in streamed) == "Echo: hello world"
    short = c.generate(model="llama3.2:3b", prompt="hello world", options={"num_predict": 2})
    assert (short.response, short.done_reason) == ("Echo: hello", "length")
    stopped = c.generate(model="llama3.2:3b", prompt="alpha beta gamma", options={"stop": ["beta"]})
    assert (stopped.response, stopped.done_reason) == ("Echo: alpha", "stop")


def test_empty_chat_and_prompt_load_and_keep_alive_zero_unloads(ollama_double):
    c = client(ollama_double)
    loaded = post(ollama_double, "/api/chat", {"model": "llama3.2:3b", "messages": []}).json()
    assert loaded["message"] == {"role": "assistant", "content": ""}
    assert (loaded["done"], loaded["done_reason"]) == (True, "load")
    assert [m.model for m in c.ps().models] == ["llama3.2:3b"]
    gone = post(ollama_double, "/api/chat", {"model": "llama3.2:3b", "keep_alive": 0}).json()
    assert gone["done_reason"] == "unload"
    assert c.ps().models == []
    load = post(ollama_double, "/api/generate", {"model": "llama3.2:3b"}).json()
    assert (load["response"], load["done_reason"]) == ("", "load")
    unload = post(ollama_double, "/api/generate", {"model": "llama3.2:3b", "keep_alive": "0s"})
    assert unload.json()["done_reason"] == "unload"
    assert c.ps().models == []


def test_keep_alive_takes_go_durations_seconds_and_minus_one(ollama_double):
    c = client(ollama_double)
    c.generate(model="llama3.2:3b", prompt="x", keep_alive="1h30m")
    (model,) = c.ps().models
    left = (model.expires_at - model.expires_at.now(model.expires_at.tzinfo)).total_seconds()
    assert 5300 < left <= 5400
    c.generate(model="llama3.2:3b", prompt="x", keep_alive=-1)
    assert c.ps().models[0].expires_at.year > 2200  # Go's MaxInt64 duration: "forever"
    c.generate(model="llama3.2:3b", prompt="x", keep_alive=0)
    assert c.ps().models == []
    for bad, message in (
        ("5", 'time: missing unit in duration "5"'),
        ("soon", 'time: invalid duration "soon"'),
        ("5y", 'time: unknown unit "y" in duration "5y"'),
        (True, "Unsupported type: 'bool'"),
    ):
        r = post(ollama_double, "/api/generate", {"model": "llama3.2:3b", "keep_alive": bad})
        assert (r.status_code, r.json()) == (400, {"error": message})


def test_embeddings_are_deterministic_unit_vectors(ollama_double):
    c = client(ollama_double)
    r = c.embed(model="nomic-embed-text:v1.5", input=["alpha", "beta", "alpha"])
    a, b, a_again = r.embeddings
    assert len(a) == 768
    assert a == a_again != b
    assert abs(sum(v * v for v in a) - 1) < 1e-3
    short = c.embed(model="nomic-embed-text:v1.5", input="alpha", dimensions=64).embeddings[0]
    assert len(short) == 64 and abs(sum(v * v for v in short) - 1) < 1e-3
    longer = c.embed(model="nomic-embed-text:v1.5", input="alpha", dimensions=4096).embeddings[0]
    assert len(longer) == 768  # dimensions only ever truncate
    assert c.embed(model="nomic-embed-text:v1.5", input="").embeddings == []
    legacy = c.embeddings(model="nomic-embed-text:v1.5", prompt="alpha").embedding
    assert len(legacy) == 768
    bad = post(ollama_double, "/api/embed", {"model": "nomic-embed-text:v1.5", "input": [1]})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid input type"})


def test_root_version_and_ps(ollama_double):
    assert httpx.get(ollama_double.url + "/").text == "Ollama is running"
    assert httpx.get(ollama_double.url + "/api/version").json() == {"version": "0.12.3"}
    c = client(ollama_double)
    assert c.ps().models == []
    c.generate(model="llama3.2:3b", prompt="x")
    (loaded,) = c.ps().models
    assert (loaded.model, loaded.size_vram, loaded.context_length) == ("llama3.2:3b", 0, 4096)


# -- tool calls, as the convention shared with the OpenAI-only engine scripts them


def test_native_tool_call_then_tool_answer(ollama_double):
    c = client(ollama_double)
    r = c.chat(model="llama3.2:3b", messages=user(CALL), tools=[WEATHER])
    assert r.message.content == ""
    (call,) = r.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", ARGUMENTS)
    assert r.done_reason == "stop"
    raw = post(
        ollama_double,
        "/api/chat",
        {"model": "llama3.2:3b", "messages": user(CALL), "tools": [WEATHER], "stream": False},
    ).json()
    # api.ToolCallFunction.Index is `omitempty`: the first call has no "index"
    assert raw["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": ARGUMENTS}}
    ]
    turn = [
        *user(CALL),
        {"role": "assistant", "content": "", "tool_calls": raw["message"]["tool_calls"]},
        {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"},
    ]
    second = c.chat(model="llama3.2:3b", messages=turn, tools=[WEATHER])
    assert second.message.content == "tool said: sunny, 21 C"
    assert not second.message.tool_calls


def test_native_streamed_tool_call_comes_in_one_chunk_before_done(ollama_double):
    body = {"model": "llama3.2:3b", "messages": user(CALL), "tools": [WEATHER]}
    parts = ndjson(post(ollama_double, "/api/chat", body))
    assert len(parts) == 2
    assert parts[0]["done"] is False
    assert parts[0]["message"]["tool_calls"][0]["function"]["arguments"] == ARGUMENTS
    assert parts[1]["done"] is True and "tool_calls" not in parts[1]["message"]


def test_tool_call_only_for_an_offered_tool_in_the_last_user_message(ollama_double):
    c = client(ollama_double)
    other = {**WEATHER, "function": {**WEATHER["function"], "name": "get_time"}}
    assert not c.chat(model="llama3.2:3b", messages=user(CALL), tools=[other]).message.tool_calls
    assert not c.chat(model="llama3.2:3b", messages=user(CALL)).message.tool_calls
    earlier = [*user(CALL), {"role": "assistant", "content": "ok"}, *user("thanks")]
    answer = c.chat(model="llama3.2:3b", messages=earlier, tools=[WEATHER]).message
    assert (answer.content, answer.tool_calls) == ("Echo: thanks", None)


def test_openai_tool_call_and_stream(ollama_double):
    c = oai(ollama_double)
    r = c.chat.completions.create(model="llama3.2:3b", messages=user(CALL), tools=[WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and len(call.id) == len("call_") + 8
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS
    chunks = list(
        c.chat.completions.create(
            model="llama3.2:3b", messages=user(CALL), tools=[WEATHER], stream=True
        )
    )
    calls = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    # Ollama sends the whole call in one delta (its parser emits complete calls only)
    (streamed,) = calls
    assert streamed.index == 0 and streamed.id.startswith("call_")
    assert json.loads(streamed.function.arguments) == ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    second = c.chat.completions.create(
        model="llama3.2:3b",
        messages=[
            *user(CALL),
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert second.choices[0].message.content == "tool said: sunny"
    assert second.choices[0].finish_reason == "stop"


# -- thinking


def test_native_thinking_on_a_thinking_model(ollama_double):
    c = client(ollama_double)
    c.pull("qwen3:0.6b")
    r = c.chat(model="qwen3:0.6b", messages=user("what is 2+2"), think=True)
    assert r.message.thinking == "thinking about: what is 2+2"
    assert r.message.content == "Echo: what is 2+2"
    for think in (False, None):
        plain = c.chat(model="qwen3:0.6b", messages=user("what is 2+2"), think=think)
        assert plain.message.thinking is None
    parts = list(c.chat(model="qwen3:0.6b", messages=user("a b"), think=True, stream=True))
    kinds = ["thinking" if p.message.thinking else "content" for p in parts if not p.done]
    assert kinds == ["thinking"] * 4 + ["content"] * 3  # thinking chunks come first
    assert all(p.message.content == "" for p in parts if p.message.thinking)
    generated = c.generate(model="qwen3:0.6b", prompt="hi", think=True)
    assert (generated.thinking, generated.response) == ("thinking about: hi", "Echo: hi")


def test_thinking_and_a_tool_call_together(ollama_double):
    c = client(ollama_double)
    c.pull("qwen3:0.6b")
    r = c.chat(model="qwen3:0.6b", messages=user(CALL), tools=[WEATHER], think=True)
    assert r.message.thinking == "thinking about: " + CALL
    assert r.message.tool_calls[0].function.arguments == ARGUMENTS


def test_gpt_oss_always_thinks_and_takes_effort_levels(ollama_double):
    c = client(ollama_double)
    c.pull("gpt-oss:20b")
    for think in (None, False, True, "low", "high"):
        r = c.chat(model="gpt-oss:20b", messages=user("x"), think=think)
        assert r.message.thinking == "thinking about: x", think
    o = oai(ollama_double).chat.completions.create(
        model="gpt-oss:20b", messages=user("x"), reasoning_effort="high"
    )
    assert o.choices[0].message.model_extra["reasoning"] == "thinking about: x"
    raw = post(
        ollama_double,
        "/v1/chat/completions",
        {"model": "gpt-oss:20b", "messages": user("x"), "stream": True},
    )
    deltas = [e["choices"][0]["delta"] for e in sse(raw)[:-1] if e["choices"]]
    assert "".join(d.get("reasoning", "") for d in deltas) == "thinking about: x"
    assert "".join(d["content"] for d in deltas) == "Echo: x"


# -- formats


def test_format_json_and_schema_answer_valid_json(ollama_double):
    c = client(ollama_double)
    r = c.chat(model="llama3.2:3b", messages=user("hi there"), format="json")
    assert json.loads(r.message.content) == {"echo": "hi there"}
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 3},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["a", "b"]},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "age"],
    }
    value = json.loads(c.generate(model="llama3.2:3b", prompt="x", format=schema).response)
    assert value == {"name": "x", "age": 3, "tags": ["x"], "kind": "a", "ok": True}
    streamed = "".join(
        p.message.content
        for p in c.chat(model="llama3.2:3b", messages=user("a b"), format=schema, stream=True)
    )
    assert json.loads(streamed)["name"] == "a b"
    o = oai(ollama_double).chat.completions.create(
        model="llama3.2:3b", messages=user("q"), response_format={"type": "json_object"}
    )
    assert json.loads(o.choices[0].message.content) == {"echo": "q"}
    o = oai(ollama_double).chat.completions.create(
        model="llama3.2:3b",
        messages=user("q"),
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    assert json.loads(o.choices[0].message.content)["age"] == 3


def test_an_unknown_format_is_the_runners_error(ollama_double):
    message = 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'
    body = {"model": "llama3.2:3b", "messages": user("x"), "format": "xml"}
    r = post(ollama_double, "/api/chat", {**body, "stream": False})
    assert (r.status_code, r.json()) == (500, {"error": message})
    streamed = post(ollama_double, "/api/chat", body)  # the stream has begun: 200, an error line
    assert streamed.status_code == 200 and ndjson(streamed) == [{"error": message}]


# -- errors, with Ollama's texts and statuses


def test_unknown_model_errors_per_endpoint(ollama_double):
    for path, body, status, message in (
        (
            "/api/chat",
            {"model": "mistral", "messages": user("x")},
            404,
            "model 'mistral' not found",
        ),
        ("/api/generate", {"model": "mistral", "prompt": "x"}, 404, "model 'mistral' not found"),
        ("/api/generate", {"prompt": "x"}, 404, "model '' not found"),
        ("/api/chat", {"messages": user("x")}, 400, "model is required"),
        ("/api/chat", {"model": "bad name!"}, 400, "model is required"),
        ("/api/show", {"model": "mistral"}, 404, "model 'mistral' not found"),
        ("/api/show", {}, 400, "model is required"),
        (
            "/api/embed",
            {"model": "mistral", "input": "x"},
            404,
            'model "mistral" not found, try pulling it first',
        ),
        ("/api/embed", {"input": "x"}, 404, 'model "" not found, try pulling it first'),
        (
            "/api/embeddings",
            {"model": "mistral", "prompt": "x"},
            404,
            'model "mistral" not found, try pulling it first',
        ),
        ("/api/embeddings", {"model": "bad name!"}, 400, "model is required"),
    ):
        r = post(ollama_double, path, body)
        assert (r.status_code, r.json()) == (status, {"error": message}), path
    with pytest.raises(ollama.ResponseError) as e:
        client(ollama_double).chat(model="mistral", messages=user("x"))
    assert e.value.status_code == 404


def test_bad_bodies_get_encoding_json_errors(ollama_double):
    for content, message in (
        (b"", "missing request body"),
        (b"  \n", "missing request body"),
        (b"{nope", "invalid character 'n' looking for beginning of object key string"),
        (b'{"model": "m",', "unexpected EOF"),
        (b"[1]", "json: cannot unmarshal array into Go value of type api.ChatRequest"),
        (
            b'{"model": 5}',
            "json: cannot unmarshal number into Go struct field ChatRequest.model of type string",
        ),
        (
            b'{"model": "llama3.2:3b", "stream": "yes"}',
            "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool",
        ),
        (
            b'{"model": "llama3.2:3b", "think": "max"}',
            'invalid think value: "max" (must be "high", "medium", "low", true, or false)',
        ),
    ):
        r = httpx.post(ollama_double.url + "/api/chat", content=content)
        assert (r.status_code, r.json()) == (400, {"error": message}), content
    # Go matches field names case-insensitively and ignores what follows the first value
    r = httpx.post(
        ollama_double.url + "/api/generate",
        content=b'{"MODEL": "llama3.2:3b", "Prompt": "x", "stream": false} trailing',
    )
    assert r.json()["response"] == "Echo: x"


def test_an_option_of_the_wrong_type_is_500(ollama_double):
    r = post(
        ollama_double,
        "/api/generate",
        {"model": "llama3.2:3b", "prompt": "x", "options": {"num_predict": "3"}},
    )
    assert (r.status_code, r.json()) == (
        500,
        {"error": 'option "num_predict" must be of type integer'},
    )


# -- Ollama's OpenAI-compatible API, with the unmodified openai client


def test_openai_models_and_chat(ollama_double):
    c = oai(ollama_double)
    assert {m.id for m in c.models.list()} == {"llama3.2:3b", "nomic-embed-text:v1.5"}
    model = c.models.retrieve("llama3.2:3b")
    assert (model.id, model.owned_by) == ("llama3.2:3b", "library")
    r = c.chat.completions.create(model="llama3.2:3b", messages=user("hi there"))
    assert r.choices[0].message.content == "Echo: hi there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 3
    assert r.system_fingerprint == "fp_ollama" and r.id.startswith("chatcmpl-")


def test_openai_chat_stream_ends_with_done_and_usage(ollama_double):
    c = oai(ollama_double)
    chunks = list(
        c.chat.completions.create(
            model="llama3.2:3b",
            messages=user("hi there"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Echo: hi there"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 5
    raw = post(
        ollama_double,
        "/v1/chat/completions",
        {"model": "llama3.2:3b", "stream": True, "messages": user("x")},
    )
    assert raw.headers["content-type"] == "text/event-stream"
    assert raw.text.endswith("data: [DONE]\n\n")


def test_openai_completions_embeddings_and_unknown_model(ollama_double):
    c = oai(ollama_double)
    r = c.completions.create(model="llama3.2:3b", prompt="a b c", max_tokens=2)
    assert (r.choices[0].text, r.choices[0].finish_reason) == ("Echo: a", "length")
    e = c.embeddings.create(model="nomic-embed-text:v1.5", input=["x", "y"])
    assert [d.index for d in e.data] == [0, 1]
    assert len(e.data[0].embedding) == 768
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=user("x"))


def test_openai_error_types_follow_the_status_only_in_the_middleware(ollama_double):
    def error(path, body):
        r = post(ollama_double, path, body)
        return r.status_code, r.json()["error"]["type"], r.json()["error"]["message"]

    # the middleware's own refusals: 400 invalid_request_error
    assert error("/v1/chat/completions", {"model": "llama3.2:3b", "messages": []}) == (
        400,
        "invalid_request_error",
        "[] is too short - 'messages'",
    )
    assert error("/v1/embeddings", {"model": "nomic-embed-text:v1.5", "input": []}) == (
        400,
        "invalid_request_error",
        "invalid input",
    )
    empty = httpx.post(ollama_double.url + "/v1/chat/completions", content=b"")
    assert empty.json()["error"]["message"] == "EOF"
    # errors passed on from Ollama's handler keep their status and are all api_error
    assert error("/v1/chat/completions", {"model": "nope", "messages": user("x")}) == (
        404,
        "api_error",
        "model 'nope' not found",
    )
    assert error(
        "/v1/chat/completions", {"model": "nomic-embed-text:v1.5", "messages": user("x")}
    ) == (400, "api_error", '"nomic-embed-text:v1.5" does not support chat')
    assert error("/v1/completions", {"model": "nomic-embed-text:v1.5", "prompt": "x"}) == (
        400,
        "api_error",
        '"nomic-embed-text:v1.5" does not support generate',
    )
    r = httpx.get(ollama_double.url + "/v1/models/nope")
    assert (r.status_code, r.json()["error"]["type"]) == (404, "api_error")


def test_openai_message_parts_become_separate_messages(ollama_double):
    # fromChatRequest: each text part is its own message, so the last one is answered
    r = oai(ollama_double).chat.completions.create(
        model="llama3.2:3b",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
            }
        ],
    )
    assert r.choices[0].message.content == "Echo: second"

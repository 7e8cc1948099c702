"""The Ollama <-> OpenAI translation in process: what an Ollama request becomes on an
OpenAI-compatible engine, and what the engine's answer (whole or streamed) becomes for the
Ollama client. docs/ollama-translation.md is the table these check, field by field.

test_agent_ollama_translation.py and the reliability suite show the same with the real
`ollama` client and engines; these are fast enough to run for every mutant in
`make mutation`.
"""

from __future__ import annotations

import asyncio
import base64
import math

import orjson
import pytest
from cube_agent import translate
from cube_agent.errors import AgentError
from cube_agent.ollama_schema import ChatRequest, EmbedRequest, GenerateRequest, Message, parse
from cube_agent.translate import OllamaStream

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(40)).decode()
GIF = base64.b64encode(b"GIF89a" + bytes(40)).decode()
WEBP = base64.b64encode(b"RIFF" + bytes(4) + b"WEBPVP8 " + bytes(40)).decode()


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """perf_counter() at 2.5 s: a request started at 0 took exactly 2.5 s."""
    monkeypatch.setattr(translate.time, "perf_counter", lambda: 2.5)


def chat(**fields) -> dict:
    return translate.chat_request(ChatRequest.model_validate({"model": "m", **fields}))


def generate(**fields) -> tuple[str, dict]:
    return translate.generate_request(GenerateRequest.model_validate({"model": "m", **fields}))


def messages(*history: dict) -> list[dict]:
    return translate.chat_messages([Message.model_validate(m) for m in history])


def refusal(function, *args, **kwargs) -> AgentError:
    with pytest.raises(AgentError) as caught:
        function(*args, **kwargs)
    return caught.value


USER = [{"role": "user", "content": "hi"}]


# -- requests: options, stream, format, think ----------------------------------------------


def test_every_mapped_option_is_sent_under_the_engines_name_and_unset_ones_are_not():
    options = {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 7,
        "stop": ["\n\n"],
        "num_predict": 12,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "repeat_penalty": 1.1,
        "num_ctx": 8192,  # the engine's context is fixed at its start: not sent
        "mirostat": 2,  # not Ollama's concern here: ignored
    }
    out = chat(messages=USER, options=options, stream=False)
    assert out == {
        "model": "m",
        "stream": False,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 7,
        "stop": ["\n\n"],
        "max_tokens": 12,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "repeat_penalty": 1.1,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert chat(messages=USER, options={"temperature": 0}, stream=False) == {
        "model": "m",
        "stream": False,
        "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize("unlimited", [-1, -2, 0])
def test_num_predict_without_a_limit_sends_no_max_tokens(unlimited):
    """Ollama's runner limits a generation only for num_predict > 0: -1 (its default) and 0
    both mean until the model stops. max_tokens 0 is no such thing (vLLM refuses it)."""
    out = chat(messages=USER, options={"num_predict": unlimited, "seed": 1}, stream=False)
    assert "max_tokens" not in out and out["seed"] == 1
    assert chat(messages=USER, options={"num_predict": 1}, stream=False)["max_tokens"] == 1


def test_streams_unless_stream_is_false_and_asks_for_the_usage():
    for stream in (None, True):
        fields = {} if stream is None else {"stream": stream}
        out = chat(messages=USER, **fields)
        assert out["stream"] is True
        assert out["stream_options"] == {"include_usage": True}  # the counters of `done`
    whole = chat(messages=USER, stream=False)
    assert whole["stream"] is False and "stream_options" not in whole


def test_format_json_and_a_schema():
    assert chat(messages=USER, format="json")["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert chat(messages=USER, format=schema)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "format", "schema": schema},
    }
    for unset in ({}, {"format": ""}, {"format": None}):
        assert "response_format" not in chat(messages=USER, **unset)
    _, out = generate(prompt="x", format="json")
    assert out["response_format"] == {"type": "json_object"}
    _, raw = generate(prompt="x", raw=True, format=schema)
    assert raw["response_format"]["json_schema"]["schema"] == schema


def test_format_json_as_parsed_from_the_wire():
    """format and think as read from the client's JSON body."""
    body = orjson.dumps({"model": "m", "messages": USER, "format": "json", "think": "low"})
    out = translate.chat_request(parse(ChatRequest, body))
    assert out["response_format"] == {"type": "json_object"}
    assert out["reasoning_effort"] == "low"


def test_think_is_the_templates_switch_and_a_level_is_reasoning_effort():
    assert "chat_template_kwargs" not in chat(messages=USER)  # unset: the template's default
    assert "reasoning_effort" not in chat(messages=USER, think=True)
    on = chat(messages=USER, think=True)
    assert on["chat_template_kwargs"] == {"enable_thinking": True}
    off = chat(messages=USER, think=False)
    assert off["chat_template_kwargs"] == {"enable_thinking": False}
    assert "reasoning_effort" not in off
    for level in ("high", "medium", "low"):
        out = chat(messages=USER, think=level)
        assert out["chat_template_kwargs"] == {"enable_thinking": True}
        assert out["reasoning_effort"] == level
    assert generate(prompt="x", think=False)[1]["chat_template_kwargs"] == {
        "enable_thinking": False
    }


def test_tools_get_their_type():
    fn = {"name": "f", "parameters": {"type": "object"}}
    out = chat(messages=USER, tools=[{"function": fn}, {"type": "function", "function": fn}])
    assert out["tools"] == [{"type": "function", "function": fn}] * 2
    assert "tools" not in chat(messages=USER) and "tools" not in chat(messages=USER, tools=[])


# -- requests: messages, images, tool calls ----------------------------------------------------


def test_images_become_data_urls_after_the_text():
    out = messages({"role": "user", "content": "what", "images": [PNG, JPEG]})
    assert out == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
            ],
        }
    ]
    # no text: only the images; no images (or none listed): the plain string
    assert messages({"role": "user", "content": "", "images": [GIF]})[0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/gif;base64,{GIF}"}}
    ]
    assert messages({"role": "user", "content": "x", "images": []})[0]["content"] == "x"
    assert messages({"role": "user", "content": None})[0]["content"] == ""


def test_the_media_type_comes_from_the_images_own_bytes():
    kinds = {PNG: "image/png", JPEG: "image/jpeg", GIF: "image/gif", WEBP: "image/webp"}
    for data, kind in kinds.items():
        assert translate.image_url(data)["image_url"]["url"] == f"data:{kind};base64,{data}"
    # a format it does not know: jpeg, which vision engines sniff past anyway
    bmp = base64.b64encode(b"BM" + bytes(40)).decode()
    assert translate.image_url(bmp)["image_url"]["url"].startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize(
    "data",
    [
        "iVBORw0",  # 7 characters: one '=' short
        "iVBORw",  # 6: two short
        "iVBORw0K",  # 8: none
        "iVBORw0KGgoAAAANSUhEUgAAAAE",  # longer than the 24 looked at, cut at any length
        "iVBORw0KGgoAAAANSUhEUgAAA",
        "iVBORw0KGgoAAAANSUhEUgAAAAEA",
    ],
)
def test_a_short_or_unpadded_image_is_still_typed(data):
    """Only the first 24 characters (18 bytes) are decoded, padded to a whole quantum."""
    assert translate.image_url(data)["image_url"]["url"] == f"data:image/png;base64,{data}"


@pytest.mark.parametrize(
    "data", ["not base64!", "iVBOR$w0K", "data:image/png;base64,iVBO", "i", "iVBORw0K\u00e9"]
)
def test_an_image_that_is_not_base64_is_400(data):
    err = refusal(translate.image_url, data)
    assert err.status == 400 and err.code == "invalid_image"
    assert "base64" in err.message
    assert refusal(messages, {"role": "user", "content": "x", "images": [data]}).status == 400


def test_tool_calls_get_ids_and_json_string_arguments():
    out = messages(
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "f", "arguments": {"city": "Paris", "days": 2}}},
                {"function": {"name": "g", "arguments": '{"a": 1}'}},
                {"id": "theirs", "function": {"name": "h"}},
                {"function": {"name": "k", "arguments": ""}},
            ],
        },
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]},
    )
    assert out[0] == {"role": "user", "content": "go"}
    assert out[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1_0",
                "type": "function",
                "function": {"name": "f", "arguments": '{"city":"Paris","days":2}'},
            },
            {
                "id": "call_1_1",
                "type": "function",
                "function": {"name": "g", "arguments": '{"a": 1}'},
            },
            {"id": "theirs", "type": "function", "function": {"name": "h", "arguments": "{}"}},
            {"id": "call_1_3", "type": "function", "function": {"name": "k", "arguments": "{}"}},
        ],
    }
    assert [c["id"] for c in out[2]["tool_calls"]] == ["call_2_0"]


def test_tool_results_answer_the_call_of_their_name_else_the_oldest_unanswered():
    calls = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "weather", "arguments": {}}},
            {"function": {"name": "time", "arguments": {}}},
            {"function": {"name": "weather", "arguments": {}}},
        ],
    }
    out = messages(
        calls,
        {"role": "tool", "content": "12:00", "tool_name": "time"},
        {"role": "tool", "content": "sun", "tool_name": "weather"},
        {"role": "tool", "content": "rain", "tool_name": "weather"},
    )
    assert [m.get("tool_call_id") for m in out] == [None, "call_0_1", "call_0_0", "call_0_2"]
    assert out[1] == {"role": "tool", "content": "12:00", "tool_call_id": "call_0_1"}
    # no tool_name, or one that matches no call: the oldest unanswered call
    out = messages(
        calls,
        {"role": "tool", "content": "a"},
        {"role": "tool", "content": "b", "tool_name": "nothing"},
        {"role": "tool", "content": "c"},
        {"role": "tool", "content": "d"},  # every call answered: no id to give
        {"role": "user", "content": "and?"},
    )
    assert [m.get("tool_call_id") for m in out] == [
        None,
        "call_0_0",
        "call_0_1",
        "call_0_2",
        None,
        None,
    ]
    assert "tool_call_id" not in out[4] and "tool_call_id" not in out[5]


def test_a_clients_tool_call_id_is_kept_and_answers_that_call():
    calls = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "a", "function": {"name": "f"}},
            {"id": "b", "function": {"name": "f"}},
        ],
    }
    out = messages(
        calls,
        {"role": "tool", "content": "2", "tool_call_id": "b", "tool_name": "f"},
        {"role": "tool", "content": "1", "tool_name": "f"},
        {"role": "tool", "content": "x", "tool_call_id": "elsewhere"},
    )
    assert [m.get("tool_call_id") for m in out[1:]] == ["b", "a", "elsewhere"]
    # a user message never gets a tool_call_id, even with a call unanswered
    out = messages(calls, {"role": "user", "content": "never mind", "tool_name": "f"})
    assert out[1] == {"role": "user", "content": "never mind"}


def test_tool_results_as_parsed_from_the_wire_answer_one_call_each():
    """The ids compared are strings read from the client's JSON (equal, not the same
    objects): a call answered by its id is not answered again by a later result."""
    body = {
        "model": "m",
        "messages": [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call-a", "function": {"name": "f"}},
                    {"id": "call-b", "function": {"name": "f"}},
                ],
            },
            {"role": "tool", "content": "1", "tool_call_id": "call-a"},
            {"role": "tool", "content": "2", "tool_name": "f"},
        ],
        "stream": False,
    }
    sent = translate.chat_request(parse(ChatRequest, orjson.dumps(body)))["messages"]
    assert [m.get("tool_call_id") for m in sent] == [None, "call-a", "call-b"]


def test_chat_request_carries_the_history():
    out = chat(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi", "thinking": "dropped"},
        ],
        stream=False,
    )
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert chat(stream=False)["messages"] == []


# -- /api/generate --------------------------------------------------------------------------


def test_generate_is_a_chat_with_the_system_prompt_first():
    path, out = generate(prompt="why", system="be brief", stream=False, options={"seed": 3})
    assert path == "/v1/chat/completions"
    assert out == {
        "model": "m",
        "stream": False,
        "seed": 3,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "why"},
        ],
    }
    _, out = generate(prompt="look", images=[PNG])
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        }
    ]
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}


def test_raw_is_a_completion_of_the_prompt_as_written():
    path, out = generate(prompt="<s>[INST] x [/INST]", raw=True, stream=False, think=True)
    assert path == "/v1/completions"
    assert out == {"model": "m", "stream": False, "prompt": "<s>[INST] x [/INST]"}
    err = refusal(generate, prompt="x", raw=True, images=[PNG])
    assert err.status == 400 and "raw mode cannot carry images" in err.message


def test_context_round_trip_continues_the_conversation():
    _, first = generate(prompt="first", system="sys", images=[PNG], stream=False)
    answer = {"choices": [{"message": {"content": "one"}, "finish_reason": "stop"}]}
    done = translate.chat_response(answer, "m", "generate", 0.0, first["messages"])
    # without the system prompt (sent again with each request) and without the images
    assert orjson.loads(bytes(done["context"])) == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
    ]
    assert all(isinstance(t, int) and 0 <= t < 256 for t in done["context"])
    _, second = generate(prompt="second", system="sys", context=done["context"], stream=False)
    assert second["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "second"},
    ]


def test_a_system_message_in_a_context_is_not_carried_on():
    """The context is the conversation without system prompts, also when a client's
    context (read from its JSON) has one: the system prompt is the request's own."""
    forged = list(
        orjson.dumps([{"role": "system", "content": "old"}, {"role": "user", "content": "a"}])
    )
    body = {"model": "m", "prompt": "b", "context": forged, "stream": False}
    _, out = translate.generate_request(parse(GenerateRequest, orjson.dumps(body)))
    answer = {"choices": [{"message": {"content": "c"}}]}
    done = translate.chat_response(answer, "m", "generate", 0.0, out["messages"])
    assert [m["role"] for m in orjson.loads(bytes(done["context"]))] == [
        "user",
        "user",
        "assistant",
    ]


def test_encode_context_keeps_text_only():
    history = [
        {"role": "system", "content": "s"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": "data:..."}},
                {"type": "text", "text": "b"},
            ],
        },
        {"role": "assistant", "content": None},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    ]
    assert orjson.loads(bytes(translate.encode_context(history))) == [
        {"role": "user", "content": "a b"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
    ]


@pytest.mark.parametrize(
    "context",
    [
        [300],  # not bytes
        [1, 2, 3],  # token ids (an Ollama context)
        list(b"{not json"),
        list(b'{"role": "user"}'),  # not a list
        list(b"[1]"),
        list(b'[{"role": "user"}, 2]'),
        list(b'[{"content": "no role"}]'),
        list(b'[{"role": 5}]'),
        list(b'"text"'),
    ],
)
def test_a_context_the_agent_did_not_make_is_400(context):
    err = refusal(translate.decode_context, context)
    assert (err.status, err.code) == (400, "invalid_context")
    assert refusal(generate, prompt="x", context=context).status == 400


def test_no_context_is_no_history():
    assert translate.decode_context(None) == translate.decode_context([]) == []
    assert translate.decode_context(list(b"[]")) == []
    assert translate.decode_context(list(b'[{"role": "user", "content": "x"}]')) == [
        {"role": "user", "content": "x"}
    ]


def test_fill_in_the_middle_bodies():
    req = GenerateRequest.model_validate(
        {"model": "m", "prompt": "def f(", "suffix": "  return x", "options": {"num_predict": 9}}
    )
    assert translate.infill_request(req) == {
        "input_prefix": "def f(",
        "input_suffix": "  return x",
        "prompt": "",
        "stream": True,
        "n_predict": 9,
    }
    plain = GenerateRequest.model_validate({"model": "m", "suffix": "s", "stream": False})
    assert translate.infill_request(plain) == {
        "input_prefix": "",
        "input_suffix": "s",
        "prompt": "",
        "stream": False,
    }
    assert translate.suffix_completion_request(req) == {
        "model": "m",
        "stream": True,
        "max_tokens": 9,
        "stream_options": {"include_usage": True},
        "prompt": "def f(",
        "suffix": "  return x",
    }


def test_embed_request():
    assert translate.embed_request(EmbedRequest(model="e", input=["a", "b"])) == {
        "model": "e",
        "input": ["a", "b"],
    }
    assert translate.embed_request(EmbedRequest(model="e", input="a"))["input"] == "a"
    assert translate.embed_request(EmbedRequest(model="e"))["input"] == ""


# -- whole answers --------------------------------------------------------------------------


def completion(message: dict | None = None, finish: str | None = "stop", **data) -> dict:
    choice = {"index": 0, "message": message or {}, "finish_reason": finish}
    return {"choices": [choice], **data}


def test_a_chat_answer_with_thinking_tool_calls_and_counters():
    data = completion(
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "hmm",
            "tool_calls": [
                {"id": "x", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "y", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        finish="tool_calls",
        usage={"prompt_tokens": 7, "completion_tokens": 3},
    )
    out = translate.chat_response(data, "asked-for", "chat", 0.5)
    assert out["created_at"].endswith("Z")
    del out["created_at"]
    assert out == {
        "model": "asked-for",
        "message": {
            "role": "assistant",
            "content": "",
            "thinking": "hmm",
            "tool_calls": [
                {"function": {"name": "f", "arguments": {"a": 1}}},
                {"function": {"index": 1, "name": "g", "arguments": {}}},
            ],
        },
        "done": True,
        "done_reason": "stop",  # tool calls too, as Ollama
        "total_duration": 2_000_000_000,
        "load_duration": 0,
        "prompt_eval_count": 7,
        "prompt_eval_duration": 0,
        "eval_count": 3,
        "eval_duration": 0,
    }


def test_a_plain_chat_answer_has_no_thinking_no_calls_and_no_context():
    out = translate.chat_response(completion({"content": "hello"}), "m", "chat", 0.0)
    assert out["message"] == {"role": "assistant", "content": "hello"}
    assert "context" not in out and "thinking" not in out and "response" not in out
    assert out["total_duration"] == 2_500_000_000


def test_a_generate_answer_is_response_and_thinking():
    data = completion({"content": "42", "reasoning": "think"}, finish="length")
    out = translate.chat_response(data, "m", "generate", 0.0)
    assert (out["response"], out["thinking"], out["done_reason"]) == ("42", "think", "length")
    assert "message" not in out
    plain = translate.chat_response(completion({"content": "42"}), "m", "generate", 0.0)
    assert "thinking" not in plain and plain["response"] == "42"


def test_the_text_of_every_kind_of_answer():
    # /v1/completions (raw, vLLM's suffix): choices[].text
    text = {"choices": [{"index": 0, "text": "raw text", "finish_reason": "length"}]}
    out = translate.chat_response(text, "m", "generate", 0.0)
    assert (out["response"], out["done_reason"]) == ("raw text", "length")
    # llama.cpp's /infill: no choices, `content`, `stop_type` and `timings`
    infill = {
        "content": "middle",
        "stop_type": "limit",
        "timings": {"prompt_n": 5, "prompt_ms": 1.5, "predicted_n": 2, "predicted_ms": 2.25},
    }
    out = translate.chat_response(infill, "m", "generate", 0.0)
    assert out["response"] == "middle" and out["done_reason"] == "length"
    assert out["prompt_eval_count"] == 5 and out["eval_count"] == 2
    assert out["prompt_eval_duration"] == 1_500_000 and out["eval_duration"] == 2_250_000
    # n > 1: the first choice only
    two = {
        "choices": [
            {"index": 0, "message": {"content": "first"}, "finish_reason": "stop"},
            {"index": 1, "message": {"content": "second"}, "finish_reason": "length"},
        ]
    }
    out = translate.chat_response(two, "m", "chat", 0.0)
    assert (out["message"]["content"], out["done_reason"]) == ("first", "stop")
    # nothing at all: an empty answer, not a crash
    empty = translate.chat_response({}, "m", "chat", 0.0)
    assert empty["message"] == {"role": "assistant", "content": ""}
    assert empty["done_reason"] == "stop" and empty["eval_count"] == 0
    assert translate.chat_response({"choices": []}, "m", "chat", 0.0)["done"] is True


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("length", "length"), ("limit", "length"), ("stop", "stop"), ("tool_calls", "stop"),
     ("eos", "stop"), (None, "stop"), ("", "stop")],
)  # fmt: skip
def test_done_reason(finish, reason):
    assert translate.chat_response(completion({}, finish), "m", "chat", 0.0)["done_reason"] == (
        reason
    )


def test_usage_is_preferred_to_llama_cpps_timings():
    data = completion(
        {"content": "x"},
        usage={"prompt_tokens": 10, "completion_tokens": 4},
        timings={"prompt_n": 99, "predicted_n": 98, "prompt_ms": 2.0, "predicted_ms": 3.0},
    )
    out = translate.chat_response(data, "m", "chat", 1.0)
    assert (out["prompt_eval_count"], out["eval_count"]) == (10, 4)
    assert (out["prompt_eval_duration"], out["eval_duration"]) == (2_000_000, 3_000_000)
    assert out["total_duration"] == 1_500_000_000 and out["load_duration"] == 0
    partial = completion({"content": "x"}, usage={"completion_tokens": 4}, timings={})
    out = translate.chat_response(partial, "m", "chat", 1.0)
    assert (out["prompt_eval_count"], out["eval_count"]) == (0, 4)


def test_reasoning_under_either_name_and_never_empty():
    for message, thinking in (
        ({"reasoning_content": "a"}, "a"),
        ({"reasoning": "b"}, "b"),
        ({"reasoning_content": "a", "reasoning": "b"}, "a"),
        ({"reasoning_content": "", "reasoning": "b"}, "b"),
        ({"reasoning_content": None, "reasoning": "b"}, "b"),
        ({"reasoning_content": 5, "reasoning": "b"}, "b"),
        ({"reasoning_content": ""}, None),
    ):
        out = translate.chat_response(completion(message), "m", "chat", 0.0)
        assert out["message"].get("thinking") == thinking, message


def test_tool_call_arguments_the_engine_sends():
    def arguments(raw):
        call = {"function": {"name": "f", "arguments": raw}}
        return translate.ollama_tool_calls([call])[0]["function"]["arguments"]

    assert arguments('{"a": [1, 2]}') == {"a": [1, 2]}
    assert arguments({"a": 1}) == {"a": 1}  # already an object (some engines)
    assert arguments("") == arguments("  ") == arguments(None) == {}
    # an engine's tool call whose arguments are no object is its error, not a call without
    # arguments: a number, a list, true, or JSON text of one
    for bad in ("{not json", "[1, 2]", '"text"', "5", 5, [1], True):
        err = refusal(arguments, bad)
        assert err.status == 502
        assert err.message == "the engine sent arguments for tool 'f' that are not JSON"
    named = translate.ollama_tool_calls([{"function": {"arguments": "{}"}}, {}])
    assert named == [
        {"function": {"name": "", "arguments": {}}},
        {"function": {"index": 1, "name": "", "arguments": {}}},
    ]
    three = translate.ollama_tool_calls([{"function": {"name": n}} for n in "abc"])
    assert [c["function"].get("index") for c in three] == [None, 1, 2]
    assert "index" not in three[0]["function"]


def test_load_and_unload():
    out = translate.loaded("m", "chat", "load")
    assert out["created_at"].endswith("Z")
    del out["created_at"]
    assert out == {
        "model": "m",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "load",
    }
    out = translate.loaded("m", "generate", "unload")
    assert (out["response"], out["done_reason"], out["done"]) == ("", "unload", True)
    assert "message" not in out


# -- streams --------------------------------------------------------------------------------


def sse(*events, done: bool = True, space: bool = True) -> list[bytes]:
    lines = [b": keep-alive", b"event: message", b""]
    for event in events:
        raw = event if isinstance(event, bytes) else orjson.dumps(event)
        lines += [b"data: " + raw if space else b"data:" + raw, b""]
    return [*lines, b"data: [DONE]", b""] if done else lines


def run(lines: list[bytes], kind: str = "chat", history=None, started: float = 0.0) -> list[dict]:
    async def source():
        for line in lines:
            yield line

    async def collect():
        stream = OllamaStream("asked-for", kind, started, history)
        return [line async for line in translate.sse_to_ndjson(source(), stream)]

    out = asyncio.run(collect())
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in out)
    return [orjson.loads(line) for line in out]


def delta(finish: str | None = None, index: int | None = 0, **fields) -> dict:
    choice = {"delta": fields, "finish_reason": finish}
    if index is not None:
        choice["index"] = index
    return {"choices": [choice]}


def test_a_streamed_chat_text_thinking_and_the_last_object():
    out = run(
        sse(
            delta(role="assistant", content=""),
            delta(reasoning_content="hm"),
            delta(content="Hel"),
            delta(content="lo"),
            delta(finish="stop"),
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        ),
        started=0.5,
    )
    assert [o["message"] for o in out[:-1]] == [
        {"role": "assistant", "content": "", "thinking": "hm"},
        {"role": "assistant", "content": "Hel"},
        {"role": "assistant", "content": "lo"},
    ]
    assert [o["done"] for o in out] == [False, False, False, True]
    assert all(o["model"] == "asked-for" and o["created_at"].endswith("Z") for o in out)
    last = out[-1]
    del last["created_at"]
    assert last == {
        "model": "asked-for",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 2_000_000_000,
        "load_duration": 0,
        "prompt_eval_count": 3,
        "prompt_eval_duration": 0,
        "eval_count": 2,
        "eval_duration": 0,
    }


def test_a_streamed_generate_with_its_context():
    history = [{"role": "user", "content": "q"}]
    out = run(
        sse(
            delta(reasoning="r"),
            delta(content="an"),
            delta(content="swer", finish="length"),
            delta(),  # a later chunk without finish_reason keeps the one seen
        ),
        kind="generate",
        history=history,
    )
    assert [(o["response"], o.get("thinking")) for o in out[:-1]] == [
        ("", "r"),
        ("an", None),
        ("swer", None),
    ]
    assert "message" not in out[0] and "thinking" not in out[-1]
    assert out[-1]["done_reason"] == "length" and out[-1]["response"] == ""
    assert orjson.loads(bytes(out[-1]["context"])) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "answer"},
    ]
    assert "context" not in run(sse(delta(content="x")))[-1]


def test_the_counters_seen_in_any_event_are_kept():
    out = run(
        sse(
            {"choices": [{"index": 0, "delta": {"content": "a"}}], "usage": {"prompt_tokens": 4}},
            {"choices": [{"index": 0, "delta": {"content": "b"}}], "usage": None},
            {"choices": [], "timings": {"predicted_ms": 1.5}},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": None}], "timings": None},
        )
    )
    assert out[-1]["prompt_eval_count"] == 4
    assert out[-1]["eval_duration"] == 1_500_000
    assert out[-1]["done_reason"] == "stop"


def test_an_event_with_choices_is_openais_whatever_else_it_carries():
    out = run(sse({"choices": [{"index": 0, "delta": {"content": "a"}}], "content": ""}))
    assert [o["message"]["content"] for o in out] == ["a", ""]


def test_only_the_first_choice_and_a_choice_without_index_is_the_first():
    out = run(
        sse(
            {
                "choices": [
                    {"index": 1, "delta": {"content": "other"}, "finish_reason": "length"},
                    {"index": 0, "delta": {"content": "mine"}},
                ]
            },
            delta(index=None, content=" too"),
            delta(index=None, finish="stop"),
        )
    )
    assert [o["message"]["content"] for o in out] == ["mine", " too", ""]
    assert out[-1]["done_reason"] == "stop"


def test_streamed_tool_calls_assembled_by_index_and_sent_whole_before_the_last():
    out = run(
        sse(
            delta(tool_calls=[{"index": 1, "id": "b", "function": {"name": "g", "arguments": ""}}]),
            delta(tool_calls=[{"index": 0, "id": "a", "function": {"name": "f"}}]),
            delta(tool_calls=[{"index": 1, "function": {"arguments": '{"y"'}}]),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '{"x": 1}'}}]),
            delta(tool_calls=[{"index": 1, "function": {"arguments": ": 2}"}}]),
            delta(finish="tool_calls"),
        )
    )
    assert len(out) == 2  # no text: the calls, then the last object
    assert out[0]["done"] is False
    assert out[0]["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "f", "arguments": {"x": 1}}},
            {"function": {"index": 1, "name": "g", "arguments": {"y": 2}}},
        ],
    }
    assert "tool_calls" not in out[1]["message"] and out[1]["done_reason"] == "stop"
    assert all("tool_calls" not in o["message"] for o in run(sse(delta(content="x"))))


def test_tool_calls_without_index_and_whole_arguments():
    out = run(
        sse(
            delta(tool_calls=[{"function": {"name": "f", "arguments": '{"x"'}}]),
            delta(tool_calls=[{"function": {"arguments": ": 1}"}}]),
            delta(tool_calls=[{"id": "2", "function": {"arguments": {"z": 0}}}]),
            delta(tool_calls=[{"function": {"name": "h", "arguments": {"w": 1}}}]),
            delta(tool_calls=[{"function": {"arguments": {"w": 2}}}]),  # replaces, whole
        )
    )
    assert [c["function"] for c in out[0]["message"]["tool_calls"]] == [
        {"name": "f", "arguments": {"x": 1}},
        {"index": 1, "name": "", "arguments": {"z": 0}},
        {"index": 2, "name": "h", "arguments": {"w": 2}},
    ]
    # a first fragment that names nothing still starts a call
    out = run(sse(delta(tool_calls=[{"function": {"arguments": "{}"}}])))
    assert out[0]["message"]["tool_calls"] == [{"function": {"name": "", "arguments": {}}}]


def test_calls_without_index_are_numbered_from_0_as_openais_indexes():
    """A call started without an index is call 0, so later parts with index 0 continue it
    (whether its first part named the call or not)."""
    for first in ({"id": "a", "function": {"name": "f"}}, {"function": {"arguments": '{"x"'}}):
        out = run(
            sse(
                delta(tool_calls=[first]),
                delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": ""}}]),
                delta(
                    tool_calls=[{"index": 0, "function": {"arguments": '{"x"' * ("id" in first)}}]
                ),
                delta(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}]),
            )
        )
        assert out[0]["message"]["tool_calls"] == [
            {"function": {"name": "f", "arguments": {"x": 1}}}
        ]


def test_streamed_tool_arguments_that_are_not_json_are_an_error_line():
    out = run(sse(delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "{"}}])))
    assert out == [{"error": "the engine sent arguments for tool 'f' that are not JSON"}]


def test_llama_cpp_native_stream():
    out = run(
        sse(
            {"content": "mid", "stop": False},
            {"content": "", "stop": False},
            {"content": "dle", "stop": False},
            {"content": "", "stop": True, "stop_type": "limit", "timings": {"predicted_n": 2}},
        ),
        kind="generate",
    )
    assert [o["response"] for o in out] == ["mid", "dle", ""]
    assert out[-1]["done_reason"] == "length" and out[-1]["eval_count"] == 2
    # a stop event without stop_type keeps what came before; one that is not the end is not
    out = run(sse({"content": "a", "stop": False, "stop_type": "limit"}, {"content": "b"}))
    assert out[-1]["done_reason"] == "stop"
    out = run(
        sse({"content": "a", "stop": True, "stop_type": "limit"}, {"content": "", "stop": True})
    )
    assert out[-1]["done_reason"] == "length"


def test_sse_without_a_space_comments_and_nothing_after_done():
    out = run(sse(delta(content="a"), delta(content="b"), space=False))
    assert [o["message"]["content"] for o in out] == ["a", "b", ""]
    late = [*sse(delta(content="a")), b"data: " + orjson.dumps(delta(content="late")), b""]
    out = run(late)
    assert [o["message"]["content"] for o in out] == ["a", ""] and out[-1]["done"] is True
    # an engine that ends without [DONE] still gets its last object
    out = run(sse(delta(content="a"), done=False))
    assert out[-1]["done"] is True and out[-1]["done_reason"] == "stop"


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (b"{not json", "the engine sent a malformed stream event"),
        (b"[1, 2]", "the engine sent a malformed stream event"),
        (b'"text"', "the engine sent a malformed stream event"),
        (orjson.dumps({"error": {"message": "engine fell over"}}), "engine fell over"),
        (orjson.dumps({"error": "plain words"}), "plain words"),
    ],
)
def test_a_broken_or_error_event_ends_the_stream_with_an_error_line(event, error):
    out = run(sse(delta(content="partial"), event, delta(content="never")))
    assert out == [
        {
            "model": "asked-for",
            "created_at": out[0]["created_at"],
            "message": {"role": "assistant", "content": "partial"},
            "done": False,
        },
        {"error": error},
    ]


def test_feed_raises_the_engines_error():
    err = refusal(OllamaStream("m", "chat", 0.0).feed, {"error": {"message": "overloaded"}})
    assert (err.status, err.message) == (502, "overloaded")


# -- listings and embeddings ----------------------------------------------------------------


def test_tags_and_ps_list_every_model():
    models = {
        "object": "list",
        "data": [
            {"id": "qwen3", "created": 1_700_000_000, "meta": {"size": 1234}},
            {"id": "other", "created": 0},
        ],
    }
    tags = translate.tags_response(models)["models"]
    assert [m["name"] for m in tags] == [m["model"] for m in tags] == ["qwen3", "other"]
    assert tags[0]["modified_at"] == "2023-11-14T22:13:20Z"
    assert tags[1]["modified_at"].startswith("20") and tags[1]["modified_at"] > "2025"
    assert (tags[0]["size"], tags[1]["size"], tags[0]["digest"]) == (1234, 0, "")
    assert tags[0]["details"] == {
        "parent_model": "",
        "format": "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }
    ps = translate.ps_response(models)["models"]
    assert [m["name"] for m in ps] == ["qwen3", "other"]
    assert all(m["expires_at"] == "0001-01-01T00:00:00Z" and m["size_vram"] == 0 for m in ps)
    assert {k: v for k, v in ps[0].items() if k not in ("expires_at", "size_vram")} == tags[0]
    assert translate.tags_response({}) == translate.ps_response({"data": None}) == {"models": []}


def test_model_times():
    for created, when in ((1, "1970-01-01T00:00:01Z"), (1.5, "1970-01-01T00:00:01.500000Z")):
        assert translate.model_entry({"id": "m", "created": created})["modified_at"] == when
    for created in (0, -5, None, "yesterday"):
        assert translate.model_entry({"id": "m", "created": created})["modified_at"] > "2025"


def test_details_name_the_family():
    assert translate.details("llama.cpp", "gguf", "3.2B") == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama.cpp",
        "families": ["llama.cpp"],
        "parameter_size": "3.2B",
        "quantization_level": "",
    }


@pytest.mark.parametrize(
    ("count", "shown"),
    [(494_032_768, "494.03M"), (3_200_000_000, "3.2B"), (1_000_000_000, "1B"),
     (1_999_999_999, "1.99B"), (999_999, "999.99K"), (1_000, "1K"), (1_000_000, "1M"), (999, "999"),
     (7.5e9, "7.5B"), (1, "1"), (0, ""), (-1, ""), (None, ""), ("3B", "")],
)  # fmt: skip
def test_parameter_size_as_ollama_shows_it(count, shown):
    assert translate.parameter_size(count) == shown


def test_embeddings_in_input_order_cut_and_normalized():
    data = {
        "data": [
            {"index": 1, "embedding": [0.0, 3.0, 4.0, 12.0]},
            {"index": 0, "embedding": [3.0, 4.0, 1.0, 1.0]},
        ],
        "usage": {"prompt_tokens": 6},
    }
    out = translate.embed_response(data, "asked-for", 0.5)
    assert out == {
        "model": "asked-for",
        "embeddings": [[3.0, 4.0, 1.0, 1.0], [0.0, 3.0, 4.0, 12.0]],
        "total_duration": 2_000_000_000,
        "load_duration": 0,
        "prompt_eval_count": 6,
    }
    cut = translate.embed_response(data, "m", 0.0, dimensions=2)["embeddings"]
    assert cut == [[0.6, 0.8], [0.0, 1.0]]
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0) for v in cut)
    # as long as the vector, or longer, or 0: not cut, not normalized
    for dimensions in (4, 5, 0, None):
        same = translate.embed_response(data, "m", 0.0, dimensions=dimensions)["embeddings"]
        assert same == [[3.0, 4.0, 1.0, 1.0], [0.0, 3.0, 4.0, 12.0]]
    zero = {"data": [{"index": 0, "embedding": [0.0, 0.0, 5.0]}]}
    assert translate.embed_response(zero, "m", 0.0, dimensions=2)["embeddings"] == [[0.0, 0.0]]
    assert translate.embed_response({}, "m", 0.0) == {
        "model": "m",
        "embeddings": [],
        "total_duration": 2_500_000_000,
        "load_duration": 0,
        "prompt_eval_count": 0,
    }

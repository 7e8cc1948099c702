"""ollama_api.py in process: which engine calls an Ollama request makes, with what body, and
what the client gets back (status, shape, engine errors), against a scripted engine.

test_agent_ollama_translation.py shows the same with the real `ollama` client and engine
doubles over HTTP; these are fast enough to run for every mutant in `make mutation`.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import orjson
import pytest
from cube_agent import ollama_api
from cube_agent.errors import AgentError

MODELS = {
    "object": "list",
    "data": [{"id": "qwen3", "created": 1, "meta": {"n_params": 3_000_000_000}}],
}
PROPS = {
    "default_generation_settings": {"n_ctx": 4096},
    "chat_template": "{% if tools %}...{% endif %}<think>",
    "modalities": {"vision": True},
}
ANSWER = {"choices": [{"index": 0, "message": {"content": "hi there"}, "finish_reason": "stop"}]}


class Answer:
    """An aiohttp response as ollama_api reads it: status, a bounded read, close()."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        self.closed = False
        self.asked: int | None = None
        outer = self

        class Content:
            async def read(self, n: int = -1) -> bytes:
                outer.asked = n
                return outer.body[:n] if n >= 0 else outer.body

            def __aiter__(self):
                return (line async for line in _lines(outer.body))

        self.content = Content()

    def close(self) -> None:
        self.closed = True


async def _lines(body: bytes):
    for line in body.splitlines(keepends=True):
        yield line


class Scripted:
    """A proxy whose engine answers each (method, path) as scripted, recording requests."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, object]]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, dict | None]] = []

    async def _send(self, upstream, method, path, headers, body):
        assert headers["content-type"] == "application/json"
        assert headers["x-request-id"] == "rid-1"
        assert (body is None) == (method == "GET"), (method, body)  # a GET carries no body
        self.sent.append((method, path, orjson.loads(body) if body is not None else None))
        status, answer = self.answers.get((method, path), (404, {"error": "no such path"}))
        if isinstance(answer, AgentError):
            raise answer  # the engine did not answer (upstream.py's errors)
        raw = answer if isinstance(answer, bytes) else orjson.dumps(answer)
        return Answer(status, raw)

    async def _read_whole(self, resp, upstream) -> bytes:
        return resp.body

    def _relay(self, resp, ndjson, path, upstream):
        assert path == "/api/chat-or-generate"
        return ndjson


def call(method: str = "POST") -> SimpleNamespace:
    return SimpleNamespace(method=method, request_id=b"rid-1", scope_path="/api/chat-or-generate")


def serve(proxy: Scripted, name: str, body: object = None, method: str = "POST"):
    raw = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
    return asyncio.run(ollama_api.serve(proxy, call(method), SimpleNamespace(url="e"), name, raw))


def answer(proxy: Scripted, name: str, body: object = None, method: str = "POST") -> object:
    response = serve(proxy, name, body, method)
    assert response.status_code == 200
    if response.media_type == "application/x-ndjson":

        async def collect():
            return [orjson.loads(line) async for line in response.body_iterator]

        return asyncio.run(collect())
    assert response.media_type == "application/json"
    return orjson.loads(response.body)


def refused(proxy: Scripted, name: str, body: object = None, method: str = "POST") -> AgentError:
    with pytest.raises(AgentError) as caught:
        serve(proxy, name, body, method)
    return caught.value


def engine(extra: dict | None = None) -> Scripted:
    """llama.cpp's server: /v1/models, /props, chat."""
    return Scripted(
        {
            ("GET", "/v1/models"): (200, MODELS),
            ("GET", "/props"): (200, PROPS),
            ("POST", "/v1/chat/completions"): (200, ANSWER),
            **(extra or {}),
        }
    )


def vllm(extra: dict | None = None) -> Scripted:
    return Scripted(
        {
            ("GET", "/v1/models"): (200, {"data": [{"id": "qwen3", "max_model_len": 2048}]}),
            ("GET", "/props"): (404, {"detail": "Not Found"}),
            ("GET", "/version"): (200, {"version": "0.10.2"}),
            **(extra or {}),
        }
    )


USER = [{"role": "user", "content": "hi"}]


def test_chat_is_sent_translated_and_answered_in_ollamas_shape():
    p = engine()
    out = answer(p, "chat", {"model": "qwen3", "messages": USER, "stream": False})
    assert p.sent == [
        ("POST", "/v1/chat/completions", {"model": "qwen3", "stream": False, "messages": USER})
    ]
    assert out["message"] == {"role": "assistant", "content": "hi there"}
    assert (out["model"], out["done"], out["done_reason"]) == ("qwen3", True, "stop")


def test_a_stream_is_ndjson_ending_done():
    sse = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    p = engine({("POST", "/v1/chat/completions"): (200, sse)})
    out = answer(p, "chat", {"model": "qwen3", "messages": USER})
    assert p.sent[0][2]["stream"] is True
    assert [o["message"]["content"] for o in out] == ["a", ""]
    assert out[-1]["done"] is True and out[-1]["done_reason"] == "length"
    # generate's stream carries the context to continue
    p = engine({("POST", "/v1/chat/completions"): (200, sse)})
    out = answer(p, "generate", {"model": "qwen3", "prompt": "q"})
    assert orjson.loads(bytes(out[-1]["context"])) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


def test_generate_whole_with_context_and_raw_without():
    p = engine()
    out = answer(p, "generate", {"model": "qwen3", "prompt": "q", "stream": False})
    assert out["response"] == "hi there" and out["done_reason"] == "stop"
    assert orjson.loads(bytes(out["context"])) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "hi there"},
    ]
    text = {"choices": [{"index": 0, "text": "raw answer", "finish_reason": "stop"}]}
    p = engine({("POST", "/v1/completions"): (200, text)})
    out = answer(
        p, "generate", {"model": "qwen3", "prompt": "[INST]", "raw": True, "stream": False}
    )
    assert p.sent == [
        ("POST", "/v1/completions", {"model": "qwen3", "stream": False, "prompt": "[INST]"})
    ]
    assert out["response"] == "raw answer" and "context" not in out


@pytest.mark.parametrize(
    ("name", "body", "status", "message"),
    [
        ("chat", {"messages": USER}, 400, "model is required"),
        ("generate", {"prompt": "x"}, 404, "model '' not found"),
        ("embed", {"input": "x"}, 400, "model is required"),
        ("embeddings", {"prompt": "x"}, 400, "model is required"),
        ("show", {}, 400, "model is required"),
        ("generate", {"model": "m", "prompt": "x", "raw": True, "system": "s"}, 400, "raw mode"),
        ("generate", {"model": "m", "prompt": "x", "raw": True, "template": "t"}, 400, "raw mode"),
        ("generate", {"model": "m", "prompt": "x", "raw": True, "context": [1]}, 400, "raw mode"),
        ("generate", {"model": "m", "prompt": "x", "template": "{{ .Prompt }}"}, 400, "template"),
        ("chat", {"model": "m", "messages": 5}, 400, "invalid request: messages"),
        ("chat", b"", 400, "missing request body"),
    ],
)
def test_refused_before_the_engine(name, body, status, message):
    p = engine()
    err = refused(p, name, body)
    assert err.status == status and message in err.message
    assert p.sent == []


def test_the_method_of_each_endpoint():
    for name in ("chat", "generate", "embed", "embeddings", "show"):
        err = refused(engine(), name, {}, method="GET")
        assert (err.status, err.code) == (405, "method_not_allowed")
        assert err.message == f"/api/{name} takes POST"
    for name in ("tags", "ps", "version"):
        assert refused(engine(), name, method="POST").message == f"/api/{name} takes GET or HEAD"
        assert serve(engine(), name, method="HEAD").status_code == 200
    assert answer(engine(), "version", method="GET") == {"version": "0.12.3"}


def test_tags_and_ps_from_the_models_list():
    tags = answer(engine(), "tags", method="GET")
    assert [m["name"] for m in tags["models"]] == ["qwen3"]
    ps = answer(engine(), "ps", method="GET")
    assert ps["models"][0]["expires_at"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize("name", ["chat", "generate"])
def test_load_and_unload_answer_without_generating(name):
    empty = {"messages": []} if name == "chat" else {"prompt": ""}
    for keep_alive, reason in ((None, "load"), (0, "unload"), ("0s", "unload"), ("5m", "load"),
                               (-1, "load"), (0.4, "unload"), (1, "load")):  # fmt: skip
        p = engine()
        body = {"model": "qwen3", **empty}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        out = answer(p, name, body)
        assert (out["done"], out["done_reason"]) == (True, reason), keep_alive
        assert all(path != "/v1/chat/completions" for _, path, _ in p.sent)
    # a model the engine would refuse is 404, as Ollama's load
    err = refused(vllm(), name, {"model": "other", **empty})
    assert (err.status, err.code) == (404, "model_not_found")
    assert err.message == "model 'other' not found"


def test_engine_errors_keep_the_engines_status_and_message():
    for status, body, message in (
        (
            500,
            {"error": {"message": "image input is not supported"}},
            "image input is not supported",
        ),
        (400, {"message": "vLLM words", "object": "error"}, "vLLM words"),
        (503, {"error": "ollama words"}, "ollama words"),
        (502, b"plain text", "plain text"),
        (429, b"", "engine answered 429"),
        (500, b"[1, 2]", "[1, 2]"),
        (500, {"error": {"code": 5}}, '{"error":{"code":5}}'),
    ):
        p = engine({("POST", "/v1/chat/completions"): (status, body)})
        for stream in (False, True):
            err = refused(p, "chat", {"model": "qwen3", "messages": USER, "stream": stream})
            assert (err.status, err.message) == (status, message)


def test_an_engine_error_is_read_only_up_to_its_bound():
    big = Answer(500, b"x" * (ollama_api.MAX_ERROR_BYTES + 10))
    with pytest.raises(AgentError) as caught:
        asyncio.run(ollama_api.raise_engine_error(big))
    assert big.asked == 64 * 1024 and big.closed
    assert caught.value.message == "x" * 64 * 1024


def test_an_error_in_a_200_or_a_body_that_is_not_an_object():
    for body, status, message in (
        ({"error": {"message": "not an embedding model", "code": 400}}, 400, "not an embedding"),
        ({"error": {"message": "m", "code": 399}}, 502, "m"),
        ({"error": {"message": "m", "code": 600}}, 502, "m"),
        ({"error": {"message": "m", "code": 599}}, 599, "m"),
        ({"error": {"message": "m", "code": "400"}}, 502, "m"),
        ({"error": "flat"}, 502, "flat"),
        ({"error": {"code": 404}}, 404, "engine answered 404"),
        (b"{not json", 502, "the engine sent a non-JSON answer"),
        (b"[1]", 502, "the engine sent an unexpected answer"),
    ):
        p = engine({("POST", "/v1/chat/completions"): (200, body)})
        err = refused(p, "chat", {"model": "qwen3", "messages": USER, "stream": False})
        assert (err.status, err.message[: len(message)]) == (status, message), body
    p = engine({("POST", "/v1/chat/completions"): (200, {"error": None, **ANSWER})})
    out = answer(p, "chat", {"model": "qwen3", "messages": USER, "stream": False})
    assert out["message"]["content"] == "hi there"


def test_embed_and_the_legacy_embeddings():
    vectors = {"data": [{"index": 0, "embedding": [3.0, 4.0, 0.0]}], "usage": {"prompt_tokens": 2}}
    p = engine({("POST", "/v1/embeddings"): (200, vectors)})
    out = answer(p, "embed", {"model": "e", "input": ["a"], "dimensions": 2})
    assert p.sent == [("POST", "/v1/embeddings", {"model": "e", "input": ["a"]})]
    assert out["embeddings"] == [[0.6, 0.8]] and out["model"] == "e"
    assert out["prompt_eval_count"] == 2
    out = answer(p, "embeddings", {"model": "e", "prompt": "a"})
    assert p.sent[-1] == ("POST", "/v1/embeddings", {"model": "e", "input": "a"})
    assert out == {"embedding": [3.0, 4.0, 0.0]}
    p = engine({("POST", "/v1/embeddings"): (200, {"data": []})})
    assert answer(p, "embeddings", {"model": "e", "prompt": "a"}) == {"embedding": []}
    # nothing to embed: answered at once, as Ollama
    for body, empty in (
        ({"model": "e", "input": []}, {"model": "e", "embeddings": []}),
        ({"model": "e", "input": ""}, {"model": "e", "embeddings": []}),
        ({"model": "e"}, {"model": "e", "embeddings": []}),
    ):
        p = engine()
        assert answer(p, "embed", body) == empty and p.sent == []
    p = engine()
    assert answer(p, "embeddings", {"model": "e", "prompt": ""}) == {"embedding": []}
    assert p.sent == []


@pytest.mark.parametrize("flavour", ["llama.cpp", "vllm"])
def test_suffix_goes_to_the_engines_fill_in_the_middle(flavour):
    middle = {"content": "middle", "stop_type": "eos"}
    text = {"choices": [{"index": 0, "text": "middle", "finish_reason": "length"}]}
    p = (
        engine({("POST", "/infill"): (200, middle)})
        if flavour == "llama.cpp"
        else vllm({("POST", "/v1/completions"): (200, text)})
    )
    body = {"model": "qwen3", "prompt": "def f(", "suffix": "x", "stream": False}
    out = answer(p, "generate", body)
    assert out["response"] == "middle" and out["model"] == "qwen3" and "context" not in out
    method, path, sent = p.sent[-1]
    assert method == "POST"
    if flavour == "llama.cpp":
        assert path == "/infill" and sent["input_suffix"] == "x" and out["done_reason"] == "stop"
    else:
        assert path == "/v1/completions" and sent["suffix"] == "x"
        assert out["done_reason"] == "length"


def test_suffix_on_another_engine_is_501():
    for version in ((404, {"detail": "Not Found"}), (200, {"name": "other"})):
        p = Scripted({("GET", "/props"): (404, {}), ("GET", "/version"): version})
        err = refused(p, "generate", {"model": "m", "prompt": "def f(", "suffix": "x"})
        assert (err.status, err.code) == (501, "not_implemented")


def test_the_flavour_is_what_the_engine_answers():
    def flavour(p: Scripted) -> str:
        e = ollama_api.Engine(p, SimpleNamespace(url="e"), "rid-1")
        return asyncio.run(e.flavour())

    assert flavour(engine()) == "llama.cpp"
    assert flavour(vllm()) == "vllm"
    # /props answering without llama.cpp's settings is not llama.cpp
    odd = vllm({("GET", "/props"): (200, {"default_generation_settings": "x"})})
    assert flavour(odd) == "vllm"
    assert flavour(Scripted({("GET", "/version"): (200, {"v": 1})})) == "openai"
    # an engine that does not answer at all is that error, not a guess
    down = ollama_api.Engine(SimpleNamespace(), SimpleNamespace(url="e"), "rid-1")

    async def unreachable(*args):
        raise AgentError(502, "no engine", "upstream_unreachable")

    down.proxy._send = unreachable
    with pytest.raises(AgentError) as caught:
        asyncio.run(down.flavour())
    assert caught.value.code == "upstream_unreachable"
    with pytest.raises(AgentError):
        asyncio.run(down.props())
    # /props answered (not llama.cpp), then /version timed out: still that error
    late = Scripted(
        {
            ("GET", "/props"): (404, {}),
            ("GET", "/version"): (0, AgentError(504, "engine timed out", "upstream_timeout")),
        }
    )
    err = refused(late, "generate", {"model": "m", "prompt": "def f(", "suffix": "x"})
    assert (err.status, err.code) == (504, "upstream_timeout")


def test_an_engine_error_that_cannot_be_read_still_has_its_status():
    for failure in (aiohttp.ClientPayloadError("cut"), TimeoutError()):
        broken = Answer(503, b"")

        async def read(n: int = -1, failure=failure) -> bytes:
            raise failure

        broken.content.read = read
        with pytest.raises(AgentError) as caught:
            asyncio.run(ollama_api.raise_engine_error(broken))
        assert (caught.value.status, caught.value.message) == (503, "engine answered 503")
        assert broken.closed


def test_show_on_llama_cpp_for_any_name():
    for name in ("qwen3", "any-name"):
        p = engine()
        shown = answer(p, "show", {"model": name})
        assert shown["capabilities"] == ["completion", "tools", "vision", "thinking"]
        assert shown["model_info"] == {
            "general.architecture": "llama.cpp",
            "llama.cpp.context_length": 4096,
            "general.parameter_count": 3_000_000_000,
        }
        assert shown["template"] == PROPS["chat_template"]
        assert shown["details"]["family"] == "llama.cpp" and shown["details"]["format"] == "gguf"
        assert shown["details"]["parameter_size"] == "3B"
        assert shown["modelfile"].endswith("FROM qwen3\n")
    assert answer(engine(), "show", {"name": "old-field"})["modelfile"].endswith("FROM qwen3\n")


def test_show_reads_what_the_engine_tells():
    def shown(model: dict, props: dict | None) -> dict:
        return ollama_api.show_response({"model": model, "props": props})

    meta = {"id": "m", "meta": {"n_params": 494_032_768, "n_embd": 896}}
    out = shown(meta, {"default_generation_settings": {"n_ctx": 0}, "chat_template": ""})
    assert out["capabilities"] == ["completion"]
    assert out["model_info"] == {
        "general.architecture": "llama.cpp",
        "llama.cpp.embedding_length": 896,
        "general.parameter_count": 494_032_768,
    }
    assert out["details"]["parameter_size"] == "494.03M"
    caps = {"chat_template": "tools", "chat_template_caps": {"supports_tools": False}}
    assert shown(meta, caps)["capabilities"] == ["completion"]  # the caps decide
    caps = {"chat_template": "", "chat_template_caps": {"supports_tools": True}}
    assert shown(meta, caps)["capabilities"] == ["completion", "tools"]
    assert shown(meta, {"chat_template": "{{ enable_thinking }}"})["capabilities"] == [
        "completion",
        "thinking",
    ]
    assert shown(meta, {"modalities": {"vision": False}})["capabilities"] == ["completion"]
    out = shown({"id": "v", "max_model_len": 2048}, None)
    assert out["capabilities"] == ["completion"] and out["template"] == ""
    assert out["model_info"] == {"general.architecture": "openai", "openai.context_length": 2048}
    assert out["details"]["family"] == "openai" and out["details"]["format"] == ""
    assert shown({"id": "v", "max_model_len": 1}, None)["model_info"]["openai.context_length"] == 1
    assert shown({"id": "v", "max_model_len": -1}, None)["model_info"] == {
        "general.architecture": "openai"
    }
    assert shown({"id": "v", "max_model_len": "4096"}, None)["model_info"] == {
        "general.architecture": "openai"
    }


def test_show_of_a_name_vllm_does_not_serve_is_404():
    err = refused(vllm(), "show", {"model": "other"})
    assert (err.status, err.code, err.message) == (
        404,
        "model_not_found",
        "model 'other' not found",
    )
    assert answer(vllm(), "show", {"model": "qwen3"})["model_info"]["openai.context_length"] == 2048
    # llama.cpp with an empty list still serves its model under the name asked for
    p = Scripted({("GET", "/v1/models"): (200, {"data": []}), ("GET", "/props"): (200, PROPS)})
    assert answer(p, "show", {"model": "x"})["modelfile"].endswith("FROM x\n")
    # ... and under another name, as the first model it lists (entries not objects skipped)
    listed = {"data": ["junk", {"id": "first"}, {"id": "second"}]}
    p = Scripted({("GET", "/v1/models"): (200, listed), ("GET", "/props"): (200, PROPS)})
    assert answer(p, "show", {"model": "x"})["modelfile"].endswith("FROM first\n")
    assert answer(p, "show", {"model": "second"})["modelfile"].endswith("FROM second\n")

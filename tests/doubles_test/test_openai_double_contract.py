"""The vLLM double's contract: the same requests to vLLM 0.10.2's real server (the CPU
build with a tiny model, support/vllm.py) and to tests/doubles/openai_double.py give the
same status codes, content types, SSE framing and JSON shapes (keys and value types, never
the values: the double echoes, the real model writes gibberish).

Every test that uses the double relies on this; a difference found here is fixed in the
double, not allowed for here."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from support.engines import start_openai_double
from support.vllm import MODEL_NAME

pytestmark = pytest.mark.slow

CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 3}
COMPLETION = {"model": MODEL_NAME, "prompt": "a b c", "max_tokens": 3}
USAGE = {"stream": True, "stream_options": {"include_usage": True}}
JSON = {"content-type": "application/json"}

# name -> (method, path, body: dict for JSON, bytes as they are, None for none, headers)
REQUESTS = {
    "health": ("GET", "/health", None, {}),
    "version": ("GET", "/version", None, {}),
    "models": ("GET", "/v1/models", None, {}),
    "unknown path": ("GET", "/v1/nope", None, {}),
    "chat": ("POST", "/v1/chat/completions", CHAT, {}),
    "chat stream": ("POST", "/v1/chat/completions", {**CHAT, "stream": True}, {}),
    "chat stream with usage": ("POST", "/v1/chat/completions", {**CHAT, **USAGE}, {}),
    "completion": ("POST", "/v1/completions", COMPLETION, {}),
    "completion stream": ("POST", "/v1/completions", {**COMPLETION, "stream": True}, {}),
    "completion stream with usage": ("POST", "/v1/completions", {**COMPLETION, **USAGE}, {}),
    "unknown model": ("POST", "/v1/chat/completions", {**CHAT, "model": "nope"}, {}),
    "unknown model, streamed": (
        "POST", "/v1/chat/completions", {**CHAT, "model": "nope", "stream": True}, {}),
    "malformed JSON": ("POST", "/v1/chat/completions", b'{"model": ', JSON),
    "no messages": ("POST", "/v1/chat/completions", {"model": MODEL_NAME}, {}),
    "not an object": ("POST", "/v1/chat/completions", b"[1]", JSON),
    "not JSON's content type": (
        "POST", "/v1/chat/completions", json.dumps(CHAT).encode(), {"content-type": "text/plain"}),
    "max_tokens beyond the context": (
        "POST", "/v1/chat/completions", {**CHAT, "max_tokens": 100_000}, {}),
    "embeddings from a generative model": (
        "POST", "/v1/embeddings", {"model": MODEL_NAME, "input": "a b"}, {}),
}  # fmt: skip


def shape(value):
    """Keys and value types, recursively; a list by its first element."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def event_kind(event: dict) -> str:
    """What an SSE chunk is for: chunks of one kind must have one shape."""
    if not event["choices"]:
        return "usage"
    choice = event["choices"][0]
    if choice.get("finish_reason"):
        return "finish"
    if "role" in choice.get("delta", {}):
        return "role"
    return "first" if choice.get("prompt_token_ids") else "text"


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n"), "an SSE stream ends with a blank line"
    return text[:-2].split("\n\n")


def describe(resp: httpx.Response) -> dict:
    """Everything the contract compares about one answer."""
    content_type = resp.headers.get("content-type")
    out: dict = {"status": resp.status_code, "content-type": content_type}
    if content_type is None or not resp.content:
        out["body"] = resp.content
    elif content_type.startswith("text/event-stream"):
        events = sse_events(resp.text)
        assert all(e.startswith("data: ") and "\n" not in e for e in events), events
        assert events[-1] == "data: [DONE]"
        parsed = [json.loads(e[6:]) for e in events[:-1]]
        kinds: dict[str, set[str]] = {}
        for e in parsed:
            kinds.setdefault(event_kind(e), set()).add(json.dumps(shape(e), sort_keys=True))
        out["events"] = kinds
        out["last"] = event_kind(parsed[-1])
    elif content_type.startswith("application/json"):
        out["json"] = shape(resp.json())
    else:
        out["text"] = resp.text
    return out


@pytest.fixture(scope="module")
def engines(vllm_server) -> Iterator[dict]:
    double = start_openai_double("--max-model-len", "512", model=MODEL_NAME)
    try:
        yield {"real": vllm_server, "double": double}
    finally:
        double.stop()


def ask(engine, name: str) -> httpx.Response:
    method, path, body, headers = REQUESTS[name]
    kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
    return httpx.request(method, engine.url + path, headers=headers, timeout=60, **kwargs)


@pytest.mark.parametrize("name", REQUESTS)
def test_the_double_answers_as_vllm_does(engines, name):
    real = describe(ask(engines["real"], name))
    double = describe(ask(engines["double"], name))
    assert double == real


def test_the_contract_sees_a_difference():
    """The comparison is not blind: a missing key, a type, a framing or a status differ."""
    a = httpx.Response(200, json={"id": "x", "n": 1})
    assert describe(a) != describe(httpx.Response(200, json={"id": "x"}))
    assert describe(a) != describe(httpx.Response(200, json={"id": "x", "n": "1"}))
    assert describe(a) != describe(httpx.Response(400, json={"id": "x", "n": 1}))
    sse = {"content-type": "text/event-stream"}
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    good = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
    assert describe(httpx.Response(200, headers=sse, text=good))["last"] == "text"
    with pytest.raises(AssertionError):
        describe(httpx.Response(200, headers=sse, text=good.replace("\n\ndata: [DONE]", "")))

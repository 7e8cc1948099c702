"""Ollama's native API on top of an OpenAI-compatible engine (vLLM, llama.cpp's server).

Ollama clients keep working when the engine is not Ollama: `/api/chat` and `/api/generate`
become `/v1/chat/completions` (SSE streams become Ollama's NDJSON, one object per delta
and a last object with `done: true`, `done_reason` and the counters), `/api/embed` becomes
`/v1/embeddings`, and `/api/tags`, `/api/ps`, `/api/show` are answered from `/v1/models`.
`/api/generate` with `raw: true` uses `/v1/completions` (no chat template, as in Ollama).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson

# Ollama `options` that OpenAI-compatible servers take under another (or the same) name;
# top_k, min_p and repeat_penalty are extensions both vLLM and llama.cpp accept.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "num_predict": "max_tokens",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "repeat_penalty": "repeat_penalty",
}


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def wants_stream(body: dict[str, Any]) -> bool:
    """Ollama streams unless told not to."""
    return body.get("stream", True) is not False


def _common(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": body.get("model", ""), "stream": stream}
    options = body.get("options") or {}
    for name, openai_name in _OPTIONS.items():
        if name in options and options[name] is not None:
            out[openai_name] = options[name]
    if options.get("num_predict") == -1:
        out.pop("max_tokens")
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "format", "schema": fmt},
        }
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def chat_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    out = _common(body, wants_stream(body))
    messages = []
    for m in body.get("messages") or []:
        msg = {"role": m.get("role", "user"), "content": m.get("content", "")}
        for extra in ("tool_calls", "tool_call_id", "name"):
            if extra in m:
                msg[extra] = m[extra]
        messages.append(msg)
    out["messages"] = messages
    if body.get("tools"):
        out["tools"] = body["tools"]
    return "/v1/chat/completions", out


def generate_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    out = _common(body, wants_stream(body))
    if body.get("raw"):
        out["prompt"] = body.get("prompt", "")
        return "/v1/completions", out
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    messages.append({"role": "user", "content": body.get("prompt", "")})
    out["messages"] = messages
    return "/v1/chat/completions", out


def embed_request(body: dict[str, Any]) -> dict[str, Any]:
    return {"model": body.get("model", ""), "input": body.get("input", "")}


def _counters(
    usage: dict[str, Any] | None, timings: dict[str, Any] | None, started: float
) -> dict[str, Any]:
    usage = usage or {}
    timings = timings or {}
    return {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": usage.get("prompt_tokens", 0),
        "prompt_eval_duration": int(timings.get("prompt_ms", 0) * 1e6),
        "eval_count": usage.get("completion_tokens", 0),
        "eval_duration": int(timings.get("predicted_ms", 0) * 1e6),
    }


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def _text(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        return (choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""


def chat_response(data: dict[str, Any], model: str, kind: str, started: float) -> dict[str, Any]:
    """A whole OpenAI completion as Ollama's final (and only) object. `kind` is chat/generate."""
    choice = (data.get("choices") or [{}])[0]
    openai_chat = "message" in choice
    text = _text(choice, openai_chat)
    out: dict[str, Any] = {"model": data.get("model") or model, "created_at": now_iso()}
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        tool_calls = (choice.get("message") or {}).get("tool_calls")
        if tool_calls:
            message["tool_calls"] = [
                {"function": {"name": c["function"]["name"], "arguments": _args(c)}}
                for c in tool_calls
            ]
        out["message"] = message
    else:
        out["response"] = text
    out["done"] = True
    out["done_reason"] = _done_reason(choice.get("finish_reason"))
    out.update(_counters(data.get("usage"), data.get("timings"), started))
    return out


def _args(call: dict[str, Any]) -> Any:
    raw = call.get("function", {}).get("arguments", "{}")
    try:
        return orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        return raw


async def sse_to_ndjson(
    lines: AsyncIterator[bytes], model: str, kind: str, started: float
) -> AsyncIterator[bytes]:
    """Turn an OpenAI SSE stream into Ollama NDJSON, one line out per delta that carries text."""
    finish: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    async for line in lines:
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            # A broken event may have carried text: say so rather than end the answer
            # short with done: true.
            yield orjson.dumps({"error": "the engine sent a malformed stream event"}) + b"\n"
            return
        if "error" in event:
            err = event["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            yield orjson.dumps({"error": message}) + b"\n"
            return
        usage = event.get("usage") or usage
        timings = event.get("timings") or timings
        model = event.get("model") or model
        for choice in event.get("choices") or []:
            finish = choice.get("finish_reason") or finish
            text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
            if text:
                yield _chunk(model, kind, text, done=False)
    last = orjson.loads(_chunk(model, kind, "", done=True))
    last["done_reason"] = _done_reason(finish)
    last.update(_counters(usage, timings, started))
    yield orjson.dumps(last) + b"\n"


def _chunk(model: str, kind: str, text: str, done: bool) -> bytes:
    obj: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if kind == "chat":
        obj["message"] = {"role": "assistant", "content": text}
    else:
        obj["response"] = text
    obj["done"] = done
    return orjson.dumps(obj) + b"\n"


def _iso(created: Any) -> str:
    if isinstance(created, int | float) and created > 0:
        return datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
    return now_iso()


def _model_entry(m: dict[str, Any]) -> dict[str, Any]:
    name = str(m.get("id", ""))
    return {
        "name": name,
        "model": name,
        "modified_at": _iso(m.get("created")),
        "size": 0,
        "digest": "",
        "details": {
            "parent_model": "",
            "format": "",
            "family": "",
            "families": None,
            "parameter_size": "",
            "quantization_level": "",
        },
    }


def tags_response(models: dict[str, Any]) -> dict[str, Any]:
    return {"models": [_model_entry(m) for m in models.get("data") or []]}


def ps_response(models: dict[str, Any]) -> dict[str, Any]:
    # The engine loaded its model at start-up and keeps it: every listed model is running.
    return {
        "models": [
            {**_model_entry(m), "expires_at": "0001-01-01T00:00:00Z", "size_vram": 0}
            for m in models.get("data") or []
        ]
    }


def show_response(models: dict[str, Any], name: str) -> dict[str, Any] | None:
    for m in models.get("data") or []:
        if m.get("id") == name:
            entry = _model_entry(m)
            return {
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": entry["details"],
                "model_info": {},
                "modified_at": entry["modified_at"],
                "capabilities": ["completion"],
            }
    return None


def embed_response(data: dict[str, Any], model: str, started: float) -> dict[str, Any]:
    items = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
    return {
        "model": data.get("model") or model,
        "embeddings": [d.get("embedding") for d in items],
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": (data.get("usage") or {}).get("prompt_tokens", 0),
    }

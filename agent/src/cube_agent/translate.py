"""Ollama's native API as OpenAI-compatible requests and back: pure functions, no I/O.

The requests are the pydantic models of ollama_schema; what they become is in
docs/ollama-translation.md. Answers come back as Ollama's: whole ones from
`chat_response`, streams through `OllamaStream` (OpenAI SSE events in, NDJSON lines out:
text and thinking as they come, tool calls assembled from their fragments and sent whole,
one chunk, before the last object with `done: true`, `done_reason` and the counters).
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson

from .errors import AgentError
from .ollama_schema import ChatRequest, EmbedRequest, GenerateRequest, Message, Options

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
# The reasoning text of a delta or message: llama.cpp and vLLM 0.10 say reasoning_content,
# later vLLM (and Ollama's own /v1) reasoning.
_REASONING = ("reasoning_content", "reasoning")
# Magic numbers of the image formats vision models take, for the data URL's media type.
_IMAGE_TYPES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# -- requests -------------------------------------------------------------------------------


def _sampling(options: Options | None, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"stream": stream}
    if options is not None:
        for name, openai_name in _OPTIONS.items():
            value = getattr(options, name)
            if value is not None:
                out[openai_name] = value
        if options.num_predict is not None and options.num_predict <= 0:
            # -1 (Ollama's default) and 0: until the model stops, as Ollama's runner limits
            # only num_predict > 0; max_tokens 0 would be no answer (vLLM refuses it)
            out.pop("max_tokens")
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def _format(fmt: Any) -> dict[str, Any]:
    if fmt == "json":
        return {"response_format": {"type": "json_object"}}
    if isinstance(fmt, dict):
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "format", "schema": fmt},
            }
        }
    return {}


def _think(think: bool | str | None) -> dict[str, Any]:
    """`think` as the engines take it: the chat template's enable_thinking switch (Qwen3,
    DeepSeek, ... templates read it on llama.cpp and vLLM), and a level as reasoning_effort."""
    if think is None:
        return {}
    out: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": think is not False}}
    if isinstance(think, str):
        out["reasoning_effort"] = think
    return out


def image_url(data: str) -> dict[str, Any]:
    """An Ollama image (base64) as an OpenAI `image_url` content part with a data URL."""
    try:
        head = base64.b64decode(data[:24] + "=" * (-len(data[:24]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise AgentError(
            400, "invalid image data: images must be base64", "invalid_image"
        ) from None
    kind = next((t for magic, t in _IMAGE_TYPES if head.startswith(magic)), "image/jpeg")
    return {"type": "image_url", "image_url": {"url": f"data:{kind};base64,{data}"}}


def _content(text: str, images: list[str] | None) -> str | list[dict[str, Any]]:
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return parts + [image_url(i) for i in images]


def _arguments(arguments: dict[str, Any] | str | None) -> str:
    if isinstance(arguments, str):
        return arguments or "{}"
    return orjson.dumps(arguments or {}).decode()


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Ollama's history as OpenAI's. Tool calls get an id (Ollama's have none) and the
    OpenAI form `{id, type: "function", function: {name, arguments: "<JSON>"}}`; each tool
    result gets the `tool_call_id` of the call it answers: the client's if it sent one, else
    the oldest unanswered call of its `tool_name`, else the oldest unanswered call."""
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not answered yet
    for n, m in enumerate(messages):
        msg: dict[str, Any] = {"role": m.role, "content": _content(m.content or "", m.images)}
        if m.tool_calls:
            calls = []
            for i, call in enumerate(m.tool_calls):
                call_id = call.id or f"call_{n}_{i}"
                pending.append((call_id, call.function.name))
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": _arguments(call.function.arguments),
                        },
                    }
                )
            msg["tool_calls"] = calls
        if m.role == "tool":
            call_id = m.tool_call_id
            if call_id is None and pending:
                match = next((p for p in pending if p[1] == m.tool_name), pending[0])
                call_id = match[0]
            pending = [p for p in pending if p[0] != call_id]
            if call_id is not None:
                msg["tool_call_id"] = call_id
        out.append(msg)
    return out


def chat_request(req: ChatRequest) -> dict[str, Any]:
    """The body of /v1/chat/completions for an /api/chat request."""
    out: dict[str, Any] = {"model": req.model, **_sampling(req.options, req.streams)}
    out["messages"] = chat_messages(req.messages or [])
    if req.tools:
        out["tools"] = [{"type": "function", **tool} for tool in req.tools]
    out.update(_format(req.format))
    out.update(_think(req.think))
    return out


def generate_request(req: GenerateRequest) -> tuple[str, dict[str, Any]]:
    """/api/generate as /v1/chat/completions (the engine's chat template, as Ollama applies
    the model's), or /v1/completions for `raw: true` (no template)."""
    out: dict[str, Any] = {"model": req.model, **_sampling(req.options, req.streams)}
    out.update(_format(req.format))
    if req.raw:
        if req.images:
            raise AgentError(
                400, "raw mode cannot carry images on this engine: send them without raw"
            )
        out["prompt"] = req.prompt or ""
        return "/v1/completions", out
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    messages += decode_context(req.context)
    messages.append({"role": "user", "content": _content(req.prompt or "", req.images)})
    out["messages"] = messages
    out.update(_think(req.think))
    return "/v1/chat/completions", out


def infill_request(req: GenerateRequest) -> dict[str, Any]:
    """`suffix` (fill-in-the-middle) as llama.cpp's /infill body."""
    out: dict[str, Any] = {
        "input_prefix": req.prompt or "",
        "input_suffix": req.suffix or "",
        "prompt": "",
        **_sampling(req.options, req.streams),
    }
    out.pop("stream_options", None)
    if "max_tokens" in out:
        out["n_predict"] = out.pop("max_tokens")
    return out


def suffix_completion_request(req: GenerateRequest) -> dict[str, Any]:
    """`suffix` as vLLM's /v1/completions `suffix` (models with fill-in-the-middle)."""
    out: dict[str, Any] = {"model": req.model, **_sampling(req.options, req.streams)}
    out["prompt"] = req.prompt or ""
    out["suffix"] = req.suffix
    return out


def embed_request(req: EmbedRequest) -> dict[str, Any]:
    return {"model": req.model, "input": req.input if req.input is not None else ""}


# -- /api/generate's context -------------------------------------------------------------
# Ollama's `context` is the token ids of the conversation so far, sent back to continue it.
# An OpenAI engine takes messages, not token ids, so the agent's context is the conversation
# itself, as the bytes of its JSON: opaque to the client, as Ollama's is.


def encode_context(messages: list[dict[str, Any]]) -> list[int]:
    """The conversation without its system prompt and images (text only, as Ollama's
    context keeps the tokens of the text)."""
    history = []
    for m in messages:
        if m.get("role") == "system":
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        history.append({"role": m["role"], "content": content or ""})
    return list(orjson.dumps(history))


def decode_context(context: list[int] | None) -> list[dict[str, Any]]:
    if not context:
        return []
    try:
        history = orjson.loads(bytes(context))
    except (ValueError, orjson.JSONDecodeError):
        history = None
    if not isinstance(history, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in history
    ):
        raise AgentError(
            400,
            "context was not made by this agent: on an OpenAI-compatible engine it carries "
            "the conversation, not token ids (send the context a previous answer gave)",
            "invalid_context",
        )
    return history


# -- answers --------------------------------------------------------------------------------


def _counters(
    usage: dict[str, Any] | None, timings: dict[str, Any] | None, started: float
) -> dict[str, Any]:
    usage = usage or {}
    timings = timings or {}
    return {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": usage.get("prompt_tokens", timings.get("prompt_n", 0)),
        "prompt_eval_duration": int(timings.get("prompt_ms", 0) * 1e6),
        "eval_count": usage.get("completion_tokens", timings.get("predicted_n", 0)),
        "eval_duration": int(timings.get("predicted_ms", 0) * 1e6),
    }


def _done_reason(finish: str | None) -> str:
    return "length" if finish in ("length", "limit") else "stop"


def _reasoning(part: dict[str, Any]) -> str:
    for name in _REASONING:
        value = part.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _call_arguments(name: str, raw: Any) -> dict[str, Any]:
    """A call's arguments as an object: the engine's object, its JSON text, or none at all
    ({}); anything else (a number, a list, JSON of another type) is the engine's error."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise AgentError(502, f"the engine sent arguments for tool {name!r} that are not JSON")
    return value


def ollama_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls (whole) as Ollama's: arguments an object, `index` omitted when 0."""
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        entry: dict[str, Any] = {"index": i} if i else {}
        entry["name"] = name
        entry["arguments"] = _call_arguments(name, function.get("arguments"))
        out.append({"function": entry})
    return out


def chat_response(
    data: dict[str, Any],
    model: str,
    kind: str,
    started: float,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A whole OpenAI completion as Ollama's final (and only) object; `kind` is chat or
    generate, `model` the name the client asked for; `history` makes generate's context."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") or choice.get("text") or data.get("content") or ""
    thinking = _reasoning(message)
    out: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if kind == "chat":
        msg: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            msg["thinking"] = thinking
        if message.get("tool_calls"):
            msg["tool_calls"] = ollama_tool_calls(message["tool_calls"])
        out["message"] = msg
    else:
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
    out["done"] = True
    finish = choice.get("finish_reason") or data.get("stop_type")
    out["done_reason"] = _done_reason(finish)
    if history is not None:
        out["context"] = encode_context([*history, {"role": "assistant", "content": text}])
    out.update(_counters(data.get("usage"), data.get("timings"), started))
    return out


def loaded(model: str, kind: str, reason: str) -> dict[str, Any]:
    """Ollama's answer to a load (empty prompt/messages) or unload (and keep_alive 0)."""
    out: dict[str, Any] = {"model": model, "created_at": now_iso()}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return {**out, "done": True, "done_reason": reason}


class OllamaStream:
    """One OpenAI stream (chat or completion SSE, or llama.cpp's native /infill SSE)
    turned into Ollama's NDJSON objects. Tool-call deltas (`index`, then `id` and name, then
    argument fragments, possibly interleaved across calls) are assembled by index and sent
    as one chunk with every whole call, right before the last object."""

    def __init__(
        self,
        model: str,
        kind: str,
        started: float,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.model = model
        self.kind = kind
        self.started = started
        self.history = history
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.calls: dict[int, dict[str, Any]] = {}
        self.text: list[str] = []

    def _chunk(self, content: str = "", thinking: str = "", calls: Any = None) -> bytes:
        obj: dict[str, Any] = {"model": self.model, "created_at": now_iso()}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            obj["message"] = message
        else:
            obj["response"] = content
            if thinking:
                obj["thinking"] = thinking
        obj["done"] = False
        return orjson.dumps(obj) + b"\n"

    def feed(self, event: dict[str, Any]) -> list[bytes]:
        """The NDJSON lines one SSE event gives (often one, sometimes none)."""
        if "error" in event:
            err = event["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise AgentError(502, str(message))
        self.usage = event.get("usage") or self.usage
        self.timings = event.get("timings") or self.timings
        out = []
        if "choices" not in event and "content" in event:  # llama.cpp's native stream
            if event.get("stop"):
                self.finish = event.get("stop_type") or self.finish
            text = event.get("content") or ""
            if text:
                self.text.append(text)
                out.append(self._chunk(text))
            return out
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1: Ollama has one answer
            self.finish = choice.get("finish_reason") or self.finish
            delta = choice.get("delta") or {}
            thinking = _reasoning(delta)
            text = delta.get("content") or choice.get("text") or ""
            for part in delta.get("tool_calls") or []:
                self._add_call(part)
            if thinking or text:
                self.text.append(text)
                out.append(self._chunk(text, thinking))
        return out

    def _add_call(self, part: dict[str, Any]) -> None:
        index = part.get("index")
        if not isinstance(index, int):
            # No index: a part naming a call starts one, a bare fragment continues the last.
            starts = part.get("id") or (part.get("function") or {}).get("name")
            index = max(self.calls, default=-1) + (1 if starts or not self.calls else 0)
        call = self.calls.setdefault(index, {"name": "", "arguments": []})
        function = part.get("function") or {}
        if function.get("name"):
            call["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call["arguments"].append(arguments)
        elif isinstance(arguments, dict):
            call["arguments"] = [orjson.dumps(arguments).decode()]

    def finish_lines(self) -> list[bytes]:
        """The whole tool calls (if any), then the last object."""
        out = []
        if self.calls:
            calls = [
                {"function": {"name": c["name"], "arguments": "".join(c["arguments"])}}
                for _, c in sorted(self.calls.items())
            ]
            out.append(self._chunk(calls=ollama_tool_calls(calls)))
        last = orjson.loads(self._chunk())
        last["done"] = True
        last["done_reason"] = _done_reason(self.finish)
        if self.history is not None:
            answer = {"role": "assistant", "content": "".join(self.text)}
            last["context"] = encode_context([*self.history, answer])
        last.update(_counters(self.usage, self.timings, self.started))
        out.append(orjson.dumps(last) + b"\n")
        return out


async def sse_to_ndjson(lines: AsyncIterator[bytes], stream: OllamaStream) -> AsyncIterator[bytes]:
    """Read SSE lines, yield NDJSON lines. A failure after the first line is sent in the
    stream (`{"error": ...}`, which Ollama's clients raise), never as a short `done: true`."""
    try:
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
                raise AgentError(502, "the engine sent a malformed stream event")
            for out in stream.feed(event):
                yield out
        for out in stream.finish_lines():
            yield out
    except AgentError as exc:
        yield orjson.dumps({"error": exc.message}) + b"\n"


# -- model listings -------------------------------------------------------------------------


def _iso(created: Any) -> str:
    if isinstance(created, int | float) and created > 0:
        return datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
    return now_iso()


def details(family: str = "", fmt: str = "", parameter_size: str = "") -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": fmt,
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size,
        "quantization_level": "",
    }


def model_entry(m: dict[str, Any]) -> dict[str, Any]:
    name = str(m.get("id", ""))
    return {
        "name": name,
        "model": name,
        "modified_at": _iso(m.get("created")),
        "size": int((m.get("meta") or {}).get("size") or 0),
        "digest": "",
        "details": details(),
    }


def tags_response(models: dict[str, Any]) -> dict[str, Any]:
    return {"models": [model_entry(m) for m in models.get("data") or []]}


def ps_response(models: dict[str, Any]) -> dict[str, Any]:
    # The engine loaded its model at start-up and keeps it: every listed model is running.
    return {
        "models": [
            {**model_entry(m), "expires_at": "0001-01-01T00:00:00Z", "size_vram": 0}
            for m in models.get("data") or []
        ]
    }


def parameter_size(count: Any) -> str:
    """A parameter count as Ollama shows it: 494.03M, 3.2B."""
    if not isinstance(count, int | float) or count <= 0:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{math.floor(count / scale * 100) / 100:g}{unit}"
    return str(int(count))


def embed_response(
    data: dict[str, Any], model: str, started: float, dimensions: int | None = None
) -> dict[str, Any]:
    items = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") or [] for d in items]
    if dimensions:
        # As Ollama's EmbedHandler: cut to the first `dimensions` values, then normalize.
        vectors = [_normalize(v[:dimensions]) if dimensions < len(v) else v for v in vectors]
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": (data.get("usage") or {}).get("prompt_tokens", 0),
    }


def _normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]

"""An OpenAI-only engine that answers with tool calls and reasoning (tests only).

The doubles never produce tools or thinking; llama.cpp's real server with the tiny random
model writes gibberish. This engine answers as a model that calls tools and thinks would,
in the wire format llama.cpp's server and vLLM use, so the agent's translation of Ollama's
API can be checked with the unmodified clients:

    python tool_engine.py PORT [--flavour llama.cpp|vllm] [--model NAME] [--vision]

Answers follow the convention the Ollama double shares (tests/doubles/ollama_double.py):
- `call NAME with {JSON}` in the last user message, NAME among the request's tools: a tool
  call (several such phrases: parallel calls). Streamed, each call comes as llama.cpp and vLLM
  send it: a first delta with `index`, `id`, `type` and the name, then the arguments in
  fragments of a few characters, the calls' fragments interleaved; `finish_reason:
  "tool_calls"`.
- a last `tool` message: "tool said: <content>"; otherwise "Echo: <last user text>", with
  " [N images]" when the last user message carried images (only with --vision; without it
  images are refused with llama.cpp's 500 and message).
- reasoning "thinking about: <last user text>" first, unless
  `chat_template_kwargs.enable_thinking` is false (Qwen3's templates think by default): in
  `reasoning_content` (llama.cpp, vLLM 0.10) or, with --flavour vllm, `reasoning` (the field's
  name in later vLLM and in Ollama's /v1).
- history is checked as the engines check it: an assistant tool call without
  `type: "function"` is llama.cpp's 500 "Missing tool call type", arguments that are not a
  string a 400, a tool message whose `tool_call_id` answers no earlier call a 400.
- llama.cpp flavour: any model name, `/props` (n_ctx, chat template, modalities), `/infill`
  (native SSE). vLLM flavour: only its model's name (404 otherwise), `/version`,
  `max_model_len` in /v1/models, `suffix` in /v1/completions.
`GET /last` returns the last request body the engine received. `--bad-arguments` makes tool
call arguments broken JSON (a hostile or buggy engine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time

from aiohttp import web

TOOL_REQUEST = re.compile(
    r"call ([A-Za-z_][A-Za-z0-9_]*) with (\{.*?\})(?=\s+and\s+call\s|[^{}]*$)"
)
CONTEXT = 4096
TEMPLATE = (
    "{%- if tools %}{{ tools | tojson }}{% endif %}"
    "{%- if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}"
    "{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
)


def words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


def error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response(
        {"error": {"code": status, "message": message, "type": kind}}, status=status
    )


def text_of(content) -> tuple[str, int]:
    if isinstance(content, list):
        text = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        return text, sum(1 for p in content if p.get("type") == "image_url")
    return content or "", 0


class Engine:
    def __init__(self, config: argparse.Namespace) -> None:
        self.config = config
        self.last: dict = {}

    def reasoning_field(self) -> str:
        return "reasoning" if self.config.flavour == "vllm" else "reasoning_content"

    def check_model(self, body: dict) -> web.Response | None:
        if self.config.flavour == "vllm" and body.get("model") != self.config.model:
            return error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        return None

    def check_history(self, messages: list) -> web.Response | None:
        ids: set[str] = set()
        for m in messages:
            for call in m.get("tool_calls") or []:
                if call.get("type") != "function":
                    return error(500, f"Missing tool call type: {json.dumps(call)}", "server_error")
                if not isinstance(call.get("function", {}).get("arguments"), str):
                    return error(400, "tool call arguments must be a string")
                ids.add(call.get("id", ""))
            if m.get("role") == "tool" and m.get("tool_call_id") not in ids:
                return error(400, f"tool_call_id {m.get('tool_call_id')!r} answers no tool call")
            _, images = text_of(m.get("content"))
            if images and not self.config.vision:
                return error(
                    500,
                    "image input is not supported - hint: if this is unexpected, you may need "
                    "to provide the mmproj",
                )
            for part in m.get("content") if isinstance(m.get("content"), list) else []:
                url = part.get("image_url", {}).get("url", "") if part.get("type") else ""
                if part.get("type") == "image_url" and not re.match(
                    r"data:image/[a-z]+;base64,", url
                ):
                    return error(400, "image_url must be a base64 data URL")
        return None

    def script(self, body: dict) -> tuple[list[tuple[str, object]], str]:
        """[(kind, value)] with kind reasoning/content/tool, and the finish reason."""
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        users = [m for m in messages if m.get("role") == "user"]
        asked, images = text_of(users[-1].get("content")) if users else ("", 0)
        pieces: list[tuple[str, object]] = []
        kwargs = body.get("chat_template_kwargs") or {}
        if kwargs.get("enable_thinking", True) is not False:
            pieces += [("reasoning", w) for w in words("thinking about: " + asked)]
        offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
        calls = TOOL_REQUEST.findall(asked) if last.get("role") == "user" else []
        calls = [(n, a) for n, a in calls if n in offered]
        if self.config.bad_arguments:
            calls = [(n, a[:-1] + ",") for n, a in calls]
        if calls:
            pieces += [("tool", c) for c in calls]
            return self.cut(pieces, body, "tool_calls")
        if last.get("role") == "tool":
            answer = "tool said: " + text_of(last.get("content"))[0]
        else:
            answer = "Echo: " + asked + (f" [{images} images]" if images else "")
        pieces += [("content", w) for w in words(answer)]
        return self.cut(pieces, body, "stop")

    @staticmethod
    def cut(pieces, body, finish):
        limit = body.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < len(pieces):
            return pieces[:limit], "length"
        return pieces, finish

    def usage(self, body: dict, pieces: list) -> dict:
        prompt = sum(len(text_of(m.get("content"))[0].split()) for m in body.get("messages", []))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces),
            "total_tokens": prompt + len(pieces),
        }


async def chat(request: web.Request) -> web.StreamResponse:
    engine: Engine = request.app["engine"]
    body = await request.json()
    engine.last = body
    refused = engine.check_model(body) or engine.check_history(body.get("messages") or [])
    if refused is not None:
        return refused
    pieces, finish = engine.script(body)
    field = engine.reasoning_field()
    # llama.cpp's server names its own model in answers, whatever the request said.
    base = {"id": "chatcmpl-1", "created": int(time.time()), "model": engine.config.model}
    calls = [
        {
            "id": f"call_{i}_{hashlib.sha256(args.encode()).hexdigest()[:6]}",
            "type": "function",
            "function": {"name": name, "arguments": args},
        }
        for i, (name, args) in enumerate(v for k, v in pieces if k == "tool")
    ]
    if not body.get("stream"):
        message = {
            "role": "assistant",
            "content": "".join(v for k, v in pieces if k == "content") or None,
            field: "".join(v for k, v in pieces if k == "reasoning") or None,
            "tool_calls": calls,
        }
        return web.json_response(
            {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": engine.usage(body, pieces),
            }
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)

    async def send(delta: dict, finish_reason: str | None = None, **extra) -> None:
        chunk = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    await send({"role": "assistant", "content": None})
    for kind, value in pieces:
        if kind == "reasoning":
            await send({field: value})
        elif kind == "content":
            await send({"content": value})
    for i, call in enumerate(calls):
        head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        await send({"tool_calls": [{"index": i, **head}]})
    # The arguments in 3-character fragments, the calls' fragments interleaved.
    fragments = [
        [
            (i, c["function"]["arguments"][k : k + 3])
            for k in range(0, len(c["function"]["arguments"]), 3)
        ]
        for i, c in enumerate(calls)
    ]
    for step in range(max((len(f) for f in fragments), default=0)):
        for per_call in fragments:
            if step < len(per_call):
                i, text = per_call[step]
                await send({"tool_calls": [{"index": i, "function": {"arguments": text}}]})
    timings = {"prompt_n": 3, "prompt_ms": 1.5, "predicted_n": len(pieces), "predicted_ms": 4.0}
    await send({}, finish, **({"timings": timings} if engine.config.flavour != "vllm" else {}))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": engine.usage(body, pieces),
        }
        await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


def fim_text(prefix: str, suffix: str) -> str:
    return f"middle of {prefix!r} and {suffix!r}"


async def infill(request: web.Request) -> web.StreamResponse:
    """llama.cpp's /infill: native (not OpenAI) answers and SSE events."""
    engine: Engine = request.app["engine"]
    body = await request.json()
    engine.last = body
    text = fim_text(body.get("input_prefix", ""), body.get("input_suffix", ""))
    timings = {
        "prompt_n": 2,
        "prompt_ms": 1.0,
        "predicted_n": len(words(text)),
        "predicted_ms": 2.0,
    }
    if not body.get("stream"):
        return web.json_response(
            {"content": text, "stop": True, "stop_type": "eos", "timings": timings}
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for w in words(text):
        await resp.write(b"data: " + json.dumps({"content": w, "stop": False}).encode() + b"\n\n")
    last = {"content": "", "stop": True, "stop_type": "eos", "timings": timings}
    await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
    return resp


async def completions(request: web.Request) -> web.StreamResponse:
    engine: Engine = request.app["engine"]
    body = await request.json()
    engine.last = body
    refused = engine.check_model(body)
    if refused is not None:
        return refused
    prompt = body.get("prompt", "")
    text = fim_text(prompt, body["suffix"]) if body.get("suffix") else "Echo: " + prompt
    base = {"id": "cmpl-1", "object": "text_completion", "model": body.get("model")}
    if not body.get("stream"):
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
        return web.json_response({**base, "choices": [choice]})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for w in words(text):
        chunk = {**base, "choices": [{"index": 0, "text": w, "finish_reason": None}]}
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    chunk = {**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
    await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n")
    return resp


async def embeddings(request: web.Request) -> web.Response:
    engine: Engine = request.app["engine"]
    body = await request.json()
    engine.last = body
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs
    data = []
    for i, text in enumerate(inputs):
        digest = hashlib.sha256(text.encode()).digest()
        vector = [b / 255 for b in digest[:16]]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
    return web.json_response(
        {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
    )


async def models(request: web.Request) -> web.Response:
    config = request.app["engine"].config
    entry = {"id": config.model, "object": "model", "created": 1700000000, "owned_by": "test"}
    if config.flavour == "vllm":
        entry["max_model_len"] = CONTEXT
    else:
        entry["meta"] = {"n_ctx_train": CONTEXT, "n_params": 494032768, "n_embd": 896}
    return web.json_response({"object": "list", "data": [entry]})


async def props(request: web.Request) -> web.Response:
    config = request.app["engine"].config
    return web.json_response(
        {
            "default_generation_settings": {"n_ctx": CONTEXT},
            "chat_template": TEMPLATE,
            "modalities": {"vision": config.vision, "audio": False},
        }
    )


async def last(request: web.Request) -> web.Response:
    return web.json_response(request.app["engine"].last)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--flavour", choices=("llama.cpp", "vllm"), default="llama.cpp")
    p.add_argument("--model", default="qwen3-tools")
    p.add_argument("--vision", action="store_true")
    p.add_argument("--bad-arguments", action="store_true")
    config = p.parse_args()
    app = web.Application()
    app["engine"] = Engine(config)
    app.router.add_get("/health", lambda r: web.json_response({"status": "ok"}))
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/last", last)
    if config.flavour == "llama.cpp":
        app.router.add_get("/props", props)
        app.router.add_post("/infill", infill)
    else:
        app.router.add_get("/version", lambda r: web.json_response({"version": "0.10.2"}))
    web.run_app(app, host="127.0.0.1", port=config.port, print=None)


if __name__ == "__main__":
    main()

"""Ollama's API (`/api/...`) served on an OpenAI-compatible engine (vLLM, llama.cpp's server).

Ollama clients keep working when the engine is not Ollama: the request bodies are checked
(ollama_schema: a malformed one is a 400 in Ollama's error shape), turned into OpenAI
requests (translate.py), sent with `Engine`, and the answers turned back: NDJSON streams
unless `stream` is false, the model name the client asked for, Ollama's error shape with the
engine's status. docs/ollama-translation.md has the table of every field and endpoint.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import orjson
from starlette.responses import Response, StreamingResponse

from . import translate
from .errors import AgentError
from .ollama_schema import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ShowRequest,
    parse,
)

log = logging.getLogger("cube_agent.ollama_api")

if TYPE_CHECKING:
    from .proxy import Call, Proxy
    from .upstream import Upstream

# What /api/version answers: the Ollama release whose API this translation follows (the one
# the image ships), so clients that check the version for a feature decide as they would
# in front of that Ollama. The agent's own version is in /health and the OpenAPI schema.
OLLAMA_API_VERSION = "0.12.3"
JSON = "application/json"
# An engine's error is read up to this much: a message, not a payload.
MAX_ERROR_BYTES = 64 * 1024
NDJSON = "application/x-ndjson"
Flavour = Literal["llama.cpp", "vllm", "openai"]
# The codes of AgentError for an engine that did not answer (upstream.py, proxy.py).
UNREACHABLE = frozenset({"upstream_unreachable", "upstream_timeout", "upstream_error"})


class Engine:
    """The OpenAI-compatible engine behind one translated request: JSON calls whose failures
    (a status that is not 200, a 200 carrying an `error` object, a body that is not a JSON
    object) become AgentError with the engine's status and message."""

    def __init__(self, proxy: Proxy, upstream: Upstream, request_id: str) -> None:
        self.proxy = proxy
        self.upstream = upstream
        self.headers = {"content-type": JSON, "x-request-id": request_id}

    async def json(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        body = orjson.dumps(payload) if payload is not None else None
        resp = await self.proxy._send(self.upstream, method, path, self.headers, body)
        if resp.status != 200:
            await raise_engine_error(resp)
        data = await self.proxy._read_whole(resp, self.upstream)  # bounded: max_answer
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("engine sent a non-JSON answer", extra={"target": self.upstream.url})
            raise AgentError(502, "the engine sent a non-JSON answer") from None
        if not isinstance(parsed, dict):
            raise AgentError(502, "the engine sent an unexpected answer")
        err = parsed.get("error")
        if err is not None:
            # vLLM 0.10.2 answers some refusals (embeddings from a generative model) with
            # status 200 and an error object: still an error, with the status it names.
            code = err.get("code") if isinstance(err, dict) else None
            status = code if isinstance(code, int) and 400 <= code <= 599 else 502
            message = err.get("message") if isinstance(err, dict) else err
            raise AgentError(status, str(message or f"engine answered {status}"))
        return parsed

    async def stream(self, path: str, payload: Any) -> aiohttp.ClientResponse:
        """A streamed answer whose status is 200 (else its error, raised)."""
        body = orjson.dumps(payload)
        resp = await self.proxy._send(self.upstream, "POST", path, self.headers, body)
        if resp.status != 200:
            await raise_engine_error(resp)
        return resp

    async def props(self) -> dict[str, Any] | None:
        """llama.cpp's `/props` (context size, chat template, modalities), None elsewhere."""
        try:
            data = await self.json("GET", "/props")
        except AgentError as exc:
            if exc.code in UNREACHABLE:
                raise
            return None  # the engine answered, but not as llama.cpp does
        return data if isinstance(data.get("default_generation_settings"), dict) else None

    async def flavour(self, props: dict[str, Any] | None = None) -> Flavour:
        if props is not None or await self.props() is not None:
            return "llama.cpp"
        try:
            version = await self.json("GET", "/version")
        except AgentError as exc:
            if exc.code in UNREACHABLE:
                raise
            return "openai"
        return "vllm" if "version" in version else "openai"

    async def card(self, name: str) -> dict[str, Any]:
        """What the engine says of model `name`: its /v1/models entry (`model`) and llama.cpp's
        /props (`props`, or None). 404 as Ollama's for a name chat would refuse: llama.cpp's
        server serves its one model under any name, vLLM only under the names it lists."""
        models = await self.json("GET", "/v1/models")
        listed = [m for m in models.get("data") or [] if isinstance(m, dict)]
        props = await self.props()
        entry = next((m for m in listed if m.get("id") == name), None)
        if entry is None:
            if props is None:
                raise AgentError(404, f"model '{name}' not found", "model_not_found")
            entry = listed[0] if listed else {"id": name}
        return {"model": entry, "props": props}


async def raise_engine_error(resp: aiohttp.ClientResponse) -> None:
    """Pass the engine's status and message on, in Ollama's error shape (the first
    MAX_ERROR_BYTES of it: an error message, not a payload)."""
    try:
        text = (await resp.content.read(MAX_ERROR_BYTES)).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError):
        text = ""
    finally:
        resp.close()
    message = text
    try:
        data = orjson.loads(text)
        # OpenAI/llama.cpp: {"error": {"message"}}; vLLM: {"message"}; Ollama: {"error"}
        err = data.get("error", data)
        message = str(err.get("message", text) if isinstance(err, dict) else err)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    raise AgentError(resp.status, message or f"engine answered {resp.status}")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


# -- the endpoints --------------------------------------------------------------------------


async def serve(proxy: Proxy, call: Call, upstream: Upstream, name: str, body: bytes) -> Response:
    """Answer /api/`name` from the OpenAI-compatible engine `upstream`."""
    handler, methods = ENDPOINTS[name]
    if call.method not in methods:
        raise AgentError(405, f"/api/{name} takes {' or '.join(methods)}", "method_not_allowed")
    engine = Engine(proxy, upstream, call.request_id.decode("latin-1"))
    return await handler(engine, call, body)


async def version(engine: Engine, call: Call, body: bytes) -> Response:
    return _json({"version": OLLAMA_API_VERSION})


async def tags(engine: Engine, call: Call, body: bytes) -> Response:
    return _json(translate.tags_response(await engine.json("GET", "/v1/models")))


async def ps(engine: Engine, call: Call, body: bytes) -> Response:
    return _json(translate.ps_response(await engine.json("GET", "/v1/models")))


async def show(engine: Engine, call: Call, body: bytes) -> Response:
    req = parse(ShowRequest, body)
    name = req.model or req.name
    if not name:
        raise AgentError(400, "model is required")
    return _json(show_response(await engine.card(name)))


def show_response(card: dict[str, Any]) -> dict[str, Any]:
    """/api/show from what the engine tells: llama.cpp's /props (n_ctx, chat template,
    modalities) or vLLM's max_model_len; capabilities only where the engine says so."""
    model, props = card["model"], card["props"]
    meta = model.get("meta") or {}
    capabilities = ["completion"]
    template = ""
    if props is not None:
        context = (props.get("default_generation_settings") or {}).get("n_ctx")
        template = str(props.get("chat_template") or "")
        caps = props.get("chat_template_caps") or {}
        if caps.get("supports_tools") or (not caps and "tools" in template):
            capabilities.append("tools")
        if (props.get("modalities") or {}).get("vision"):
            capabilities.append("vision")
        if "enable_thinking" in template or "<think>" in template:
            capabilities.append("thinking")
        family, fmt = "llama.cpp", "gguf"
    else:
        context = model.get("max_model_len")
        family, fmt = "", ""
    # Neither engine tells the architecture; clients read `<arch>.context_length` (any key
    # ending in context_length), so the engine's kind stands for it.
    arch = family or "openai"
    info: dict[str, Any] = {"general.architecture": arch}
    if isinstance(context, int) and context > 0:
        info[f"{arch}.context_length"] = context
    if isinstance(meta.get("n_embd"), int):
        info[f"{arch}.embedding_length"] = meta["n_embd"]
    if isinstance(meta.get("n_params"), int):
        info["general.parameter_count"] = meta["n_params"]
    return {
        "modelfile": f"# served by an OpenAI-compatible engine\nFROM {model.get('id', '')}\n",
        "parameters": "",
        "template": template,
        "details": translate.details(arch, fmt, translate.parameter_size(meta.get("n_params"))),
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": translate.model_entry(model)["modified_at"],
    }


async def chat(engine: Engine, call: Call, body: bytes) -> Response:
    started = time.perf_counter()
    req = parse(ChatRequest, body)
    if not req.model:
        raise AgentError(400, "model is required")
    if not req.messages:
        await engine.card(req.model)  # Ollama loads the model, or 404s
        return _json(translate.loaded(req.model, "chat", _load_reason(req.keep_alive)))
    openai_req = translate.chat_request(req)
    return await _generation(
        engine, call, "/v1/chat/completions", openai_req, req.model, "chat", started
    )


def _load_reason(keep_alive: float | None) -> str:
    return "unload" if keep_alive is not None and int(keep_alive) == 0 else "load"


async def generate(engine: Engine, call: Call, body: bytes) -> Response:
    started = time.perf_counter()
    req = parse(GenerateRequest, body)
    if not req.model:
        raise AgentError(404, "model '' not found", "model_not_found")  # as Ollama 0.12.3
    if req.raw and (req.template or req.system or req.context):
        raise AgentError(400, "raw mode does not support template, system, or context")
    if req.template:
        raise AgentError(
            400,
            "template is not supported on this engine: it applies the model's own chat "
            "template (use raw: true with a prompt you formatted)",
            "unsupported",
        )
    if not req.prompt:
        await engine.card(req.model)
        return _json(translate.loaded(req.model, "generate", _load_reason(req.keep_alive)))
    if req.suffix:
        return await _infill(engine, call, req, started)
    path, openai_req = translate.generate_request(req)
    history = None if req.raw else [*openai_req["messages"]]
    return await _generation(
        engine, call, path, openai_req, req.model, "generate", started, history
    )


async def _infill(engine: Engine, call: Call, req: GenerateRequest, started: float) -> Response:
    """`suffix`: llama.cpp's /infill, vLLM's /v1/completions `suffix` (the engine refuses it
    for a model without fill-in-the-middle), or a clear 501 on another engine."""
    flavour = await engine.flavour()
    if flavour == "llama.cpp":
        path, openai_req = "/infill", translate.infill_request(req)
    elif flavour == "vllm":
        path, openai_req = "/v1/completions", translate.suffix_completion_request(req)
    else:
        raise AgentError(
            501,
            "suffix (fill-in-the-middle) needs llama.cpp's /infill or vLLM: the engine is neither",
            "not_implemented",
        )
    return await _generation(engine, call, path, openai_req, req.model or "", "generate", started)


async def _generation(
    engine: Engine,
    call: Call,
    path: str,
    openai_req: dict[str, Any],
    model: str,
    kind: str,
    started: float,
    history: list[dict[str, Any]] | None = None,
) -> Response:
    if not openai_req["stream"]:
        data = await engine.json("POST", path, openai_req)
        return _json(translate.chat_response(data, model, kind, started, history))
    resp = await engine.stream(path, openai_req)
    stream = translate.OllamaStream(model, kind, started, history)
    ndjson = translate.sse_to_ndjson(resp.content, stream)
    return StreamingResponse(
        engine.proxy._relay(resp, ndjson, call.scope_path, engine.upstream), media_type=NDJSON
    )


async def embed(engine: Engine, call: Call, body: bytes) -> Response:
    started = time.perf_counter()
    req = parse(EmbedRequest, body)
    if not req.model:
        raise AgentError(400, "model is required")
    if not req.input:
        return _json({"model": req.model, "embeddings": []})
    data = await engine.json("POST", "/v1/embeddings", translate.embed_request(req))
    return _json(translate.embed_response(data, req.model, started, req.dimensions))


async def embeddings(engine: Engine, call: Call, body: bytes) -> Response:
    started = time.perf_counter()
    req = parse(EmbeddingsRequest, body)
    if not req.model:
        raise AgentError(400, "model is required")
    if not req.prompt:
        return _json({"embedding": []})
    openai_req = translate.embed_request(EmbedRequest(model=req.model, input=req.prompt))
    data = await engine.json("POST", "/v1/embeddings", openai_req)
    out = translate.embed_response(data, req.model, started)
    return _json({"embedding": out["embeddings"][0] if out["embeddings"] else []})


GET = ("GET", "HEAD")
POST = ("POST",)
ENDPOINTS = {
    "chat": (chat, POST),
    "generate": (generate, POST),
    "embed": (embed, POST),
    "embeddings": (embeddings, POST),
    "show": (show, POST),
    "tags": (tags, GET),
    "ps": (ps, GET),
    "version": (version, GET),
}

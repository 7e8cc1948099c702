"""The proxy endpoints: OpenAI-compatible `/v1/...` and Ollama-native `/api/...`, each also
under a `/{domain}` prefix (no prefix = domain `default`).

These are plain Starlette endpoints (no FastAPI dependency injection or validation on the hot
path). Bodies are read once and parsed only when routing or translation needs the JSON;
answers that the engine streams are relayed chunk by chunk, and a client that goes away
closes the engine connection so the engine stops generating.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from . import translate
from .auth import Auth
from .errors import AgentError, StreamBroken, error_body, is_ollama_path
from .keys import DEFAULT_DOMAIN
from .metrics import Metrics, route_label
from .routing import Router
from .upstream import DROP_REQUEST_HEADERS, DROP_RESPONSE_HEADERS, Upstream

if TYPE_CHECKING:
    from .guardrails import Guardrails

log = logging.getLogger("cube_agent.proxy")

# Ollama endpoints the agent serves; the second set changes the engine's models (admin keys).
OLLAMA_ENDPOINTS = frozenset(
    {"chat", "generate", "tags", "show", "embed", "embeddings", "ps", "version"}
)
OLLAMA_MODEL_MANAGEMENT = frozenset({"pull", "delete", "create", "copy", "push"})
STREAM_TYPES = ("text/event-stream", "application/x-ndjson")
# The endpoints the optional guardrails stage checks, and the API shape of each.
GUARDED = {"/v1/chat/completions": "openai", "/api/chat": "ollama"}
JSON = "application/json"


def stream_error(path: str, content_type: str, message: str) -> bytes:
    if is_ollama_path(path) or content_type.startswith("application/x-ndjson"):
        return orjson.dumps({"error": message}) + b"\n"
    return b"data: " + error_body(path, 502, message, "upstream_error") + b"\n\n"


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AgentError(400, f"malformed JSON body: {exc}", "invalid_json") from None


class Proxy:
    def __init__(
        self,
        router: Router,
        auth: Auth,
        metrics: Metrics,
        max_body: int,
        guardrails: Guardrails | None = None,
    ) -> None:
        self.router = router
        self.auth = auth
        self.metrics = metrics
        self.max_body = max_body
        self.guardrails = guardrails

    # -- endpoints -------------------------------------------------------------------------

    async def openai(self, request: Request) -> Response:
        domain = request.path_params.get("domain", DEFAULT_DOMAIN)
        path = "/v1/" + request.path_params["rest"]
        self.auth.check(request.headers, domain)
        body = await self._read_body(request)
        upstream, forward_path, _ = self._route(request, path, domain, body)
        return await self._guarded(
            path, body, partial(self._pass_through, request, upstream, forward_path)
        )

    async def ollama(self, request: Request) -> Response:
        domain = request.path_params.get("domain", DEFAULT_DOMAIN)
        name = request.path_params["name"]
        path = "/api/" + name
        if name not in OLLAMA_ENDPOINTS and name not in OLLAMA_MODEL_MANAGEMENT:
            raise AgentError(404, f"no such endpoint: {path}", "not_found")
        self.auth.check(request.headers, domain, admin=name in OLLAMA_MODEL_MANAGEMENT)
        body = await self._read_body(request)
        upstream, forward_path, _ = self._route(request, path, domain, body)
        if await upstream.engine_kind() == "ollama":
            return await self._guarded(
                path, body, partial(self._pass_through, request, upstream, forward_path)
            )
        if name in OLLAMA_MODEL_MANAGEMENT:
            raise AgentError(
                501,
                f"/api/{name} is not available: the engine at {upstream.url} is "
                "OpenAI-compatible and binds its model at start-up (change the engine's "
                "configuration to change models)",
                "not_implemented",
            )
        return await self._guarded(path, body, partial(self._translate, request, upstream, name))

    async def _guarded(
        self, path: str, body: bytes, forward: Callable[[bytes], Awaitable[Response]]
    ) -> Response:
        """The guardrails seam: with guardrails on, chat requests and their answers are
        checked around `forward`; with them off this is one dict lookup."""
        api = GUARDED.get(path) if self.guardrails is not None else None
        if api is None:
            return await forward(body)
        assert self.guardrails is not None
        return await self.guardrails.guard(api, body, forward)  # type: ignore[arg-type]

    # -- request side ----------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise self._too_large()
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> AgentError:
        return AgentError(
            413, f"request body larger than {self.max_body} bytes", "request_too_large"
        )

    def _route(
        self, request: Request, path: str, domain: str, body: bytes
    ) -> tuple[Upstream, str, str | None]:
        router = self.router
        if not router.rules:
            return router.default, path, None
        parsed: list[Any] = []

        def body_json() -> Any:
            if not parsed:
                parsed.append(parse_json(body) if body else None)
            return parsed[0]

        return router.route(
            request.method, path, domain, request.headers, request.query_params, body_json
        )

    @staticmethod
    def _forward_headers(request: Request) -> list[tuple[str, str]]:
        return [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.scope["headers"]
            if k.decode("latin-1") not in DROP_REQUEST_HEADERS
        ]

    # -- response side ---------------------------------------------------------------------

    async def _pass_through(
        self, request: Request, upstream: Upstream, path: str, body: bytes
    ) -> Response:
        resp = await self._send(
            upstream,
            request.method,
            path,
            self._forward_headers(request),
            body or None,
            request.url.query,
        )
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in DROP_RESPONSE_HEADERS}
        content_type = resp.headers.get("content-type", "")
        if resp.content_length is not None and not content_type.startswith(STREAM_TYPES):
            try:
                data = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._upstream_failure(upstream, exc) from None
            finally:
                resp.release()
            return Response(data, status_code=resp.status, headers=headers)
        return StreamingResponse(
            self._relay(resp, resp.content.iter_any(), request.scope["path"], upstream),
            status_code=resp.status,
            headers=headers,
        )

    async def _relay(
        self,
        resp: aiohttp.ClientResponse,
        chunks: AsyncIterator[bytes],
        path: str,
        upstream: Upstream,
    ) -> AsyncIterator[bytes]:
        """Yield the engine's chunks as they come; on a client disconnect (the task is
        cancelled) or any error, close the engine connection instead of returning it."""
        counter = self.metrics.chunks(route_label(path))
        finished = False
        try:
            async for chunk in chunks:
                counter.inc()
                yield chunk
            finished = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The status line is gone: say what broke in the stream's own format (both
            # clients raise on it), then end the connection without a clean last chunk.
            error = self._upstream_failure(upstream, exc)
            log.warning("engine stream broken", extra={"target": upstream.url, "error": str(exc)})
            yield stream_error(path, resp.headers.get("content-type", ""), error.message)
            raise StreamBroken(error.message) from None
        finally:
            if finished:
                resp.release()
            else:
                resp.close()

    async def _send(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | dict[str, str],
        body: bytes | None,
        query: str = "",
    ) -> aiohttp.ClientResponse:
        try:
            return await upstream.request(method, path, headers, body, query)
        except AgentError as exc:
            kind = "timeout" if exc.status == 504 else "unreachable"
            self.metrics.upstream_errors.labels(upstream.url, kind).inc()
            raise

    def _upstream_failure(self, upstream: Upstream, exc: BaseException) -> AgentError:
        timeout = isinstance(exc, TimeoutError)
        self.metrics.upstream_errors.labels(upstream.url, "timeout" if timeout else "broken").inc()
        if timeout:
            return AgentError(504, f"engine at {upstream.url} timed out", "upstream_timeout")
        return AgentError(502, f"engine at {upstream.url} failed: {exc}", "upstream_error")

    # -- Ollama API on an OpenAI-compatible engine -----------------------------------------

    async def _translate(
        self, request: Request, upstream: Upstream, name: str, body: bytes
    ) -> Response:
        started = time.perf_counter()
        headers = {"content-type": JSON, "x-request-id": request.state.request_id}
        if name == "version":
            raise AgentError(
                501, f"the engine at {upstream.url} is not Ollama: it has no version endpoint"
            )
        if name in ("tags", "ps", "show"):
            models = await self._engine_json(upstream, "GET", "/v1/models", headers, None)
            if name == "tags":
                return _json(translate.tags_response(models))
            if name == "ps":
                return _json(translate.ps_response(models))
            wanted = parse_json(body) if body else {}
            model = str(wanted.get("model") or wanted.get("name") or "")
            shown = translate.show_response(models, model)
            if shown is None:
                raise AgentError(404, f"model '{model}' not found", "model_not_found")
            return _json(shown)
        if request.method != "POST":
            raise AgentError(405, f"/api/{name} takes POST", "method_not_allowed")
        req = parse_json(body)
        if not isinstance(req, dict):
            raise AgentError(400, "the JSON body must be an object", "invalid_json")
        model = str(req.get("model", ""))
        if name in ("embed", "embeddings"):
            legacy = name == "embeddings"
            openai_req = translate.embed_request(
                {"model": model, "input": req.get("prompt", "")} if legacy else req
            )
            data = await self._engine_json(upstream, "POST", "/v1/embeddings", headers, openai_req)
            out = translate.embed_response(data, model, started)
            return _json({"embedding": out["embeddings"][0]} if legacy else out)
        kind = "chat" if name == "chat" else "generate"
        path, openai_req = (
            translate.chat_request(req) if kind == "chat" else translate.generate_request(req)
        )
        if not openai_req["stream"]:
            data = await self._engine_json(upstream, "POST", path, headers, openai_req)
            return _json(translate.chat_response(data, model, kind, started))
        resp = await self._send(upstream, "POST", path, headers, orjson.dumps(openai_req))
        if resp.status != 200:
            await self._raise_engine_error(resp)
        ndjson = translate.sse_to_ndjson(resp.content, model, kind, started)
        return StreamingResponse(
            self._relay(resp, ndjson, request.scope["path"], upstream),
            media_type="application/x-ndjson",
        )

    async def _engine_json(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        headers: dict[str, str],
        payload: Any,
    ) -> dict[str, Any]:
        body = orjson.dumps(payload) if payload is not None else None
        resp = await self._send(upstream, method, path, headers, body)
        try:
            if resp.status != 200:
                await self._raise_engine_error(resp)
            data = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._upstream_failure(upstream, exc) from None
        finally:
            resp.release()
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise AgentError(502, f"engine at {upstream.url} sent a non-JSON answer") from None
        if not isinstance(parsed, dict):
            raise AgentError(502, f"engine at {upstream.url} sent an unexpected answer")
        return parsed

    @staticmethod
    async def _raise_engine_error(resp: aiohttp.ClientResponse) -> None:
        """Pass the engine's status and message on, in Ollama's error shape."""
        text = (await resp.read()).decode("utf-8", "replace")
        resp.release()
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

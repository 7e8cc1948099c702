"""The proxy endpoints: OpenAI-compatible `/v1/...` and Ollama-native `/api/...`, each also
under a `/{domain}` prefix (no prefix = domain `default`).

They are served as plain ASGI, not through FastAPI/Starlette: the benchmark (issue 9)
showed the framework's layers (middlewares, request/response objects, send wrappers) cost
more CPU than the whole proxy logic, so `Proxy.handle` does auth, routing, request id,
metrics and the forwarding itself and sends the ASGI messages directly. Bodies are read
once and parsed only when routing or translation needs the JSON; streamed answers are
relayed chunk by chunk as they arrive, and a client that goes away closes the engine
connection so the engine stops generating.

Two paths are slower on purpose and use Starlette responses: the Ollama API translated onto
an OpenAI-only engine (it parses and rebuilds every message anyway) and the optional
guardrails stage (its seam, `_guarded`, takes and returns a `Response`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from . import translate
from .auth import Auth
from .errors import AgentError, StreamBroken, error_body, is_ollama_path
from .keys import DEFAULT_DOMAIN
from .metrics import Metrics, route_label
from .middleware import REQUEST_ID, log_request, request_id_of
from .paths import drop_segments
from .routing import Router
from .upstream import DROP_REQUEST_HEADERS, DROP_RESPONSE_HEADERS, Upstream

if TYPE_CHECKING:
    from .guardrails import Guardrails

log = logging.getLogger("cube_agent.proxy")

# /v1/REST and /api/NAME, optionally under /DOMAIN; the lazy `??` tries the unprefixed form
# first, so /v1/v1/x is /v1/ with REST v1/x, not domain "v1".
PROXY_PATH = re.compile(r"/(?:(?P<domain>[^/]+)/)??(?:v1/(?P<rest>.*)|api/(?P<name>[^/]+))")
PROXY_METHODS = frozenset({"GET", "POST", "DELETE", "HEAD"})

# Ollama endpoints the agent serves; the second set changes the engine's models (admin keys).
OLLAMA_ENDPOINTS = frozenset(
    {"chat", "generate", "tags", "show", "embed", "embeddings", "ps", "version"}
)
OLLAMA_MODEL_MANAGEMENT = frozenset({"pull", "delete", "create", "copy", "push"})
STREAM_TYPES = ("text/event-stream", "application/x-ndjson")
# The endpoints the optional guardrails stage checks, and the API shape of each.
GUARDED = {"/v1/chat/completions": "openai", "/api/chat": "ollama"}
JSON = "application/json"
# A body whose first character (after blanks) cannot begin a JSON object.
NOT_AN_OBJECT = re.compile(rb"\s*[^\s{]")
_DROP_RESPONSE = frozenset(h.encode() for h in DROP_RESPONSE_HEADERS)
_JSON_HEADER = (b"content-type", b"application/json")


def stream_error(path: str, content_type: str, message: str) -> bytes:
    if is_ollama_path(path) or content_type.startswith("application/x-ndjson"):
        return orjson.dumps({"error": message}) + b"\n"
    return b"data: " + error_body(path, 502, message, "upstream_error") + b"\n\n"


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AgentError(400, f"malformed JSON body: {exc}", "invalid_json") from None


@dataclass(slots=True)
class Call:
    """One proxied request, as the handler and the slower paths need it."""

    method: str
    path: str  # the API path without the /{domain} prefix: /v1/..., /api/NAME
    raw_path: str  # the same as the client sent it (paths.py): what the engine gets
    scope_path: str  # the path the client sent (error shapes and metrics go by it)
    domain: str
    headers: dict[str, str]  # first value of each, lower-case names
    forward: list[tuple[str, str]]  # what the engine gets
    query: str
    request_id: bytes
    status: int = 500
    started: bool = False  # the status line is out: too late to answer an error
    body: bytes = b""


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
        self._rules_read_query = any(rule.query for rule in router.rules)

    # -- the ASGI entry point --------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
        """Serve one request whose path PROXY_PATH matched, from start to metrics."""
        started = time.perf_counter()
        metrics = self.metrics
        metrics.in_flight.inc()
        headers: dict[str, str] = {}
        forward: list[tuple[str, str]] = []
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            if name not in headers:
                headers[name] = value
            if name not in DROP_REQUEST_HEADERS:
                forward.append((name, value))
        request_id = request_id_of(scope)
        if "x-request-id" not in headers:
            forward.append(("x-request-id", request_id.decode("latin-1")))
        rest = match["rest"]
        raw = scope.get("raw_path")
        raw_path = raw.decode("ascii") if raw is not None else scope["path"]  # checked: app.py
        call = Call(
            method=scope["method"],
            path="/v1/" + rest if rest is not None else "/api/" + match["name"],
            raw_path=drop_segments(raw_path, 1) if match["domain"] else raw_path,
            scope_path=scope["path"],
            domain=match["domain"] or DEFAULT_DOMAIN,
            headers=headers,
            forward=forward,
            query=scope["query_string"].decode("latin-1"),
            request_id=request_id,
        )
        try:
            await self._serve(call, scope, receive, send)
        except AgentError as exc:
            await self._send_error(call, send, exc)
        except StreamBroken:
            pass  # logged where it broke; uvicorn closes the half-sent response
        except Exception as exc:
            log.error("unhandled error", exc_info=exc)
            await self._send_error(call, send, AgentError(500, "internal error in the agent"))
        finally:
            metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = route_label(call.scope_path)
            metrics.observe(route, call.status, elapsed)
            log_request(scope, call.request_id, route, call.status, elapsed)

    async def _serve(self, call: Call, scope: Scope, receive: Receive, send: Send) -> None:
        if call.method not in PROXY_METHODS:
            raise AgentError(405, "Method Not Allowed", "method_not_allowed")
        name = None if call.path.startswith("/v1/") else call.path[5:]
        if (
            name is not None
            and name not in OLLAMA_ENDPOINTS
            and name not in OLLAMA_MODEL_MANAGEMENT
        ):
            raise AgentError(404, f"no such endpoint: {call.path}", "not_found")
        admin = name is not None and name in OLLAMA_MODEL_MANAGEMENT
        self.auth.check(call.headers, call.domain, admin=admin)  # type: ignore[arg-type]
        call.body = await self._read_body(call, receive)
        if name is None and call.method == "POST" and NOT_AN_OBJECT.match(call.body):
            # Every OpenAI operation takes an object; vLLM 0.10.2 answers valid JSON of
            # another kind ([], "x", 1) with a bare 500.
            raise AgentError(400, "the JSON body must be an object", "invalid_json")
        upstream, forward_path = self._route(call)
        translated = name is not None and await upstream.engine_kind() != "ollama"
        if not translated and (self.guardrails is None or call.path not in GUARDED):
            await self._pass_through(call, upstream, forward_path, receive, send)
            return
        # The slower paths: Starlette responses, sent with the request id added.
        if not translated:
            forward = partial(self._pass_through_response, call, upstream, forward_path)
        elif name in OLLAMA_MODEL_MANAGEMENT:
            raise AgentError(
                501,
                f"/api/{name} is not available: the engine at {upstream.url} is "
                "OpenAI-compatible and binds its model at start-up (change the engine's "
                "configuration to change models)",
                "not_implemented",
            )
        else:
            forward = partial(self._translate, call, upstream, name)
        response = await self._guarded(call.path, call.body, forward)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
                call.started = True
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, call.request_id)]
            await send(message)

        await response(scope, receive, send_with_id)

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

    async def _send_error(self, call: Call, send: Send, exc: AgentError) -> None:
        if call.started:
            log.warning("error after the answer started", extra={"error": exc.message})
            return
        body = error_body(call.scope_path, exc.status, exc.message, exc.code)
        headers = [_JSON_HEADER, (b"content-length", str(len(body)).encode())]
        if exc.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        headers.append((REQUEST_ID, call.request_id))
        call.status = exc.status
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- request side ----------------------------------------------------------------------

    async def _read_body(self, call: Call, receive: Receive) -> bytes:
        declared = call.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise self._too_large()
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):  # the usual case: one message
            if len(body) > self.max_body:
                raise self._too_large()
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise AgentError(400, "client disconnected while sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> AgentError:
        return AgentError(
            413, f"request body larger than {self.max_body} bytes", "request_too_large"
        )

    def _route(self, call: Call) -> tuple[Upstream, str]:
        router = self.router
        if not router.rules:
            return router.default, call.raw_path
        parsed: list[Any] = []

        def body_json() -> Any:
            if not parsed:
                parsed.append(parse_json(call.body) if call.body else None)
            return parsed[0]

        query = (
            dict(parse_qsl(call.query, keep_blank_values=True)) if self._rules_read_query else {}
        )
        upstream, path, _ = router.route(
            call.method, call.path, call.domain, call.headers, query, body_json, call.raw_path
        )
        return upstream, path

    # -- response side ---------------------------------------------------------------------

    async def _pass_through(
        self, call: Call, upstream: Upstream, path: str, receive: Receive, send: Send
    ) -> None:
        """The hot path: forward, then send the engine's answer as ASGI messages."""
        resp = await self._send(
            upstream, call.method, path, call.forward, call.body or None, call.query
        )
        headers = [
            (name, value) for name, value in resp.raw_headers if name.lower() not in _DROP_RESPONSE
        ]
        headers.append((REQUEST_ID, call.request_id))
        content_type = resp.headers.get("content-type", "")
        if resp.content_length is not None and not content_type.startswith(STREAM_TYPES):
            data = await self._read_whole(resp, upstream)
            headers.append((b"content-length", str(len(data)).encode()))
            call.status = resp.status
            call.started = True
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
            return
        call.status = resp.status
        call.started = True
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await self._stream(call, resp, upstream, receive, send)

    async def _stream(
        self,
        call: Call,
        resp: aiohttp.ClientResponse,
        upstream: Upstream,
        receive: Receive,
        send: Send,
    ) -> None:
        """Relay each chunk as one body message as soon as it arrives. uvicorn drops (does
        not fail) sends to a client that left, so while the relay waits for the engine a
        watcher waits for `http.disconnect` and cancels it: the engine connection is
        closed and the engine stops. The watcher (a task) starts at the first wait: a
        short answer that arrived whole costs none."""
        counter = self.metrics.chunks(route_label(call.scope_path))
        content = resp.content
        task = asyncio.current_task()
        assert task is not None
        watcher: asyncio.Future | None = None
        relaying = True
        left = False

        def client_left(_: asyncio.Future) -> None:
            nonlocal left
            if relaying:
                left = True
                task.cancel()

        ended = False
        try:
            while True:
                chunk = content.read_nowait()
                if not chunk:
                    if content.at_eof():
                        break
                    if watcher is None:
                        watcher = asyncio.ensure_future(receive())
                        watcher.add_done_callback(client_left)
                    chunk = await content.readany()
                    if not chunk:
                        break
                counter.inc()
                if content.at_eof():  # the engine is done: its last chunk ends the body too
                    relaying = False
                    ended = True
                    await send({"type": "http.response.body", "body": chunk})
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            relaying = False
        except (aiohttp.ClientError, TimeoutError) as exc:
            relaying = False
            resp.close()
            # The status line is gone: say what broke in the stream's own format (both
            # clients raise on it), then end the connection without a clean last chunk.
            error = self._upstream_failure(upstream, exc)
            log.warning("engine stream broken", extra={"target": upstream.url, "error": str(exc)})
            content_type = resp.headers.get("content-type", "")
            body = stream_error(call.scope_path, content_type, error.message)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            raise StreamBroken(error.message) from None
        except asyncio.CancelledError:
            relaying = False
            resp.close()
            if not left:
                raise  # the server is shutting down
            task.uncancel()
            return
        finally:
            relaying = False
            if watcher is not None:
                watcher.cancel()
        resp.release()
        if not ended:
            await send({"type": "http.response.body", "body": b""})

    async def _read_whole(self, resp: aiohttp.ClientResponse, upstream: Upstream) -> bytes:
        """An answer with a length, read in full; the connection goes back to the pool."""
        try:
            return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._upstream_failure(upstream, exc) from None
        finally:
            resp.release()

    async def _pass_through_response(
        self, call: Call, upstream: Upstream, path: str, body: bytes
    ) -> Response:
        """The same forwarding as a Starlette response, for the guardrails seam."""
        resp = await self._send(upstream, call.method, path, call.forward, body or None, call.query)
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in DROP_RESPONSE_HEADERS}
        content_type = resp.headers.get("content-type", "")
        if resp.content_length is not None and not content_type.startswith(STREAM_TYPES):
            data = await self._read_whole(resp, upstream)
            return Response(data, status_code=resp.status, headers=headers)
        return StreamingResponse(
            self._relay(resp, resp.content.iter_any(), call.scope_path, upstream),
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
        """Yield the engine's chunks as they come (for StreamingResponse, which cancels the
        iteration when the client leaves); on a disconnect or any error, close the engine
        connection instead of returning it."""
        counter = self.metrics.chunks(route_label(path))
        finished = False
        try:
            async for chunk in chunks:
                counter.inc()
                yield chunk
            finished = True
        except (aiohttp.ClientError, TimeoutError) as exc:
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

    async def _translate(self, call: Call, upstream: Upstream, name: str, body: bytes) -> Response:
        started = time.perf_counter()
        headers = {"content-type": JSON, "x-request-id": call.request_id.decode("latin-1")}
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
            if not isinstance(wanted, dict):
                raise AgentError(400, "the JSON body must be an object", "invalid_json")
            model = str(wanted.get("model") or wanted.get("name") or "")
            shown = translate.show_response(models, model)
            if shown is None:
                raise AgentError(404, f"model '{model}' not found", "model_not_found")
            return _json(shown)
        if call.method != "POST":
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
            self._relay(resp, ndjson, call.scope_path, upstream),
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
        err = parsed.get("error")
        if isinstance(err, dict):
            # vLLM 0.10.2 answers some refusals (embeddings from a generative model) with
            # status 200 and an error object: still an error, with the status it names.
            code = err.get("code")
            status = code if isinstance(code, int) and 400 <= code <= 599 else 502
            raise AgentError(status, str(err.get("message") or f"engine answered {status}"))
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

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
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qsl

import aiohttp
import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from . import ollama_api
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
# OpenAI-side endpoints that change what the engine serves (vLLM's runtime LoRA loading,
# when the engine enables it): admin keys, like Ollama's model management.
OPENAI_MODEL_MANAGEMENT = frozenset({"/v1/load_lora_adapter", "/v1/unload_lora_adapter"})
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
    admitted: bool = False  # counted in the concurrency limits (max_concurrency)
    buffered: int = 0  # body bytes reserved in the agent's budget (max_buffered_bytes)
    bucket: str | None = None  # the key's name, for its share of the limits


@dataclass(frozen=True)
class ProxyLimits:
    """What requests may hold once their key is checked (settings: config.py)."""

    max_body: int = 10 * 1024 * 1024  # one request body (413)
    max_concurrency: int = 256  # requests at the engines at once (503)
    max_key_concurrency: int = 128  # of them, with one key (429)
    max_buffered: int = 64 * 1024 * 1024  # request bodies held at once (503)
    max_answer: int = 32 * 1024 * 1024  # an answer the agent must hold whole (502)

    @classmethod
    def from_settings(cls, settings: Any) -> ProxyLimits:
        return cls(
            settings.max_body_bytes,
            settings.max_concurrency,
            settings.max_key_concurrency,
            settings.max_buffered_bytes,
            settings.max_answer_bytes,
        )


class Proxy:
    def __init__(
        self,
        router: Router,
        auth: Auth,
        metrics: Metrics,
        limits: ProxyLimits | None = None,
        guardrails: Guardrails | None = None,
    ) -> None:
        self.router = router
        self.auth = auth
        self.metrics = metrics
        self.limits = limits = limits or ProxyLimits()
        self.max_body = limits.max_body
        self.guardrails = guardrails
        self._rules_read_query = any(rule.query for rule in router.rules)
        self._active = 0  # requests past auth, all keys
        self._active_by_key: dict[str, int] = {}
        self._buffered = 0  # request body bytes held, all requests
        self._buffered_by_key: dict[str, int] = {}
        self._relays: set[_Relay] = set()  # requests at the engines (_pass_through)
        self._sweeper: asyncio.TimerHandle | None = None
        # A key's share of the body budget, as of the concurrency: one key's slow uploads
        # cannot take the budget every other key's requests need.
        self.max_key_buffered = (
            limits.max_buffered * limits.max_key_concurrency // limits.max_concurrency
        )

    # -- the ASGI entry point --------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send, match: re.Match) -> None:
        """Serve one request whose path PROXY_PATH matched, from start to metrics."""
        started = time.perf_counter()
        metrics = self.metrics
        metrics.started()
        headers: dict[str, str] = {}
        forward: list[tuple[str, str]] = []
        named: list[str] = []  # Connection: names more hop-by-hop headers (RFC 9110 7.6.1)
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            if name not in headers:
                headers[name] = value
            if name not in DROP_REQUEST_HEADERS and not name.startswith("proxy-"):
                forward.append((name, value))
            elif name == "connection":
                named.append(value)
        if named:
            forward = without_named(forward, named)
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
            name = self._check(call)
            await self._serve(call, name, scope, receive, send)
        except ClientLeft:
            call.status = 499  # nginx's code for it: logged, never sent
        except AgentError as exc:
            await self._send_error(call, send, exc)
        except StreamBroken:
            pass  # logged where it broke; uvicorn closes the half-sent response
        except Exception as exc:
            log.error("unhandled error", exc_info=exc)
            await self._send_error(call, send, AgentError(500, "internal error in the agent"))
        finally:
            if call.admitted:
                self._leave(call)
            if call.buffered:
                self._release(call)
            elapsed = time.perf_counter() - started
            route = route_label(call.scope_path)
            metrics.observe(route, call.status, elapsed)
            log_request(scope, call.request_id, route, call.status, elapsed)

    def _check(self, call: Call) -> str | None:
        """Method, endpoint, key and limits, before anything is read: the Ollama endpoint
        name (None for /v1/), or AgentError. An admitted request is counted out by handle."""
        if call.method not in PROXY_METHODS:
            raise AgentError(405, "Method Not Allowed", "method_not_allowed")
        name = None if call.path.startswith("/v1/") else call.path[5:]
        if (
            name is not None
            and name not in OLLAMA_ENDPOINTS
            and name not in OLLAMA_MODEL_MANAGEMENT
        ):
            raise AgentError(404, f"no such endpoint: {call.path}", "not_found")
        admin = name in OLLAMA_MODEL_MANAGEMENT or call.path in OPENAI_MODEL_MANAGEMENT
        key = self.auth.check(call.headers, call.domain, admin=admin)  # type: ignore[arg-type]
        call.bucket = key.name if key is not None else None
        self._admit(call.bucket)
        call.admitted = True
        return name

    def _leave(self, call: Call) -> None:
        self._active -= 1
        bucket = call.bucket
        if bucket is not None:
            left = self._active_by_key[bucket] - 1
            if left:
                self._active_by_key[bucket] = left
            else:
                del self._active_by_key[bucket]

    def _admit(self, bucket: str | None) -> None:
        """Count a request in, or refuse it at once: 503 when the agent holds its limit of
        requests, 429 when this key holds its share (so one key cannot take every slot)."""
        limits = self.limits
        if self._active >= limits.max_concurrency:
            raise AgentError(
                503, "the agent is at its limit of concurrent requests; retry later", "overloaded"
            )
        if bucket is not None:
            held = self._active_by_key.get(bucket, 0)
            if held >= limits.max_key_concurrency:
                raise AgentError(
                    429,
                    f"this key has {held} requests in flight, its limit; retry later",
                    "rate_limited",
                )
            self._active_by_key[bucket] = held + 1
        self._active += 1

    async def _serve(
        self, call: Call, name: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
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
                f"/api/{name} is not available: the engine is OpenAI-compatible and binds "
                "its model at start-up (change the engine's configuration to change models)",
                "not_implemented",
            )
        else:
            forward = partial(self._translate, call, upstream, name)
        # The client may leave while the engine works (a whole answer, the rails' checks):
        # then stop the engine request too.
        response = await until_client_leaves(self._guarded(call.path, call.body, forward), receive)

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
        elif exc.status in (429, 503):
            headers.append((b"retry-after", b"1"))
        headers.append((REQUEST_ID, call.request_id))
        call.status = exc.status
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- request side ----------------------------------------------------------------------

    async def _read_body(self, call: Call, receive: Receive) -> bytes:
        """The whole body, within max_body, its bytes counted in the agent's budget for
        bodies held at once (max_buffered: 503 past it) until the request ends."""
        declared = call.headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_body:
                raise self._too_large()
            self._reserve(call, int(declared))
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):  # the usual case: one message
            if len(body) > self.max_body:
                raise self._too_large()
            self._reserve(call, len(body) - call.buffered)
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientLeft
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            self._reserve(call, size - call.buffered)
            chunks.append(chunk)
        return b"".join(chunks)

    def _reserve(self, call: Call, size: int) -> None:
        if size <= 0:
            return
        if self._buffered + size > self.limits.max_buffered:
            raise AgentError(
                503, "the agent holds its limit of request bodies; retry later", "overloaded"
            )
        bucket = call.bucket
        if bucket is not None:
            held = self._buffered_by_key.get(bucket, 0)
            if held + size > self.max_key_buffered:
                raise AgentError(
                    429,
                    "this key's requests hold its share of request bodies; retry later",
                    "rate_limited",
                )
            self._buffered_by_key[bucket] = held + size
        self._buffered += size
        call.buffered += size

    def _release(self, call: Call) -> None:
        self._buffered -= call.buffered
        bucket = call.bucket
        if bucket is not None:
            left = self._buffered_by_key[bucket] - call.buffered
            if left:
                self._buffered_by_key[bucket] = left
            else:
                del self._buffered_by_key[bucket]

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
        """The hot path: forward, then relay the engine's answer chunk by chunk as ASGI
        messages. The request's read and total timeouts, and the watcher for the client
        leaving, are the sweep's (`_sweep`): aiohttp's own timers cost a timer per socket
        read, the sweep a look at each request fifty times a second. A client that leaves
        cancels the engine request (its connection closed), before the answer's headers (a
        whole generation) as well as in a stream."""
        task = asyncio.current_task()
        assert task is not None
        state = _Relay(task, receive, upstream, time.perf_counter())
        self._watch(state)
        resp = None
        sized = False
        try:
            try:
                resp = await upstream.request(
                    call.method,
                    path,
                    call.forward,
                    call.body or None,
                    call.query,
                    upstream.connect_only,
                )
            except AgentError as exc:
                self._count_failure(upstream, exc)
                raise
            state.progress += 1
            headers = response_headers(resp)
            headers.append((REQUEST_ID, call.request_id))
            length = resp.content_length
            sized = length is not None
            if sized and length <= WHOLE_ANSWER_BYTES:
                # A small answer with a length (a JSON answer): read whole, so an engine
                # that breaks off is a clean 502 and the answer goes out in one message.
                data = await self._read_whole(resp, upstream)
                headers.append((b"content-length", str(len(data)).encode()))
                call.status = resp.status
                call.started = True
                state.relaying = False
                await send(
                    {"type": "http.response.start", "status": resp.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": data})
                return
            if sized:  # larger: relayed chunk by chunk with its length, never held whole
                headers.append((b"content-length", str(length).encode()))
            call.status = resp.status
            call.started = True
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            await self._stream(call, resp, upstream, send, state, sized)
        except asyncio.CancelledError:
            state.relaying = False
            if resp is not None:
                resp.close()
            if state.expired is not None:  # the sweep: the engine took too long
                task.uncancel()
                await self._engine_failed(call, resp, upstream, send, sized, TimeoutError())
            if not state.left:
                raise  # the server is shutting down
            task.uncancel()
            raise ClientLeft from None
        finally:
            state.relaying = False
            self._relays.discard(state)
            if state.watcher is not None:
                state.watcher.cancel()

    def _watch(self, state: _Relay) -> None:
        self._relays.add(state)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)

    def _sweep(self) -> None:
        """Every SWEEP_EVERY while requests are at the engines: cancel those past their
        total timeout or silent past their read timeout (504, or a stream error once the
        answer started), and give a watcher for the client leaving to those running longer
        than WATCH_AFTER (the many quick answers never need one)."""
        now = time.perf_counter()
        for state in list(self._relays):
            if not state.relaying:
                continue
            if state.progress != state.seen:
                state.seen = state.progress
                state.quiet_since = now
            upstream = state.upstream
            if now - state.since > upstream.total_timeout:
                state.expired = "total"
            elif now - state.quiet_since > upstream.read_timeout:
                state.expired = "read"
            if state.expired is not None:
                state.relaying = False
                state.task.cancel()
            elif state.watcher is None and now - state.since >= WATCH_AFTER:
                state.watcher = asyncio.ensure_future(state.receive())
                state.watcher.add_done_callback(state.client_left)
        if self._relays:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)
        else:
            self._sweeper = None

    async def _stream(
        self,
        call: Call,
        resp: aiohttp.ClientResponse,
        upstream: Upstream,
        send: Send,
        state: _Relay,
        sized: bool,
    ) -> None:
        """Relay each chunk as one body message as soon as it arrives (uvicorn drops sends
        to a client that left; the watcher of _pass_through cancels this instead). An
        answer that arrived whole goes out as one message."""
        content = resp.content
        ended = False
        chunks = 0  # counted once, when the stream ends
        try:
            while True:
                chunk = content.read_nowait()
                if not chunk:
                    if content.at_eof():
                        break
                    chunk = await content.readany()
                    if not chunk:
                        break
                chunks += 1
                state.progress += 1
                if content.at_eof():  # the engine is done: its last chunk ends the body too
                    state.relaying = False
                    ended = True
                    await send({"type": "http.response.body", "body": chunk})
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (aiohttp.ClientError, TimeoutError) as exc:
            state.relaying = False
            resp.close()
            await self._engine_failed(call, resp, upstream, send, sized, exc)
        finally:
            self.metrics.add_chunks(route_label(call.scope_path), chunks)
        state.relaying = False
        resp.release()
        if not ended:
            await send({"type": "http.response.body", "body": b""})

    async def _engine_failed(
        self,
        call: Call,
        resp: aiohttp.ClientResponse | None,
        upstream: Upstream,
        send: Send,
        sized: bool,
        exc: BaseException,
    ) -> NoReturn:
        """The engine broke off, sent garbage or took too long: a JSON error (504/502)
        while the status line is not out; after it, what broke in the stream's own format
        (both clients raise on it) and the connection ends without a clean last chunk.
        With a length there is no room for it: the short body is the signal."""
        error = self._upstream_failure(upstream, exc)
        if not call.started:
            raise error
        log.warning("engine stream broken", extra={"target": upstream.url, "error": repr(exc)})
        if not sized and resp is not None:
            content_type = resp.headers.get("content-type", "")
            body = stream_error(call.scope_path, content_type, error.message)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        raise StreamBroken(error.message)

    async def _read_whole(self, resp: aiohttp.ClientResponse, upstream: Upstream) -> bytes:
        """An answer the agent needs whole (translation, guardrails), at most max_answer
        bytes (502 past it); the connection goes back to the pool."""
        limit = self.limits.max_answer
        try:
            if resp.content_length is not None and resp.content_length > limit:
                raise self._answer_too_large(upstream)
            data = await resp.content.read(limit + 1)
            if len(data) > limit:
                raise self._answer_too_large(upstream)
            if not resp.content.at_eof():
                data += await resp.content.read(limit + 1 - len(data))
                if len(data) > limit or not resp.content.at_eof():
                    raise self._answer_too_large(upstream)
            return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._upstream_failure(upstream, exc) from None
        finally:
            resp.release()

    def _answer_too_large(self, upstream: Upstream) -> AgentError:
        log.warning(
            "engine answer too large to hold",
            extra={"target": upstream.url, "limit": self.limits.max_answer},
        )
        self.metrics.upstream_errors.labels(upstream.url, "too_large").inc()
        return AgentError(
            502, "the engine's answer is larger than the agent holds", "upstream_error"
        )

    async def _pass_through_response(
        self, call: Call, upstream: Upstream, path: str, body: bytes
    ) -> Response:
        """The same forwarding as a Starlette response, for the guardrails seam."""
        resp = await self._send(upstream, call.method, path, call.forward, body or None, call.query)
        headers = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in response_headers(resp)
        }  # one value per name: what Starlette's Response takes
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
        finished = False
        count = 0
        try:
            async for chunk in chunks:
                count += 1
                yield chunk
            finished = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = self._upstream_failure(upstream, exc)
            log.warning("engine stream broken", extra={"target": upstream.url, "error": str(exc)})
            yield stream_error(path, resp.headers.get("content-type", ""), error.message)
            raise StreamBroken(error.message) from None
        finally:
            self.metrics.add_chunks(route_label(path), count)
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
            self._count_failure(upstream, exc)
            raise

    def _count_failure(self, upstream: Upstream, exc: AgentError) -> None:
        kind = "timeout" if exc.status == 504 else "unreachable"
        self.metrics.upstream_errors.labels(upstream.url, kind).inc()

    def _upstream_failure(self, upstream: Upstream, exc: BaseException) -> AgentError:
        """The client's error says what failed, not where or how: the engine's address and
        the parser's details go to the log only."""
        timeout = isinstance(exc, TimeoutError)
        self.metrics.upstream_errors.labels(upstream.url, "timeout" if timeout else "broken").inc()
        log.warning("engine failed", extra={"target": upstream.url, "error": repr(exc)})
        if timeout:
            return AgentError(504, "the engine timed out", "upstream_timeout")
        return AgentError(502, "the engine's answer broke off or was malformed", "upstream_error")

    # -- Ollama API on an OpenAI-compatible engine -----------------------------------------

    async def _translate(self, call: Call, upstream: Upstream, name: str, body: bytes) -> Response:
        return await ollama_api.serve(self, call, upstream, name, body)


# Answers with a length up to this are read whole before they are sent (one message, and a
# clean 502 if the engine breaks off); larger ones are relayed as they come, so what the
# agent holds per request stays bounded whatever the engine sends.
WHOLE_ANSWER_BYTES = 256 * 1024
# A request still waiting for or relaying the engine after this long (s) gets a watcher
# for the client leaving (which cancels the engine request then).
WATCH_AFTER = 0.02
# How often (s) the sweep looks at the requests at the engines (timeouts, watchers).
SWEEP_EVERY = 0.02
# Hop-by-hop response headers (RFC 9110 7.6.1), and what the agent sets itself.
_DROP_RESPONSE_ALL = _DROP_RESPONSE | {b"upgrade", b"trailer", b"te", b"proxy-connection"}


class ClientLeft(Exception):
    """The client went away before its answer was complete; nothing is left to send."""


@dataclass(slots=True, eq=False)
class _Relay:
    """One request at the engine, as the sweep sees it."""

    task: asyncio.Task | None = None
    receive: Receive | None = None
    upstream: Upstream | None = None
    since: float = 0.0  # when it went out (perf_counter)
    relaying: bool = True  # the watcher or the sweep may still cancel the request
    left: bool = False  # it did: the client went away
    expired: str | None = None  # it did: "read" or "total" timeout
    progress: int = 0  # the answer's headers and chunks as they come
    seen: int = 0  # progress at the last sweep, and since when it has not moved
    quiet_since: float = 0.0
    watcher: asyncio.Future | None = None

    def __post_init__(self) -> None:
        self.quiet_since = self.since

    def client_left(self, _: asyncio.Future) -> None:
        if self.relaying:
            self.left = True
            assert self.task is not None
            self.task.cancel()


def without_named(headers: list[tuple[str, str]], connection: list[str]) -> list[tuple[str, str]]:
    """`headers` without those a Connection header names (hop-by-hop by declaration)."""
    named = {t.strip().lower() for value in connection for t in value.split(",")}
    return [(n, v) for n, v in headers if n not in named]


def response_headers(resp: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    """The engine's headers a client may get: no hop-by-hop ones (fixed or named by its
    Connection header), no Proxy-*, none the agent sets itself."""
    kept: list[tuple[bytes, bytes]] = []
    named: set[bytes] = set()
    for name, value in resp.raw_headers:
        low = name.lower()
        if low not in _DROP_RESPONSE_ALL and not low.startswith(b"proxy-"):
            kept.append((name, value))
        elif low == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    if named:  # rare: an engine that names more hop-by-hop headers
        return [(name, value) for name, value in kept if name.lower() not in named]
    return kept


async def until_client_leaves(work: Awaitable[Any], receive: Receive) -> Any:
    """`work`'s result, unless the client leaves first: then `work` is cancelled (closing
    its engine connection) and ClientLeft raised. The body has been read: the next ASGI
    message can only say that the client left. `work` runs in this task (no hop through
    another one before the answer is relayed)."""
    task = asyncio.current_task()
    assert task is not None
    state = _Relay(task)
    watcher = asyncio.ensure_future(receive())
    watcher.add_done_callback(state.client_left)
    try:
        return await work
    except asyncio.CancelledError:
        if not state.left:
            raise
        task.uncancel()
        raise ClientLeft from None
    finally:
        state.relaying = False
        watcher.cancel()

"""What a connection may cost before any key is checked: uvicorn's httptools protocol with
the bounds it lacks.

uvicorn (0.40 in Buildroot, newer on PyPI) bounds the idle time between requests
(`timeout_keep_alive`) but not a request head: httptools buffers any URL and header size,
a connection that sends nothing or a byte a minute is kept for ever, and the number of
connections is limited only by file descriptors. `BoundedHttpToolsProtocol` adds, at the
one place every byte passes (`data_received`):

- a head size limit: past `max_head_bytes` (request line and headers) the answer is 431
  and the connection is closed; at most one read (256 KiB) more is ever held;
- a header-read timeout: a head must be complete `header_timeout` seconds after the
  connection opened or the request's first byte arrived, or the connection gets 408 and
  is closed (this also ends connections that never send anything);
- a connection cap: past `max_connections` open connections, a new one gets 503 at once
  and is closed, so half-open connections cannot exhaust the process's descriptors;
- and, through the loop it runs on (`bounded_loop`), a TLS handshake bounded by the
  header-read timeout too.

Everything else (parsing, flow control, keep-alive, pipelining) stays uvicorn's. The
limits come from Settings (`configure`, called by create_app in every worker process).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("cube_agent.server")


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    max_connections: int = 1024


LIMITS = Limits()
# Descriptors besides client connections: one upstream connection per client connection at
# most, plus files, the key file, logs, the event loop's own.
SPARE_DESCRIPTORS = 1024


def configure(settings: Any) -> None:
    global LIMITS
    LIMITS = Limits(settings.max_head_bytes, settings.header_timeout, settings.max_connections)
    raise_descriptor_limit(2 * settings.max_connections + SPARE_DESCRIPTORS)


def raise_descriptor_limit(wanted: int) -> None:
    """The soft RLIMIT_NOFILE up to `wanted` (the unit's LimitNOFILE sets both; a shell may
    not): a cap of N connections is only real if N+ descriptors are there to accept them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted or soft == resource.RLIM_INFINITY:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < wanted:
        log.warning(
            "the descriptor limit is below what the connection cap needs",
            extra={"nofile": new, "needed": wanted},
        )


def bounded_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's own loop (uvloop when installed) whose TLS listeners give a client
    `header_timeout` seconds for its handshake: the event loop's default is 60 s, and a
    connection reaches the protocol (the cap, the head timer) only once it is done, so a
    silent TLS client held a descriptor for a minute. uvicorn takes it as `loop`."""
    from uvicorn.loops.auto import auto_loop_factory

    loop = auto_loop_factory(use_subprocess=False)()
    create_server = loop.create_server

    async def create_bounded_server(*args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", LIMITS.header_timeout)
        return await create_server(*args, **kwargs)

    loop.create_server = create_bounded_server  # type: ignore[method-assign]
    return loop


def _answer(status: int, reason: str, code: str, message: str) -> bytes:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = orjson.dumps({"error": {"message": message, "type": kind, "code": code}})
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a head size limit, a header-read timeout and a connection cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = LIMITS
        self._in_head = True  # between requests or inside a head: the limits apply
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._read_bytes = 0  # the size of the read being parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            log.warning("connection refused: at the connection cap", extra={"client": self.client})
            self._refuse(503, "Service Unavailable", "too_many_connections", "too many connections")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._read_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self.transport.is_closing():  # refused by a callback (431)
                return
            log.info("invalid HTTP request", extra={"client": self.client})
            self._refuse(400, "Bad Request", "invalid_request", "invalid HTTP request")
            return
        if self._in_head:  # the read ended inside a head (or between requests)
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_head_bytes:
                self._head_too_large()
            elif self._head_timer is None:  # a request's first bytes on a kept-alive one
                self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        # The earlier reads of this head and the current one bound its size; only when
        # they could pass the limit is it measured exactly (the read may carry body too).
        limit = self._limits.max_head_bytes
        if self._head_bytes + self._read_bytes > limit:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > limit:
                self._head_too_large()
                raise _Refused  # stops the parser: no request is made of this head
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next head now (unless a pipelined request is already in).
        self._in_head = self.cycle is None or self.cycle.response_complete
        self._head_bytes = 0

    # -- helpers ---------------------------------------------------------------------------

    def _head_too_large(self) -> None:
        limit = self._limits.max_head_bytes
        log.info("request head too large", extra={"client": self.client, "limit": limit})
        self._refuse(
            431,
            "Request Header Fields Too Large",
            "head_too_large",
            f"request line and headers larger than {limit} bytes",
        )

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._limits.header_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0 and not self._started_a_head():
            self.transport.close()  # an idle connection: nothing to answer
            return
        log.info("request head not received in time", extra={"client": self.client})
        self._refuse(408, "Request Timeout", "header_timeout", "request head not received in time")

    def _started_a_head(self) -> bool:
        return bool(self.headers) or bool(getattr(self, "url", b""))

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        self._cancel_head_timer()
        self._in_head = False
        if not self.transport.is_closing():
            self.transport.write(_answer(status, reason, code, message))
            self.transport.close()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""

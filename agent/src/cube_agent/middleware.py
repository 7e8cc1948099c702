"""Request id, metrics and access log: inline in the proxy's handler, and as one pure-ASGI
middleware (no BaseHTTPMiddleware: no task or copy per chunk) for FastAPI's endpoints."""

from __future__ import annotations

import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics, route_label

log = logging.getLogger("cube_agent.access")

REQUEST_ID = b"x-request-id"


def request_id_of(scope: Scope) -> bytes:
    """The client's X-Request-ID (at most 128 bytes), or a new random one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            return value[:128] or new_request_id()
    return new_request_id()


def new_request_id() -> bytes:
    return os.urandom(16).hex().encode()  # as random as uuid4().hex, a third of the time


def log_request(scope: Scope, request_id: bytes, route: str, status: int, seconds: float) -> None:
    """One access-log line: errors only at the default level (successes are DEBUG)."""
    if status >= 500:
        level = logging.WARNING
    elif status >= 400:
        level = logging.INFO
    else:
        level = logging.DEBUG
    if log.isEnabledFor(level):
        log.log(
            level,
            "request",
            extra={
                "request_id": request_id.decode("latin-1"),
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": (scope.get("client") or ("", 0))[0],
            },
        )


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        scope["headers"] = [
            *(h for h in scope["headers"] if h[0] != REQUEST_ID),
            (REQUEST_ID, request_id),
        ]
        scope.setdefault("state", {})["request_id"] = request_id.decode("latin-1")
        status = 500
        metrics = self.metrics
        metrics.started()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = route_label(scope["path"])
            metrics.observe(route, status, elapsed)
            log_request(scope, request_id, route, status, elapsed)

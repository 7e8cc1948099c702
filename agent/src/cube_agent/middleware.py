"""The one middleware every request crosses: request id, metrics, access log.

Pure ASGI (no BaseHTTPMiddleware): it wraps `send` and adds no task or copy per chunk.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import StreamBroken
from .metrics import Metrics, route_label

log = logging.getLogger("cube_agent.access")

REQUEST_ID = b"x-request-id"


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = b""
        for name, value in scope["headers"]:
            if name == REQUEST_ID:
                request_id = value[:128]
                break
        if not request_id:
            request_id = uuid.uuid4().hex.encode()
            scope["headers"] = [*scope["headers"], (REQUEST_ID, request_id)]
        scope.setdefault("state", {})["request_id"] = request_id.decode("latin-1")
        status = 500
        metrics = self.metrics
        metrics.in_flight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except StreamBroken:
            pass  # logged where it broke; uvicorn closes the half-sent response
        finally:
            metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = route_label(scope["path"])
            metrics.observe(route, status, elapsed)
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
                        "duration_ms": round(elapsed * 1000, 3),
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )

"""One exception type for every failure a client sees, rendered to JSON in one place.

Two shapes, chosen by path: the Ollama-native API (`/api/...`, with or without a domain
prefix) answers `{"error": "message"}`, which is what Ollama clients parse; everything else
answers OpenAI's `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    501: "not_implemented_error",
    502: "upstream_error",
    503: "upstream_error",
    504: "upstream_timeout",
}


class AgentError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class StreamBroken(Exception):
    """The engine failed after the answer had started; the middleware ends the connection."""


def is_ollama_path(path: str) -> bool:
    parts = path.split("/", 3)  # "", first segment, second segment, rest
    return len(parts) > 2 and (parts[1] == "api" or (len(parts) > 3 and parts[2] == "api"))


def error_body(path: str, status: int, message: str, code: str | None = None) -> bytes:
    if is_ollama_path(path):
        return orjson.dumps({"error": message})
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code}})


def error_response(path: str, exc: AgentError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return Response(
        error_body(path, exc.status, exc.message, exc.code),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


async def send_error(
    send: Send, path: str, exc: AgentError, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer `exc` with plain ASGI messages (no framework on the way)."""
    body = error_body(path, exc.status, exc.message, exc.code)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        head.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": body})


async def handle_agent_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentError)
    return error_response(request.url.path, exc)

"""What browsers and Ollama's health checks need before any API call: `GET /` and `HEAD /`
answer 200 "Ollama is running" (Ollama's root route, which its Go client's `Heartbeat()`
and many health checks call), and CORS on every path.

CORS follows Ollama 0.12.3 (routes.go GenerateRoutes, envconfig.AllowedOrigins, gin-contrib
cors with wildcards and browser extensions): `UV_CUBE_AGENT_ORIGINS` is OLLAMA_ORIGINS, a
comma-separated list of origins with at most one `*` each, added to the defaults (localhost,
127.0.0.1 and 0.0.0.0 over http and https on any port, and app://, file://, tauri://,
vscode-webview://, vscode-file://). A request whose Origin is neither its own host nor
allowed is 403; an allowed preflight (`OPTIONS`) is 204 with the Access-Control headers,
answered before authentication (browsers send no key on a preflight); other answers to an
allowed origin carry `Access-Control-Allow-Origin`, and the Origin header is not
forwarded (the agent decided; Ollama behind it would judge again by its own list). Requests
without Origin (every non-browser client) are untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCHEMES = (
    "http://",
    "https://",
    "chrome-extension://",
    "safari-extension://",
    "moz-extension://",
    "ms-browser-extension://",
)
DEFAULT_ORIGINS = [
    f"{scheme}://{host}{port}"
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for scheme in ("http", "https")
    for port in ("", ":*")
] + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
# The headers Ollama allows, and the agent's own.
ALLOW_HEADERS = (
    "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,X-Stainless-Arch,"
    "X-Stainless-Async,X-Stainless-Custom-Poll-Interval,X-Stainless-Helper-Method,"
    "X-Stainless-Lang,X-Stainless-Os,X-Stainless-Package-Version,X-Stainless-Poll-Helper,"
    "X-Stainless-Retry-Count,X-Stainless-Runtime,X-Stainless-Runtime-Version,X-Stainless-Timeout,"
    "X-Request-Id"
)
ALLOW_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
HEARTBEAT = b"Ollama is running"


class OriginError(ValueError):
    pass


class Origins:
    """Which browser origins may call the agent (OLLAMA_ORIGINS semantics)."""

    def __init__(self, configured: str = "") -> None:
        origins = [o.strip() for o in configured.split(",") if o.strip()] + DEFAULT_ORIGINS
        self.allow_all = "*" in origins
        self.exact: set[str] = set()
        self.wildcards: list[tuple[str, str]] = []
        for origin in origins:
            if "*" not in origin and not origin.startswith(SCHEMES):
                raise OriginError(
                    f"bad origin {origin!r}: origins must contain '*' or begin with "
                    + ", ".join(SCHEMES)
                )
            if origin.count("*") > 1:
                raise OriginError(f"bad origin {origin!r}: only one * is allowed")
            if "*" in origin:
                head, _, tail = origin.partition("*")
                self.wildcards.append((head.lower(), tail.lower()))
            else:
                self.exact.add(origin.lower())

    def allowed(self, origin: str) -> bool:
        origin = origin.lower()
        if self.allow_all or origin in self.exact:
            return True
        return any(origin.startswith(h) and origin.endswith(t) for h, t in self.wildcards)

    def headers(self, origin: bytes, preflight: bool) -> list[tuple[bytes, bytes]]:
        value = b"*" if self.allow_all else origin
        out = [(b"access-control-allow-origin", value)]
        if not self.allow_all:
            out.append((b"vary", b"Origin"))
        if preflight:
            out += [
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"43200"),
            ]
        return out


async def _answer(send: Send, status: int, headers: list, body: bytes = b"") -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Browser:
    """ASGI wrapper: heartbeat and CORS in front of `app`."""

    def __init__(self, app: ASGIApp, origins: Origins) -> None:
        self.app = app
        self.origins = origins

    @staticmethod
    def untouched(scope: Scope) -> bool:
        """Whether this stage leaves the request alone (not a preflight, not the root, no
        Origin): every API client's request, which then skips it. One C-level dict build
        instead of a loop over the headers."""
        return scope["type"] != "http" or (
            scope["method"] != "OPTIONS"
            and scope["path"] != "/"
            and b"origin" not in dict(scope["headers"])
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        origin = host = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"host":
                host = value
        cors: list[tuple[bytes, bytes]] = []
        if (
            origin is not None
            and host is not None
            and origin in (b"http://" + host, b"https://" + host)
        ):
            origin = None  # same origin: no CORS
        if origin is not None:
            if not self.origins.allowed(origin.decode("latin-1")):
                await _answer(send, 403, [(b"content-type", b"text/plain")], b"origin not allowed")
                return
            cors = self.origins.headers(origin, preflight=method == "OPTIONS")
        if method == "OPTIONS":
            await _answer(send, 204, cors)
            return
        if scope["path"] == "/" and method in ("GET", "HEAD"):
            text = [(b"content-type", b"text/plain; charset=utf-8")]
            await _answer(send, 200, text + cors, HEARTBEAT if method == "GET" else b"")
            return
        if not cors:
            await self.app(scope, receive, send)
            return
        # Allowed here: the engine behind (Ollama has CORS of its own) must not judge again.
        scope = {**scope, "headers": [h for h in scope["headers"] if h[0] != b"origin"]}

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)

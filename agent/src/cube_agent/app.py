"""The application: `create_app(settings)` wires config, keys, routing, proxy and metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from . import __version__, server
from .auth import Auth
from .browser import Browser, Origins
from .config import ConfigError, Settings, load_settings
from .errors import AgentError, error_response, handle_agent_error, send_error
from .keys import KeyFile, KeyFileError
from .logs import setup_logging
from .metrics import Metrics
from .middleware import REQUEST_ID, RequestContext, log_request, request_id_of
from .paths import PathError, canonical_path, check_query
from .proxy import PROXY_PATH, Proxy, ProxyLimits
from .routing import Router

log = logging.getLogger("cube_agent")


def load_files(settings: Settings) -> tuple[Router, KeyFile | None]:
    """The routes file and the key file; a bad one raises ConfigError (one line)."""
    router = Router.from_settings(settings)
    if not settings.auth:
        return router, None
    try:
        return router, KeyFile.load(settings.key_file)
    except KeyFileError as exc:
        raise ConfigError(f"UV_CUBE_AGENT_KEY_FILE={settings.key_file}: {exc}") from None


# Container objects allocated (net) before a young-generation collection.
YOUNG_GC_THRESHOLD = 10_000


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process (`UV_CUBE_AGENT_WORKERS` > 1): each builds its
    own from the environment the CLI checked and passed on."""
    from .tls import from_environment

    settings = load_settings()
    setup_logging(settings.log_level)
    return create_app(settings, tls_spki=from_environment())


def create_app(settings: Settings, tls_spki: bytes | None = None) -> FastAPI:
    """Build the app; a bad routes file or key file raises ConfigError (one line).

    `tls_spki` is the SubjectPublicKeyInfo (DER) of the key the HTTPS listener serves:
    `POST /attestation` binds it into every report (tls.py); None when serving plain HTTP."""
    router, keys = load_files(settings)
    server.configure(settings)  # the connection limits of this process's listeners
    if keys is None:
        log.warning("authentication is OFF (UV_CUBE_AGENT_AUTH=off): every request is allowed")
    auth = Auth(keys)
    metrics = Metrics()
    guardrails = None
    if settings.guardrails_config is not None:
        from .guardrails import Guardrails  # only when on: NeMo Guardrails is a heavy import

        guardrails = Guardrails.from_settings(settings, registry=metrics.registry)
    proxy = Proxy(router, auth, metrics, ProxyLimits.from_settings(settings), guardrails)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for upstream in router.upstreams.values():
            await upstream.start()
        # Everything alive now (modules, the app, settings) lives as long as the process:
        # move it out of the collector's sight. Without this each full collection walks
        # those objects again: up to 50 ms a pause under load, measured (issue 9 p99).
        gc.collect()
        gc.freeze()
        # A request makes almost no reference cycles, but with 32 in flight the default
        # young-generation threshold (700) catches their live objects every ~10 requests:
        # ~25 us a request went to collections that freed nothing (measured, make bench).
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        log.info(
            "cube agent started",
            extra={"targets": list(router.upstreams), "rules": len(router.rules)},
        )
        try:
            yield
        finally:
            for upstream in router.upstreams.values():
                await upstream.close()
            metrics.close()

    app = AgentApp(
        title="Cube agent",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads from a CDN: useless in an air-gapped VM
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.tls_spki = tls_spki
    app.state.router = router
    app.state.metrics = metrics
    app.add_middleware(RequestContext, metrics=metrics)
    app.add_exception_handler(AgentError, handle_agent_error)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(request.url.path, AgentError(exc.status_code, str(exc.detail)))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return error_response(request.url.path, AgentError(500, "internal error in the agent"))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)

    def admin_key(request: Request) -> None:
        auth.check(request.headers, None, admin=True)

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Alive. Needs no key."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    async def ready() -> Response:
        """Every engine reachable (200) or not (503). Needs no key."""
        upstreams = list(router.upstreams.values())
        results = await asyncio.gather(*(u.ready() for u in upstreams))
        ok = all(results)
        return JSONResponse(
            {
                "status": "ready" if ok else "unavailable",
                "engines_ready": sum(results),
                "engines": len(results),
            },
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["operations"], dependencies=[Depends(admin_key)])
    async def prometheus() -> Response:
        """Prometheus metrics. Needs an admin key (Prometheus: `authorization` in the scrape)."""
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.get("/admin/routes", tags=["operations"], dependencies=[Depends(admin_key)])
    async def routes() -> dict[str, Any]:
        """The routing rules in priority order and the default target. Needs an admin key."""
        return router.describe()

    # Open like /health: a relying party checks the evidence BEFORE it trusts this
    # connection with its API key (attestation.py bounds what an anonymous caller costs).
    attestation = _attestation_router()
    if attestation is not None:
        app.include_router(attestation)

    app.proxy = proxy
    app.browser = Browser(app.serve, Origins(settings.origins))
    return app


def raw_path_of(scope: Scope) -> bytes:
    """The path as the client sent it. A server that gives no raw_path gives only the
    decoded one: then an escape in it cannot be told from a decoded "%" (refused)."""
    raw = scope.get("raw_path")
    if raw is None:
        raw = scope["path"].encode()
        if b"%" in raw:
            raise PathError("the path cannot be checked (no raw path from the server)")
    return raw


async def refuse(scope: Scope, send: Send, exc: AgentError) -> None:
    """An error before any route: the agent's JSON error, request id, access log."""
    request_id = request_id_of(scope)
    log_request(scope, request_id, "other", exc.status, 0.0)
    await send_error(send, scope["path"], exc, [(REQUEST_ID, request_id)])


class AgentApp(FastAPI):
    """The one ASGI callable: proxy paths go straight to `Proxy.handle` (plain ASGI, see
    proxy.py for why); everything else (operations, attestation, the schema) is FastAPI."""

    proxy: Proxy | None = None
    browser: Browser | None = None  # GET / and CORS (browser.py), in front of serve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Every decision below, FastAPI's routes included, is made on this one path;
            # the proxy forwards its raw form (paths.py).
            try:
                scope["path"] = canonical_path(raw_path_of(scope))
                check_query(scope["query_string"])
            except PathError as exc:
                await refuse(scope, send, AgentError(400, str(exc), "invalid_path"))
                return
        if self.browser is not None and not self.browser.untouched(scope):
            await self.browser(scope, receive, send)
        else:
            await self.serve(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.proxy is not None:
            match = PROXY_PATH.fullmatch(scope["path"])
            if match is not None:
                await self.proxy.handle(scope, receive, send, match)
                return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            schema["paths"].update(proxy_operations())
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
                "type": "http",
                "scheme": "bearer",
            }
        return self.openapi_schema  # type: ignore[return-value]


# The proxy operations for the schema only (Proxy.handle serves them): method, path, summary.
PROXY_OPERATIONS = [
    ("post", "/v1/chat/completions", "OpenAI chat completion (SSE when stream is true)"),
    ("post", "/v1/completions", "OpenAI text completion (SSE when stream is true)"),
    ("post", "/v1/embeddings", "OpenAI embeddings"),
    ("get", "/v1/models", "OpenAI model list"),
    ("post", "/api/chat", "Ollama chat (NDJSON stream unless stream is false)"),
    ("post", "/api/generate", "Ollama generate (NDJSON stream unless stream is false)"),
    ("get", "/api/tags", "Ollama model list"),
    ("post", "/api/show", "Ollama model details"),
    ("post", "/api/embed", "Ollama embeddings"),
    ("post", "/api/embeddings", "Ollama embeddings (legacy)"),
    ("get", "/api/ps", "Ollama running models"),
    ("get", "/api/version", "Ollama version (OpenAI-only engines: the Ollama API followed)"),
    ("post", "/api/pull", "Ollama model download, streamed progress (admin key; Ollama only)"),
    ("delete", "/api/delete", "Ollama model removal (admin key; Ollama only)"),
]


def proxy_operations() -> dict[str, Any]:
    """OpenAPI path items for the proxy endpoints, with and without the /{domain} prefix.
    Bodies are the engine API's own (passed through), so they are described as objects."""
    error = {
        "description": "error: OpenAI `{error: {message, type, code}}` under /v1, "
        "Ollama `{error}` under /api"
    }
    domain = {"name": "domain", "in": "path", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Any] = {}
    for method, path, summary in PROXY_OPERATIONS:
        for prefix in ("", "/{domain}"):
            op: dict[str, Any] = {
                "tags": ["openai" if path.startswith("/v1/") else "ollama"],
                "summary": summary + (" in a domain" if prefix else ""),
                "operationId": re.sub(r"\W+", "_", f"{method}{prefix}{path}"),
                "security": [{"apiKey": []}],
                "parameters": [domain] if prefix else [],
                "responses": {
                    "200": {"description": "the engine's answer"},
                    **{code: error for code in ("400", "401", "403", "413", "502", "504")},
                },
            }
            if method == "post" or path == "/api/delete":
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            paths.setdefault(prefix + path, {})[method] = op
    return paths


def _attestation_router() -> Any:
    """The CVM attestation endpoint, when that module is part of this install."""
    try:
        from .attestation import router
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.attestation":
            raise
        return None
    return router

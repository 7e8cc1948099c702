"""The application: `create_app(settings)` wires config, keys, routing, proxy and metrics."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.routing import Router as StarletteRouter
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .auth import Auth
from .config import ConfigError, Settings
from .errors import AgentError, error_response, handle_agent_error
from .keys import KeyFile, KeyFileError
from .metrics import Metrics
from .middleware import RequestContext
from .proxy import Proxy
from .routing import Router

log = logging.getLogger("cube_agent")

PROXY_METHODS = ["GET", "POST", "DELETE", "HEAD"]


def create_app(settings: Settings) -> FastAPI:
    """Build the app; a bad routes file or key file raises ConfigError (one line)."""
    router = Router.from_settings(settings)
    if settings.auth:
        try:
            keys: KeyFile | None = KeyFile.load(settings.key_file)
        except KeyFileError as exc:
            raise ConfigError(f"UV_CUBE_AGENT_KEY_FILE={settings.key_file}: {exc}") from None
    else:
        keys = None
        log.warning("authentication is OFF (UV_CUBE_AGENT_AUTH=off): every request is allowed")
    auth = Auth(keys)
    metrics = Metrics()
    guardrails = None
    if settings.guardrails_config is not None:
        from .guardrails import Guardrails  # only when on: NeMo Guardrails is a heavy import

        guardrails = Guardrails.from_settings(settings, registry=metrics.registry)
    proxy = Proxy(router, auth, metrics, settings.max_body_bytes, guardrails)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for upstream in router.upstreams.values():
            await upstream.start()
        log.info(
            "cube agent started",
            extra={"targets": list(router.upstreams), "rules": len(router.rules)},
        )
        try:
            yield
        finally:
            for upstream in router.upstreams.values():
                await upstream.close()

    app = AgentApp(
        title="Cube agent",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads from a CDN: useless in an air-gapped VM
        redoc_url=None,
    )
    app.state.settings = settings
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

    def any_key(request: Request) -> None:
        auth.check(request.headers, None)

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
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/routes", tags=["operations"], dependencies=[Depends(admin_key)])
    async def routes() -> dict[str, Any]:
        """The routing rules in priority order and the default target. Needs an admin key."""
        return router.describe()

    attestation = _attestation_router()
    if attestation is not None:
        app.include_router(attestation, dependencies=[Depends(any_key)])

    proxy_routes = [
        Route(prefix + path, endpoint, methods=PROXY_METHODS)
        for prefix in ("", "/{domain}")
        for path, endpoint in (("/v1/{rest:path}", proxy.openai), ("/api/{name}", proxy.ollama))
    ]
    app.proxy_app = RequestContext(JsonErrors(StarletteRouter(proxy_routes)), metrics=metrics)
    return app


# /v1/..., /api/NAME, with or without a /{domain} prefix.
PROXY_PATH = re.compile(r"^/(?:[^/]+/)?(?:v1/|api/[^/]+$)")


class AgentApp(FastAPI):
    """FastAPI serves the operations endpoints, the attestation router and the schema; the
    proxy endpoints go straight to their own small router with one middleware, skipping
    FastAPI's middleware stack, which profiling showed to be most of the per-request cost."""

    proxy_app: ASGIApp | None = None

    def build_middleware_stack(self) -> ASGIApp:
        full = super().build_middleware_stack()
        proxy_app = self.proxy_app
        if proxy_app is None:
            return full

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and PROXY_PATH.match(scope["path"]):
                await proxy_app(scope, receive, send)
            else:
                await full(scope, receive, send)

        return dispatch


class JsonErrors:
    """AgentError (and Starlette's 404/405) as JSON, for the proxy router."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
            return
        except AgentError as exc:
            response = error_response(scope["path"], exc)
        except StarletteHTTPException as exc:
            response = error_response(scope["path"], AgentError(exc.status_code, str(exc.detail)))
        await response(scope, receive, send)


def _attestation_router() -> Any:
    """The CVM attestation endpoint, when that module is part of this install."""
    try:
        from .attestation import router
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.attestation":
            raise
        return None
    return router

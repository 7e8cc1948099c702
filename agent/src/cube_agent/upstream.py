"""Engines the agent forwards to: one pooled aiohttp session per target.

aiohttp rather than httpx: measured here (docs: /work/shared/NOTES.md), httpx 0.28's
AsyncClient falls to ~0.56k req/s at 32 connections where aiohttp's pool keeps ~5k, and
Buildroot packages python-aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from .errors import AgentError

log = logging.getLogger("cube_agent.upstream")

EngineKind = Literal["ollama", "openai"]

# Never forwarded: hop-by-hop headers, the client's key to the agent, and lengths aiohttp or
# uvicorn recompute.
DROP_REQUEST_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "authorization",
        "expect",  # uvicorn answered 100-continue itself
    }
)
DROP_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "date",
        "server",
        "x-request-id",
    }
)


class _ExactHeaders(aiohttp.ClientRequest):
    """A request with the client's headers only: none of aiohttp's defaults (Accept,
    Accept-Encoding: gzip, User-Agent) is added. aiohttp's own way, skip_auto_headers,
    builds two multidicts per request to do it (measured: ~1 % of the proxy's CPU)."""

    def update_auto_headers(self, skip_auto_headers: object) -> None:
        return None


class Upstream:
    """One engine: its base URL, its kind (set or detected once) and its connection pool."""

    def __init__(
        self,
        url: str,
        engine: str,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
        pool_size: int = 256,
    ) -> None:
        self.url = url.rstrip("/")
        self.base_path = urlsplit(self.url).path
        self.origin = self.url[: len(self.url) - len(self.base_path)]
        self.configured = engine
        self.kind: EngineKind | None = None if engine == "auto" else engine  # type: ignore[assignment]
        self.timeout = aiohttp.ClientTimeout(
            total=total_timeout, connect=connect_timeout, sock_read=read_timeout
        )
        # The proxy's hot path keeps the read and total timeouts itself (proxy.py, _sweep)
        # and leaves aiohttp only the connect timeout.
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.connect_only = aiohttp.ClientTimeout(connect=connect_timeout)
        self.probe_timeout = aiohttp.ClientTimeout(total=connect_timeout + 2)
        # As many connections as the agent admits requests (UV_CUBE_AGENT_MAX_CONCURRENCY):
        # an admitted request never waits for a pooled connection.
        self.pool_size = pool_size
        self.session: aiohttp.ClientSession | None = None
        self._detect_lock = asyncio.Lock()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.pool_size, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300
        )
        # Bodies pass through as the engine sent them (compressed or not); aiohttp adds no
        # header of its own (_ExactHeaders), so the agent's own requests get plain JSON back.
        # No cookie jar: a cookie the engine sets is its client's (in the answer), never
        # sent again with another client's request.
        self.session = aiohttp.ClientSession(
            base_url=self.origin,
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self.timeout,
            auto_decompress=False,
            request_class=_ExactHeaders,
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | list[tuple[str, str]],
        body: bytes | None,
        query: str = "",
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request; connection failures become 502, timeouts 504 (`timeout`: the
        upstream's own connect, read and total timeouts unless given).

        `path` and `query` are sent byte for byte (checked by paths.py): encoded=True, so
        yarl neither decodes escapes nor removes dot segments on the way out."""
        assert self.session is not None, "Upstream.start() not called"
        target = URL(
            self.origin + self.base_path + path + ("?" + query if query else ""), encoded=True
        )
        try:
            return await self.session.request(
                method,
                target,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=timeout or self.timeout,
            )
        except TimeoutError:
            log.warning("engine timed out", extra={"target": self.url})
            raise AgentError(504, "the engine timed out", "upstream_timeout") from None
        except aiohttp.ClientError as exc:
            # The client learns what failed; where and how (address, errno) is logged.
            log.warning("engine unreachable", extra={"target": self.url, "error": repr(exc)})
            raise AgentError(502, "the engine is unreachable", "upstream_unreachable") from None

    async def engine_kind(self) -> EngineKind:
        """The engine's API family: Ollama answers /api/version, OpenAI servers /v1/models."""
        if self.kind is not None:
            return self.kind
        async with self._detect_lock:
            if self.kind is None:
                self.kind = await self._probe()
                log.info("engine detected", extra={"target": self.url, "engine": self.kind})
        return self.kind

    async def _probe(self) -> EngineKind:
        assert self.session is not None
        reached = False
        for path, kind in (("/api/version", "ollama"), ("/v1/models", "openai")):
            try:
                async with self.session.get(
                    self.base_path + path, timeout=self.probe_timeout
                ) as resp:
                    reached = True
                    if resp.status == 200:
                        data = await resp.json(content_type=None)
                        if kind == "openai" or (isinstance(data, dict) and "version" in data):
                            return kind  # type: ignore[return-value]
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
        if reached:
            log.warning("engine of unknown kind", extra={"target": self.url})
            raise AgentError(502, "the engine answers neither /api/version nor /v1/models")
        log.warning("engine unreachable", extra={"target": self.url})
        raise AgentError(502, "the engine is unreachable", "upstream_unreachable")

    async def ready(self) -> bool:
        try:
            kind = await self.engine_kind()
            path = "/api/version" if kind == "ollama" else "/v1/models"
            assert self.session is not None
            async with self.session.get(self.base_path + path, timeout=self.probe_timeout) as r:
                return r.status == 200
        except (AgentError, aiohttp.ClientError, TimeoutError):
            return False

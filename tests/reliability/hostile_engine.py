"""An OpenAI-style engine that misbehaves on purpose (tests only), and records what reached it.

    python hostile_engine.py PORT

- `POST /v1/chat/completions`: waits `{"delay": S}` seconds before any header (a long
  non-streamed generation), then answers; counts started, finished and cancelled ones.
- `GET /v1/big?mb=N`: N MiB with a Content-Length, in 1 MiB writes.
- `GET /v1/hop`: an answer carrying every hop-by-hop header, and one its Connection names.
- `GET /v1/cookie`: an answer that sets a cookie (an engine's session, for one client).
- `GET /v1/models`: a model list; every request's headers are kept.
- `GET /stats`: the counters and the last request's headers (not proxied: the agent has no
  such route).
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

stats = {"started": 0, "finished": 0, "cancelled": 0, "last_headers": {}}


async def chat(request: web.Request) -> web.Response:
    stats["last_headers"] = dict(request.headers)
    body = await request.json()
    stats["started"] += 1
    try:
        await asyncio.sleep(float(body.get("delay", 0)))
    except asyncio.CancelledError:
        stats["cancelled"] += 1
        raise
    stats["finished"] += 1
    return web.json_response(
        {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "ok"}}]}
    )


async def big(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("mb", "1")) * 1024 * 1024
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.content_length = size
    await resp.prepare(request)
    block = b"x" * (1024 * 1024)
    sent = 0
    try:
        while sent < size:
            await resp.write(block[: size - sent])
            sent += len(block)
    except (ConnectionResetError, asyncio.CancelledError):
        return resp
    return resp


async def hop(request: web.Request) -> web.Response:
    stats["last_headers"] = dict(request.headers)
    resp = web.json_response({"ok": True})
    resp.headers["Connection"] = "keep-alive, X-Engine-Secret"
    resp.headers["X-Engine-Secret"] = "internal"
    resp.headers["Keep-Alive"] = "timeout=5"
    resp.headers["Upgrade"] = "h2c"
    resp.headers["Trailer"] = "X-Checksum"
    resp.headers["Proxy-Authenticate"] = "Basic"
    resp.headers["X-Kept"] = "yes"
    return resp


async def cookie(request: web.Request) -> web.Response:
    stats["last_headers"] = dict(request.headers)
    resp = web.json_response({"ok": True})
    resp.set_cookie("engine-session", "for-the-first-client", path="/")
    return resp


async def models(request: web.Request) -> web.Response:
    stats["last_headers"] = dict(request.headers)
    return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(stats)


def main() -> None:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/big", big)
    app.router.add_get("/v1/hop", hop)
    app.router.add_get("/v1/cookie", cookie)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/health", lambda r: web.json_response({"status": "ok"}))
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        print=None,
        access_log=None,
        handler_cancellation=True,  # a request whose client left is cancelled, as in engines
    )


if __name__ == "__main__":
    main()

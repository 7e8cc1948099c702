"""Contender 3, the Python floor: a bare pass-through proxy in a raw ASGI app.

No auth, no routing, no metrics: what any Python proxy on uvicorn + uvloop + httptools
with an aiohttp client costs at least. The engine's base URL comes from BENCH_TARGET_URL.
Run: uvicorn --factory bare_proxy:create_app --loop uvloop --http httptools
"""

import os

import aiohttp

HOP_BY_HOP = {b"host", b"connection", b"content-length", b"transfer-encoding", b"keep-alive"}


def create_app():
    target = os.environ["BENCH_TARGET_URL"].rstrip("/")
    session = None

    async def app(scope, receive, send):
        nonlocal session
        if scope["type"] != "http":  # lifespan: nothing to set up
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            return
        if session is None:
            session = aiohttp.ClientSession(auto_decompress=False)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k not in HOP_BY_HOP}
        url = target + scope["raw_path"].decode()
        async with session.request(scope["method"], url, data=body, headers=headers) as up:
            out = [
                (k.encode(), v.encode())
                for k, v in up.headers.items()
                if k.lower().encode() not in HOP_BY_HOP
            ]
            await send({"type": "http.response.start", "status": up.status, "headers": out})
            async for chunk in up.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app

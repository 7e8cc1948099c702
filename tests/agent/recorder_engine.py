"""A tiny OpenAI-style engine that records what happened to its requests (tests only).

It exists for what the doubles cannot show: whether the agent closed a stream early (the
client went away) and which headers reached the engine. `GET /stats` reports both.

    python recorder_engine.py PORT [--chunks N] [--delay S]

`POST /v1/chat/completions` with `"stream": true` sends N SSE chunks, one every S seconds;
without it, one JSON answer. `POST /api/chat` streams the same as Ollama's NDJSON (an agent
told `engine=ollama` passes it through). Every request's headers are kept for `/stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

stats = {"streams_started": 0, "streams_completed": 0, "streams_cut": 0, "last_headers": {}}


async def chat(request: web.Request) -> web.StreamResponse:
    stats["last_headers"] = dict(request.headers)
    body = await request.json()
    config = request.app["config"]
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
            }
        )
    stats["streams_started"] += 1
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    try:
        for i in range(config.chunks):
            chunk = {"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(config.delay)
        await resp.write(b"data: [DONE]\n\n")
        stats["streams_completed"] += 1
    except (ConnectionResetError, asyncio.CancelledError):
        stats["streams_cut"] += 1
        raise
    return resp


async def ollama_chat(request: web.Request) -> web.StreamResponse:
    """Ollama's /api/chat, streamed (Ollama's default): one NDJSON object per chunk."""
    stats["last_headers"] = dict(request.headers)
    body = await request.json()
    config = request.app["config"]
    stats["streams_started"] += 1
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    model = body.get("model", "")
    try:
        for i in range(config.chunks):
            message = {"role": "assistant", "content": f"w{i} "}
            line = {"model": model, "message": message, "done": False}
            await resp.write(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(config.delay)
        last = {"model": model, "message": {"role": "assistant", "content": ""}, "done": True}
        await resp.write(json.dumps({**last, "done_reason": "stop"}).encode() + b"\n")
        stats["streams_completed"] += 1
    except (ConnectionResetError, asyncio.CancelledError):
        stats["streams_cut"] += 1
        raise
    return resp


async def models(request: web.Request) -> web.Response:
    stats["last_headers"] = dict(request.headers)
    return web.json_response({"object": "list", "data": [{"id": "rec", "object": "model"}]})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(stats)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--chunks", type=int, default=100)
    p.add_argument("--delay", type=float, default=0.1)
    config = p.parse_args()
    app = web.Application()
    app["config"] = config
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/api/chat", ollama_chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", get_stats)
    # Cancel a handler when its client goes away, as real engines stop generating.
    web.run_app(app, host="127.0.0.1", port=config.port, print=None, handler_cancellation=True)


if __name__ == "__main__":
    main()

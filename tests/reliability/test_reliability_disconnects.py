"""100 streaming clients hang up mid-stream: the agent closes every engine request they
had open (so the engine stops generating) and its in-flight gauge returns to 0."""

from __future__ import annotations

import asyncio
import time

import httpx
import psutil
import pytest
from reliability_support import CHAT, OLLAMA_MODEL, EngineOnPort, start_agent, wait_until
from support.timing import scaled

CLIENTS = 100
# 300 words at 0.05 s a chunk (times CUBE_TIMEOUT_FACTOR): each stream would last
# 15 s if nobody hung up.
LONG_PROMPT = " ".join(f"word{i}" for i in range(300))
CHUNK_DELAY = scaled(0.05)
STREAM_SECONDS = 300 * CHUNK_DELAY
# The doubles' stdlib server keeps a listen backlog of 5: a burst of 100 connections would
# be dropped and retried by the kernel seconds later, so clients start a few at a time.
BATCH = 4


def engine_side_sockets(engine: EngineOnPort) -> int:
    """Connections the engine still holds on its port (open or half-closed by the agent):
    they go away only when the engine has noticed and stopped writing."""
    assert engine.process is not None
    return sum(
        1
        for c in psutil.Process(engine.process.pid).net_connections(kind="tcp")
        if c.laddr.port == engine.port and c.status in ("ESTABLISHED", "CLOSE_WAIT")
    )


async def hang_up_mid_stream(url: str, path: str, body: dict, headers: dict) -> int:
    """CLIENTS clients each read the first chunk of a stream, then all hang up together.
    Returns how many had a stream running at the moment they left."""
    streaming = 0
    all_streaming = asyncio.Event()
    leave = asyncio.Event()

    async def client(http: httpx.AsyncClient) -> bool:
        async with http.stream("POST", url + path, json=body, headers=headers) as resp:
            assert resp.status_code == 200, await resp.aread()
            lines = resp.aiter_lines()
            async for line in lines:
                if line.strip():
                    break
            nonlocal streaming
            streaming += 1
            if streaming == CLIENTS:
                all_streaming.set()
            await leave.wait()
            return True  # leaving the block mid-body closes the connection

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        tasks = []
        for _ in range(0, CLIENTS, BATCH):
            tasks += [asyncio.create_task(client(http)) for _ in range(BATCH)]
            while streaming < len(tasks) and not any(t.done() for t in tasks):
                await asyncio.sleep(0.01)
        ready = asyncio.create_task(all_streaming.wait())
        # a client that fails ends the wait at once, with its error
        done, _ = await asyncio.wait(
            [ready, *tasks], timeout=scaled(60), return_when="FIRST_COMPLETED"
        )
        leave.set()
        if ready not in done:
            ready.cancel()
            for task in tasks:
                task.cancel()
            errors = [t.exception() for t in done if not t.cancelled() and t.exception()]
            raise errors[0] if errors else TimeoutError("the streams did not start in time")
        return sum(await asyncio.gather(*tasks))


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("openai", "/v1/chat/completions"),  # SSE relayed as it is
        ("openai", "/api/chat"),  # SSE translated to Ollama NDJSON
        ("ollama", "/api/chat"),  # NDJSON relayed as it is
    ],
)
def test_clients_hanging_up_close_their_engine_requests(kind, path, keys, tmp_path):
    engine = EngineOnPort(kind, "--chunk-delay", str(CHUNK_DELAY), models_dir=tmp_path / "models")
    engine.start()
    agent = None
    try:
        agent = start_agent(engine.url, keys, engine=kind)
        model = OLLAMA_MODEL if kind == "ollama" else CHAT["model"]
        body = {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": LONG_PROMPT}],
        }
        assert agent.upstream_sockets(engine.port) == 0
        started = time.monotonic()
        left = asyncio.run(hang_up_mid_stream(agent.url, path, body, agent.headers()))
        assert left == CLIENTS
        # everyone left before the streams could have ended on their own
        assert time.monotonic() - started < STREAM_SECONDS
        wait_until(lambda: agent.in_flight() == 0, 5, "in-flight gauge back to 0")
        wait_until(
            lambda: agent.upstream_sockets(engine.port) == 0,
            5,
            "the agent closed every engine connection",
        )
        wait_until(
            lambda: engine_side_sockets(engine) == 0, 5, "the engine stopped every generation"
        )
        assert agent.process.alive()
        # and it serves the next client normally
        resp = httpx.post(
            agent.url + path, json={**body, "stream": False}, headers=agent.headers(), timeout=30
        )
        assert resp.status_code == 200, resp.text
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()

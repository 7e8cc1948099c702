"""Streams are relayed as they are produced, and a client that leaves stops the engine."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from support import Process, free_port
from support.timing import scaled, wait_until

RECORDER = Path(__file__).with_name("recorder_engine.py")


@pytest.fixture
def recorder():
    """30 chunks 0.1 s apart (times CUBE_TIMEOUT_FACTOR): a 3 s stream."""
    port = free_port()
    delay = str(scaled(0.1))
    process = Process([sys.executable, RECORDER, str(port), "--chunks", "30", "--delay", delay])
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_for_url(url + "/stats", timeout=15)
        yield url
    finally:
        process.stop()


def stats(url: str) -> dict:
    return httpx.get(url + "/stats", timeout=5).json()


BODY = {"model": "rec", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("engine", "path"),
    [
        ("openai", "/v1/chat/completions"),  # SSE passed through
        ("ollama", "/api/chat"),  # NDJSON passed through
        ("openai", "/api/chat"),  # SSE translated to Ollama's NDJSON
    ],
)
def test_first_chunk_arrives_while_the_engine_still_streams(recorder, agent_factory, engine, path):
    """Order, not wall time: when the client holds its first chunk, the engine has not
    finished (a relay that buffers the answer whole would deliver it only afterwards)."""
    agent = agent_factory(recorder, engine=engine)
    with httpx.stream(
        "POST", agent.url + path, json=BODY, headers=agent.headers(), timeout=30
    ) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        first = next(line for line in lines if line.strip())
        at_first = stats(recorder)
        rest = [line for line in lines if line.strip()]
    assert at_first["streams_started"] == 1
    assert at_first["streams_completed"] == 0, "the first chunk came after the engine finished"
    assert ("w0 " in first) and len(rest) == 30  # 29 more words and the end marker
    assert stats(recorder)["streams_completed"] == 1


def test_client_disconnect_cancels_the_engine_request(recorder, agent_factory):
    agent = agent_factory(recorder)
    with httpx.stream(
        "POST", agent.url + "/v1/chat/completions", json=BODY, headers=agent.headers(), timeout=30
    ) as resp:
        lines = resp.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        # leaving the block closes the connection after one chunk of thirty

    # Within the stream's own length: had the agent kept reading, the engine would finish.
    def cut() -> dict | None:
        now = stats(recorder)
        return now if now["streams_cut"] == 1 else None

    s = wait_until(cut, 2.5, "the engine request cut")
    assert s == {**s, "streams_started": 1, "streams_cut": 1, "streams_completed": 0}
    # and the agent is fine afterwards
    assert (
        httpx.get(agent.url + "/v1/models", headers=agent.headers(), timeout=5).status_code == 200
    )


def test_request_id_is_propagated_to_the_engine_and_back(recorder, agent_factory):
    agent = agent_factory(recorder)
    resp = httpx.get(
        agent.url + "/v1/models", headers={**agent.headers(), "X-Request-ID": "trace-42"}, timeout=5
    )
    assert resp.headers["x-request-id"] == "trace-42"
    seen = stats(recorder)["last_headers"]
    assert seen.get("X-Request-ID") == "trace-42"
    # the client's key to the agent never reaches the engine
    assert "Authorization" not in seen
    generated = httpx.get(agent.url + "/v1/models", headers=agent.headers(), timeout=5)
    assert len(generated.headers["x-request-id"]) >= 16
    assert stats(recorder)["last_headers"]["X-Request-ID"] == generated.headers["x-request-id"]

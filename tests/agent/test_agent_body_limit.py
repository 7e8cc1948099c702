"""UV_CUBE_AGENT_MAX_BODY_BYTES holds on each of the three ways a body can come in.

The agent checks a declared Content-Length before reading, a body that came whole in one
message, and the running total of a body that comes in pieces. Which check a request meets
depends on how the server groups what it read, so each case here controls that on a raw
socket: a declared length with no body at all, a chunked body written in one piece with its
end (parsed at once: one message), and a chunked body whose end is held back until the agent
has read the rest (so it cannot be one message). Each boundary is also taken at exactly the
limit, which must pass.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
from support.timing import scaled

LIMIT = 1000


def body_of(size: int) -> bytes:
    """A chat request of exactly `size` bytes (JSON padded with spaces)."""
    text = json.dumps({"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}]})
    assert len(text) <= size
    return text.encode() + b" " * (size - len(text))


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


END = b"0\r\n\r\n"


def request(agent, framing: bytes, *parts: bytes, pause: float = 0.0) -> int:
    """Send the head and `parts` (sleeping `pause` between them); the status answered."""
    where = urlsplit(agent.url)
    head = (
        (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {where.netloc}\r\n"
            f"Authorization: Bearer {agent.keys.default}\r\nContent-Type: application/json\r\n"
        ).encode()
        + framing
        + b"\r\n"
    )
    with socket.create_connection((where.hostname, where.port), timeout=scaled(10)) as s:
        s.sendall(head + (parts[0] if parts else b""))
        for part in parts[1:]:
            time.sleep(pause)
            s.sendall(part)
        answer = b""
        while b"\r\n" not in answer:
            data = s.recv(4096)
            assert data, f"connection closed without an answer: {answer!r}"
            answer += data
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def agent(ollama_double, agent_factory):
    return agent_factory(ollama_double.url, max_body_bytes=str(LIMIT))


def test_a_declared_length_over_the_limit_is_refused_before_any_body(agent):
    # No body is ever sent: only the Content-Length check can answer (else: a timeout).
    assert request(agent, b"Content-Length: %d\r\n" % (LIMIT + 1)) == 413
    assert request(agent, b"Content-Length: %d\r\n" % LIMIT, body_of(LIMIT)) == 200


def test_a_body_that_comes_whole_is_measured(agent):
    # Head, one chunk and the end in one write: the server parses it all before the agent
    # reads, so the body is one message with no more to come.
    chunked = b"Transfer-Encoding: chunked\r\n"
    assert request(agent, chunked, chunk(body_of(LIMIT + 1)) + END) == 413
    assert request(agent, chunked, chunk(body_of(LIMIT)) + END) == 200


def test_a_body_that_comes_in_pieces_is_counted_as_it_is_read(agent):
    # The end is held back: whatever the agent reads first has more to come, so the
    # running total is what must refuse it.
    chunked = b"Transfer-Encoding: chunked\r\n"
    body = body_of(LIMIT + 1)
    pieces = chunk(body[:600]) + chunk(body[600:])
    assert request(agent, chunked, pieces, END, pause=scaled(0.3)) == 413
    body = body_of(LIMIT)
    pieces = chunk(body[:600]) + chunk(body[600:])
    assert request(agent, chunked, pieces, END, pause=scaled(0.3)) == 200

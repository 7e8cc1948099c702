"""The proxy's limits and header forwarding in process: the body limit on each way a body
comes in, the body budget, the concurrency caps, and which headers cross the agent.

test_agent_body_limit.py and the reliability suite show the same over real sockets; these
are fast enough to run for every mutant in `make mutation`.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from cube_agent.auth import Auth
from cube_agent.config import load_settings
from cube_agent.errors import AgentError
from cube_agent.metrics import Metrics
from cube_agent.proxy import ClientLeft, Proxy, ProxyLimits, response_headers, without_named
from cube_agent.routing import Router


def proxy(**limits: int) -> Proxy:
    router = Router(load_settings(target_url="http://127.0.0.1:9", auth=False))
    return Proxy(router, Auth(None), Metrics(), ProxyLimits(**limits))


def call(declared: int | None = None, key: str | None = None) -> SimpleNamespace:
    headers = {} if declared is None else {"content-length": str(declared)}
    return SimpleNamespace(headers=headers, buffered=0, bucket=key)


def receiver(*messages: dict):
    """An ASGI receive() giving `messages` in order; a test fails if more is asked."""
    pending = list(messages)

    async def receive() -> dict:
        assert pending, "the body was read past its end"
        return pending.pop(0)

    return receive


def body(data: bytes, more: bool = False) -> dict:
    return {"type": "http.request", "body": data, "more_body": more}


def read(p: Proxy, c, *messages: dict) -> bytes:
    return asyncio.run(p._read_body(c, receiver(*messages)))


def refusal(function, *args) -> AgentError:
    with pytest.raises(AgentError) as caught:
        function(*args)
    return caught.value


def status_of(p: Proxy, c, *messages: dict) -> int:
    with pytest.raises(AgentError) as caught:
        read(p, c, *messages)
    return caught.value.status


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    p = proxy(max_body=10)
    assert status_of(p, call(declared=11)) == 413  # receive() is never called
    c = call(declared=10)
    assert read(p, c, body(b"x" * 10)) == b"x" * 10
    assert c.buffered == 10 and p._buffered == 10


def test_a_body_in_one_message_is_measured():
    p = proxy(max_body=10)
    assert status_of(p, call(), body(b"x" * 11)) == 413
    # ASGI: a message without more_body is the last one (and its bytes are reserved)
    last = call()
    assert read(p, last, {"type": "http.request", "body": b"abc"}) == b"abc"
    assert last.buffered == 3
    pieces = call()
    assert read(p, pieces, body(b"ab", True), {"type": "http.request", "body": b"c"}) == b"abc"
    c = call()
    assert read(p, c, body(b"x" * 10)) == b"x" * 10
    assert c.buffered == 10


def test_a_body_in_pieces_is_counted_as_it_comes():
    p = proxy(max_body=10)
    assert status_of(p, call(), body(b"x" * 6, True), body(b"x" * 5)) == 413
    assert status_of(p, call(), body(b"x" * 11, True), body(b"")) == 413
    c = call()
    pieces = (body(b"a" * 4, True), body(b"b" * 3, True), body(b"c" * 3))
    assert read(p, c, *pieces) == b"aaaabbbccc"
    assert c.buffered == 10 and p._buffered == 10
    with pytest.raises(ClientLeft):
        read(p, call(), body(b"a", True), {"type": "http.disconnect"})


def test_the_body_budget_is_shared_by_every_request():
    p = proxy(max_body=10, max_buffered=15)
    first = call(declared=10)
    assert read(p, first, body(b"x" * 10)) == b"x" * 10
    error = refusal(read, p, call(declared=6), body(b"x" * 6))
    assert (error.status, error.code) == (503, "overloaded")
    assert p._buffered == 10
    second = call()
    assert read(p, second, body(b"y" * 5)) == b"y" * 5  # exactly the budget
    assert p._buffered == 15 and second.buffered == 5


def test_one_key_holds_at_most_its_share_of_the_body_budget():
    """Slow uploads with one key (a body announced, then trickled) hold budget: that key
    gets 429 past its share (the concurrency's: 2 of 4 here), the others still get in."""
    p = proxy(max_body=100, max_buffered=100, max_concurrency=4, max_key_concurrency=2)
    assert p.max_key_buffered == 50
    slow = [call(declared=20, key="a"), call(declared=20, key="a")]
    for c in slow:
        p._reserve(c, 20)
    error = refusal(p._reserve, call(key="a"), 11)
    assert (error.status, error.code) == (429, "rate_limited")
    other = call(key="b")
    p._reserve(other, 50)  # another key: its own share, whatever "a" holds
    assert (p._buffered, p._buffered_by_key) == (90, {"a": 40, "b": 50})
    for c in (*slow, other):
        p._release(c)
    assert (p._buffered, p._buffered_by_key) == (0, {})
    p._reserve(call(key="a"), 50)  # freed: the whole share again
    unkeyed = call()  # auth off: only the agent's budget counts
    p._reserve(unkeyed, 50)
    assert p._buffered_by_key == {"a": 50} and p._buffered == 100


def test_reserving_nothing_costs_nothing():
    p = proxy(max_buffered=1)
    c = call()
    p._reserve(c, 0)
    p._reserve(c, -3)
    assert (p._buffered, c.buffered) == (0, 0)
    p._reserve(c, 1)
    assert (p._buffered, c.buffered) == (1, 1)
    with pytest.raises(AgentError):
        p._reserve(c, 1)


def test_concurrency_caps_per_agent_and_per_key():
    p = proxy(max_concurrency=3, max_key_concurrency=2)
    p._admit("a")
    p._admit("a")
    error = refusal(p._admit, "a")
    assert (error.status, error.code) == (429, "rate_limited") and "2 requests" in error.message
    p._admit("b")  # another key still gets in
    assert (p._active, p._active_by_key) == (3, {"a": 2, "b": 1})
    error = refusal(p._admit, None)
    assert (error.status, error.code) == (503, "overloaded")
    big = proxy(max_concurrency=300)  # past CPython's cached small ints: a count, not identity
    for _ in range(300):
        big._admit(None)
    assert refusal(big._admit, None).status == 503
    per_key = proxy(max_concurrency=1000, max_key_concurrency=300)
    for _ in range(300):
        per_key._admit("a")
    assert refusal(per_key._admit, "a").status == 429
    q = proxy(max_concurrency=2, max_key_concurrency=1)
    q._admit(None)
    q._admit(None)  # no key (auth off): only the agent's cap counts
    assert q._active_by_key == {} and q._active == 2


def test_headers_a_connection_header_names_are_not_forwarded():
    headers = [("x-a", "1"), ("x-b", "2"), ("keep", "3"), ("x-c", "4")]
    assert without_named(headers, ["X-A, x-b", " X-C "]) == [("keep", "3")]
    assert without_named(headers, []) == headers


def test_the_engines_hop_by_hop_and_proxy_headers_stop_at_the_agent():
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"X-Secret", b"s"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"proxy-anything", b"x"),
        (b"X-Kept", b"k"),
        (b"Cache-Control", b"x-also-kept"),  # a value that names a header is not Connection
        (b"X-Also-Kept", b"a"),
        (b"x-request-id", b"engine-id"),
        (b"X-Note", b"x-kept"),  # so is one whose name sorts after "connection"
        (b"Server", b"x-kept"),  # a dropped header that is not Connection names nothing
        (b"Date", b"X-Also-Kept"),
    ]
    kept = response_headers(SimpleNamespace(raw_headers=raw))
    assert kept == [
        (b"Content-Type", b"application/json"),
        (b"X-Kept", b"k"),
        (b"Cache-Control", b"x-also-kept"),
        (b"X-Also-Kept", b"a"),
        (b"X-Note", b"x-kept"),
    ]

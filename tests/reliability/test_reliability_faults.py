"""Engine faults: refused, hung, slow, malformed, cut mid-stream, flapping.

Every fault ends in a bounded time with a JSON error and the right status (502/504), or, once
a stream has started, with an error event in the stream's own format; never a hung client
or a 500. Afterwards nothing is in flight and no connection to the engine is left open.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from reliability_support import (
    CHAT,
    OLLAMA_MODEL,
    Agent,
    EngineOnPort,
    start_agent,
    wait_until,
)
from support import free_port
from support.timing import scaled

# Short upstream timeouts so that a hung engine costs a second, not five minutes.
TIMEOUTS = {"connect_timeout": "1", "read_timeout": "1", "total_timeout": "5"}
# Every generation call a client makes: OpenAI and Ollama API, plain and streamed.
CALLS = [
    ("/v1/chat/completions", False),
    ("/v1/chat/completions", True),
    ("/api/chat", False),
    ("/api/chat", True),
]


@dataclass
class Answer:
    status: int
    content_type: str
    lines: list[bytes] = field(default_factory=list)
    broken: bool = False  # the agent ended the connection without a clean last chunk
    seconds: float = 0.0

    def json(self) -> object:
        return orjson.loads(b"".join(self.lines))

    def events(self) -> list[object]:
        """The stream's objects: SSE `data:` payloads or NDJSON lines ([DONE] left out)."""
        out = []
        for line in self.lines:
            payload = line.removeprefix(b"data:").strip()
            if payload and payload != b"[DONE]":
                out.append(orjson.loads(payload))
        return out


def call(
    agent: Agent, path: str, stream: bool, model: str, limit: float = 15, prompt: str = ""
) -> Answer:
    """One chat request read to its end; a client timeout here means the agent hung."""
    limit = scaled(limit)
    body = {**CHAT, "model": model, "stream": stream}
    if prompt:
        body["messages"] = [{"role": "user", "content": prompt}]
    started = time.monotonic()
    with httpx.stream(
        "POST", agent.url + path, json=body, headers=agent.headers(), timeout=limit
    ) as resp:
        answer = Answer(resp.status_code, resp.headers.get("content-type", ""))
        try:
            for line in resp.iter_lines():
                if line:
                    answer.lines.append(line.encode())
        except httpx.RemoteProtocolError:
            answer.broken = True
        except httpx.TimeoutException:
            pytest.fail(f"{path} stream={stream}: the client hung for {limit} s")
    answer.seconds = time.monotonic() - started
    return answer


def assert_json_error(answer: Answer, path: str, status: int) -> str:
    assert answer.status == status, (path, answer.status, answer.lines)
    assert answer.content_type.startswith("application/json"), answer.content_type
    error = answer.json()["error"]  # type: ignore[index]
    message = error if path.startswith("/api/") else error["message"]
    assert isinstance(message, str) and message
    return message


def assert_stream_error(answer: Answer, path: str) -> str:
    """A stream that had started ends with an error object, and then ends."""
    assert answer.status == 200, (path, answer.status, answer.lines)
    last = answer.events()[-1]
    assert isinstance(last, dict) and "error" in last, answer.lines[-3:]
    error = last["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert isinstance(message, str) and message
    return message


def assert_settled(agent: Agent, engine_port: int) -> None:
    """Nothing in flight, and no connection to the engine still open."""
    wait_until(lambda: agent.in_flight() == 0, 5, "in-flight gauge back to 0")
    wait_until(
        lambda: agent.upstream_sockets(engine_port) == 0, 5, "no open connection to the engine"
    )


@pytest.fixture
def engine_factory(tmp_path):
    started: list[EngineOnPort] = []

    def start(kind: str, *flags: str) -> EngineOnPort:
        engine = EngineOnPort(kind, *flags, models_dir=tmp_path / "models")
        started.append(engine)
        return engine.start()

    yield start
    for engine in started:
        engine.stop()


@pytest.fixture
def agent_factory(keys):
    started: list[Agent] = []

    def start(url: str, **settings: str) -> Agent:
        agent = start_agent(url, keys, **{**TIMEOUTS, **settings})
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def test_engine_refusing_connections_is_502_at_once(agent_factory):
    port = free_port()  # nothing listens there
    agent = agent_factory(f"http://127.0.0.1:{port}")
    for path, stream in [*CALLS, ("/v1/models", False), ("/api/tags", False)]:
        if path.endswith(("models", "tags")):
            resp = httpx.get(agent.url + path, headers=agent.headers(), timeout=10)
            answer = Answer(resp.status_code, resp.headers["content-type"], [resp.content])
        else:
            answer = call(agent, path, stream, "any")
        assert "unreachable" in assert_json_error(answer, path, 502)
        assert answer.seconds < scaled(3)
    ready = httpx.get(agent.url + "/ready", timeout=10)
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    # the three /v1 calls at least (a failed engine-kind probe on /api is not counted)
    assert agent.metric("cube_agent_upstream_errors_total") >= 3
    assert_settled(agent, port)


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_engine_that_never_answers_is_504_within_the_read_timeout(
    kind, engine_factory, agent_factory
):
    engine = engine_factory(kind, "--hang-after", "0")
    agent = agent_factory(engine.url, engine=kind)
    model = OLLAMA_MODEL if kind == "ollama" else CHAT["model"]
    for path, stream in CALLS:
        answer = call(agent, path, stream, model)
        assert "timed out" in assert_json_error(answer, path, 504)
        assert answer.seconds < scaled(4), answer.seconds  # read timeout 1 s
    assert agent.metric("cube_agent_upstream_errors_total") >= len(CALLS)
    assert_settled(agent, engine.port)


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_total_timeout_ends_a_stream_that_never_pauses_long(kind, engine_factory, agent_factory):
    """A chunk every 0.1 s never trips the 1 s read timeout; the total timeout (2 s here)
    still ends the stream, with an error after what was relayed, long before the engine's
    60 words would have taken it."""
    engine = engine_factory(kind, "--chunk-delay", str(scaled(0.1)))
    total = scaled(2)
    agent = agent_factory(engine.url, engine=kind, total_timeout=str(total))
    model = OLLAMA_MODEL if kind == "ollama" else CHAT["model"]
    words = " ".join(f"w{i}" for i in range(60))
    for path in ("/v1/chat/completions", "/api/chat"):
        answer = call(agent, path, True, model, prompt=words)
        assert_stream_error(answer, path)
        assert len(answer.events()) >= 5, answer.lines  # it streamed before the cut
        assert total <= answer.seconds < total + scaled(3), answer.seconds
        assert not any(b"w59" in line for line in answer.lines)  # the end never came
    assert_settled(agent, engine.port)


def test_connect_timeout_is_504_for_plain_and_streamed_calls(agent_factory):
    """An engine that never accepts (its listen queue is full: the kernel drops the SYN):
    every call is 504 after the 1 s connect timeout, not after the 5 s total one."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            agent = agent_factory(f"http://127.0.0.1:{port}", engine="openai")
            for path, stream in CALLS:
                answer = call(agent, path, stream, CHAT["model"])
                assert "timed out" in assert_json_error(answer, path, 504)
                assert answer.seconds < scaled(4), answer.seconds  # connect timeout 1 s


@pytest.mark.parametrize("fault", [("--hang-after", "2"), ("--cut-after", "2")])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_stream_broken_mid_way_ends_with_an_error_event(kind, fault, engine_factory, agent_factory):
    engine = engine_factory(kind, *fault)
    agent = agent_factory(engine.url, engine=kind)
    model = OLLAMA_MODEL if kind == "ollama" else CHAT["model"]
    for path in ("/v1/chat/completions", "/api/chat"):
        answer = call(agent, path, True, model)
        assert_stream_error(answer, path)
        # the engine's first chunks were relayed before the error
        assert len(answer.events()) >= 2, answer.lines
        assert answer.seconds < scaled(4), answer.seconds
        # a broken stream must not look like a complete one
        assert not any(line.strip() == b"data: [DONE]" for line in answer.lines)
    assert_settled(agent, engine.port)


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_answer_cut_mid_body_is_502(kind, engine_factory, agent_factory):
    engine = engine_factory(kind, "--cut-after", "1")
    agent = agent_factory(engine.url, engine=kind)
    model = OLLAMA_MODEL if kind == "ollama" else CHAT["model"]
    for path in ("/v1/chat/completions", "/api/chat"):
        answer = call(agent, path, False, model)
        assert_json_error(answer, path, 502)
    assert_settled(agent, engine.port)


def test_slow_engine_still_answers_in_full(engine_factory, agent_factory):
    # 0.4 s between chunks, read timeout 1 s: slow, but never idle long enough to time out.
    engine = engine_factory("openai", "--chunk-delay", "0.4")
    agent = agent_factory(engine.url, engine="openai")
    for path, stream in CALLS:
        answer = call(agent, path, stream, CHAT["model"])
        assert answer.status == 200 and not answer.broken, answer.lines
        events = answer.events()
        assert not any(isinstance(e, dict) and "error" in e for e in events), events
        if stream:
            assert answer.seconds > 1.0  # it really was slow: 3+ chunks 0.4 s apart
            if path.startswith("/v1/"):
                assert answer.lines[-1] == b"data: [DONE]"
            else:
                assert events[-1]["done"] is True  # type: ignore[index]
    wait_until(lambda: agent.in_flight() == 0, 5, "in-flight gauge back to 0")
    # idle keep-alive connections may stay pooled, one at most for sequential calls
    assert agent.upstream_sockets(engine.port) <= 1


def test_malformed_engine_json_is_502_where_the_agent_reads_it(engine_factory, agent_factory):
    """The Ollama API on an OpenAI engine is translated, so the agent parses the engine's
    JSON: broken JSON there is the engine's fault (502 with a JSON error), never a 500.
    /v1 is passed through byte for byte: the agent does not parse it, the client gets it."""
    engine = engine_factory("openai", "--malformed")
    agent = agent_factory(engine.url, engine="openai")
    answer = call(agent, "/api/chat", False, CHAT["model"])
    assert "non-JSON" in assert_json_error(answer, "/api/chat", 502)
    passed = call(agent, "/v1/chat/completions", False, CHAT["model"])
    assert passed.status == 200
    with pytest.raises(orjson.JSONDecodeError):
        passed.json()
    wait_until(lambda: agent.in_flight() == 0, 5, "in-flight gauge back to 0")


def test_malformed_stream_event_is_reported_in_the_translated_stream(engine_factory, agent_factory):
    engine = engine_factory("openai", "--malformed")
    agent = agent_factory(engine.url, engine="openai")
    answer = call(agent, "/api/chat", True, CHAT["model"])
    # not a silently shortened answer ending in done: true
    assert "malformed" in assert_stream_error(answer, "/api/chat")
    assert not any(e.get("done") for e in answer.events() if isinstance(e, dict))


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_flapping_engine_is_served_again_as_soon_as_it_is_back(kind, engine_factory, agent_factory):
    engine = engine_factory(kind)
    agent = agent_factory(engine.url)  # auto: the kind is probed while the engine is up
    model = OLLAMA_MODEL if kind == "ollama" else CHAT["model"]
    for _ in range(2):
        for path, stream in CALLS:
            answer = call(agent, path, stream, model)
            assert answer.status == 200 and not answer.broken, (path, answer.lines)
        assert httpx.get(agent.url + "/ready", timeout=10).status_code == 200
        engine.stop()
        for path, stream in CALLS:
            assert_json_error(call(agent, path, stream, model), path, 502)
        assert httpx.get(agent.url + "/ready", timeout=10).status_code == 503
        engine.start()
        # the first request after the engine is back succeeds: no stale pooled connection
    for path, stream in CALLS:
        answer = call(agent, path, stream, model)
        assert answer.status == 200 and not answer.broken, (path, answer.lines)
    wait_until(lambda: agent.in_flight() == 0, 5, "in-flight gauge back to 0")
    assert agent.upstream_sockets(engine.port) <= 1

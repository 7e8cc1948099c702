"""The agent is an authorization boundary (issue 14): one test per finding of the attack,
the reproduction first, then the expected behaviour, against the real agent process.

Engines: the Ollama and vLLM doubles; "the engine saw nothing" is read from their own
access logs (one line per request)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest
from cube_agent.keys import KeyFile, KeyFileError, hash_key, new_key
from reliability_support import (
    OLLAMA_MODEL,
    EngineOnPort,
    bearer,
    make_keys,
    start_agent,
    wait_until,
)
from support import Process, free_port


def engine_requests(engine: EngineOnPort) -> list[str]:
    return [line for line in engine.output().splitlines() if " HTTP/1.1" in line]


def raw_http(url: str, head: bytes, body: bytes = b"", timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes as they are (no client library normalises or refuses anything);
    the status and body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1]) if header else 0
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest


def request(
    url: str, method: str, target: bytes, key: str | None = None, body: object = None
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else b""
    head = method.encode() + b" " + target + b" HTTP/1.1\r\nHost: agent\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n".encode()
    head += b"Content-Type: application/json\r\nConnection: close\r\n"
    head += f"Content-Length: {len(data)}\r\n\r\n".encode()
    return raw_http(url, head, data)


@pytest.fixture(scope="module")
def ollama(keys, tmp_path_factory):
    engine = EngineOnPort("ollama", models_dir=tmp_path_factory.mktemp("models")).start()
    agent = None
    try:
        agent = start_agent(engine.url, keys, engine="ollama")
        yield agent, engine
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()


# -- CRITICAL: dot segments and escapes reached the engine past every check ------------------

# What the attack sent with a non-admin key; each reached the engine before the fix.
BYPASSES = [
    ("DELETE", b"/v1/%2e%2e/api/delete", {"model": OLLAMA_MODEL}),
    ("POST", b"/v1/../api/pull", {"model": "evil:1b", "stream": False}),
    ("POST", b"/v1/..%2Fapi/create", {"model": "evil", "from": OLLAMA_MODEL}),
    ("GET", b"/v1/%2e%2e/metrics", None),
    ("GET", b"/v1/%2e%2e/api/blobs/sha256:" + b"0" * 64, None),
    ("POST", b"/v1/%2E%2E/api/copy", {"source": OLLAMA_MODEL, "destination": "x"}),
    ("POST", b"/v1/.%2e/api/push", {"model": OLLAMA_MODEL}),
    ("POST", b"/v1/%252e%252e/api/pull", {"model": "evil:1b"}),
    ("POST", b"/v1\\..\\api/pull", {"model": "evil:1b"}),
    ("POST", b"/v1/x/%5C../../api/pull", {"model": "evil:1b"}),
    ("GET", b"/v1/models%3Fx=1", None),
    ("GET", b"/v1/models%23x", None),
    ("GET", b"/v1/models%00", None),
    ("GET", b"//api/pull", None),
    ("GET", b"/v1//../api/tags", None),
]


def test_dot_segments_and_escapes_never_reach_the_engine(ollama):
    agent, engine = ollama
    before = len(engine_requests(engine))
    for method, target, body in BYPASSES:
        status, answer = request(agent.url, method, target, agent.keys.default, body)
        assert status == 400, (target, status, answer)
        error = json.loads(answer)["error"]
        message = error if isinstance(error, str) else error["message"]
        assert "path" in message, (target, answer)
    assert engine_requests(engine)[before:] == []
    # the model the first request tried to delete is still there
    tags = httpx.get(agent.url + "/api/tags", headers=bearer(agent.keys.default)).json()
    assert OLLAMA_MODEL in [m["name"] for m in tags["models"]]


def test_unparsable_request_targets_get_the_agents_json_400(ollama):
    agent, engine = ollama
    before = len(engine_requests(engine))
    for line in (
        b"GET /v1/mod\xc3\xa9ls HTTP/1.1",
        b"GET /v1/models\tx HTTP/1.1",
        b"CONNECT 127.0.0.1:11434 HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"GET http://engine/v1/../api/pull HTTP/1.1",
    ):
        status, body = raw_http(agent.url, line + b"\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert status == 400, (line, body)
        assert "message" in json.loads(body)["error"], body
    assert engine_requests(engine)[before:] == []


def test_the_engine_gets_the_path_it_was_authorised_for(ollama):
    """An accepted path goes out byte for byte (escapes of ':' included)."""
    agent, engine = ollama
    before = len(engine_requests(engine))
    status, _ = request(
        agent.url, "POST", b"/api/show", agent.keys.default, {"model": OLLAMA_MODEL}
    )
    assert status == 200
    status, _ = request(agent.url, "GET", b"/v1/models/llama3.2%3A3b", agent.keys.default)
    assert status < 500
    seen = engine_requests(engine)[before:]
    assert any('"POST /api/show HTTP/1.1"' in line for line in seen), seen
    assert any('"GET /v1/models/llama3.2%3A3b HTTP/1.1"' in line for line in seen), seen


def test_a_rule_base_path_cannot_be_escaped(keys, tmp_path):
    """/team-a/v1/../../b/... left team-a's base path (engine A at /engines/a) for another
    tenant's; now refused, and strip_prefix removes whole segments only."""
    engine = EngineOnPort("openai").start()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "rules:\n"
        f"  - {{name: a, match: {{domain: ^team-a$}}, target: '{engine.url}/engines/a',"
        " engine: openai, strip_prefix: /v1}\n"
    )
    agent = None
    try:
        agent = start_agent(engine.url, keys, engine="openai", routes_file=str(routes))
        before = len(engine_requests(engine))
        for target in (
            b"/team-a/v1/../../b/v1/chat/completions",
            b"/team-a/v1/%2e%2e/%2e%2e/b/v1/models",
            b"/team-a/v1/..%2F..%2Fb/v1/models",
        ):
            status, answer = request(agent.url, "GET", target, keys.team_a)
            assert status == 400, (target, answer)
        assert engine_requests(engine)[before:] == []
        request(agent.url, "GET", b"/team-a/v1/models", keys.team_a)
        seen = engine_requests(engine)[before:]
        assert any('"GET /engines/a/models HTTP/1.1"' in line for line in seen), seen
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()


# -- HIGH: guardrails bypass ------------------------------------------------------------------


def test_guarded_path_spellings_never_reach_the_chat_endpoint(ollama):
    """/v1/%2e/chat/completions and friends skipped the guarded-path match (guardrails) yet
    reached the engine's chat endpoint. The guarded match and the engine now see one path:
    every other spelling of it is refused before guardrails or the engine."""
    agent, engine = ollama
    chat = {"model": OLLAMA_MODEL, "messages": [{"role": "user", "content": "x@example.com"}]}
    before = len(engine_requests(engine))
    for target in (
        b"/v1/%2e/chat/completions",
        b"/v1/chat/completions%3F",
        b"/v1/x/../chat/completions",
        b"/v1/chat/completions/",
        b"/v1//chat/completions",
        b"/v1/chat/%63ompletions",
        b"/api/%63hat",
        b"/default/api/./chat",
    ):
        status, answer = request(agent.url, "POST", target, agent.keys.default, chat)
        assert status == 400, (target, status, answer)
    assert engine_requests(engine)[before:] == []


# -- HIGH: unbounded request heads -----------------------------------------------------------


def send_until_refused(url: str, head: bytes, filler: bytes, total: int) -> tuple[int, int]:
    """Send `head`, then `filler` up to `total` bytes or until the agent answers or closes;
    (status of the answer or 0, bytes it let us send)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sent = 0
    try:
        sock.sendall(head)
        sock.settimeout(0.001)
        block = filler * (65536 // len(filler))
        while sent < total:
            try:
                sent += sock.send(block)
            except (BlockingIOError, TimeoutError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except (BlockingIOError, TimeoutError):
                continue
            except ConnectionResetError:
                break
        sock.settimeout(5)
        try:
            answer = sock.recv(200)
        except (ConnectionResetError, TimeoutError):
            answer = b""
        return (int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0), sent
    finally:
        sock.close()


def test_huge_request_heads_get_431_and_cost_nothing(ollama):
    """4 connections x 100 MB of headers took the agent from 64 to 474 MB without a key,
    and one 80 MB header stalled /health for everyone for 4.4 s."""
    agent, _ = ollama
    rss = agent.rss()
    for head in (
        b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: ",  # one huge header
        b"GET /health HTTP/1.1\r\nHost: a\r\n",  # many headers
        b"GET /v1/models?q=",  # a huge request line
    ):
        filler = b"a" * 64 if head.endswith(b" ") or head.endswith(b"=") else b"X-A: b\r\n"
        status, sent = send_until_refused(agent.url, head, filler, 100 * 1024 * 1024)
        assert status == 431, (head, status)
        assert sent < 8 * 1024 * 1024, sent  # refused early, not after 100 MB
        # and the agent answers everyone else at once meanwhile
        resp = httpx.get(agent.url + "/health", timeout=2)
        assert resp.status_code == 200 and resp.elapsed.total_seconds() < 0.5
    assert agent.rss() - rss < 20 * 1024 * 1024
    # a normal, large-ish head still passes (32 KiB of headers)
    headers = {**bearer(agent.keys.default), **{f"x-h{i}": "v" * 1000 for i in range(32)}}
    assert httpx.get(agent.url + "/v1/models", headers=headers).status_code == 200


# -- HIGH: slowloris ---------------------------------------------------------------------------


def test_half_open_connections_are_capped_and_timed_out(keys, tmp_path):
    """1030 half-open connections locked every client out, indefinitely: no header-read
    timeout, no connection cap. Now a connection past the cap gets a fast 503, and a head
    not complete within the header timeout ends its connection (408)."""
    engine = EngineOnPort("openai").start()
    agent = None
    held: list[socket.socket] = []
    try:
        agent = start_agent(
            engine.url, keys, engine="openai", max_connections="40", header_timeout="2"
        )
        host, port = agent.url.removeprefix("http://").split(":")
        started = time.monotonic()
        for i in range(60):  # more than the cap, each with a head that never ends
            try:
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * i)
                held.append(sock)
            except OSError:
                pass
        # a client now is refused at once, not left hanging
        t = time.monotonic()
        status, _ = request(agent.url, "GET", b"/health")
        assert status == 503 and time.monotonic() - t < 1
        # the slow ones are answered 408 and closed once the header timeout has passed
        for sock in held[:5]:
            sock.settimeout(10)
            answer = sock.recv(200)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 8
        assert httpx.get(agent.url + "/health", timeout=2).status_code == 200
        # a connection that sends nothing at all is closed too
        idle = socket.create_connection((host, int(port)), timeout=10)
        t = time.monotonic()
        assert idle.recv(10) == b"" and 1.5 < time.monotonic() - t < 6
        idle.close()
    finally:
        for sock in held:
            sock.close()
        if agent is not None:
            agent.stop()
        engine.stop()


def test_idle_kept_alive_connections_are_closed(keys, tmp_path):
    engine = EngineOnPort("openai").start()
    agent = None
    try:
        agent = start_agent(engine.url, keys, engine="openai", keepalive_timeout="1")
        host, port = agent.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += sock.recv(1000)
            assert answer.startswith(b"HTTP/1.1 200")
            t = time.monotonic()
            assert sock.recv(10) == b""  # closed by the agent
            assert time.monotonic() - t < 3
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()


# -- LOW: the key file fails open ------------------------------------------------------------


def cube_agent_keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cube_agent", "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def entry(name: str, key: str, **fields: object) -> dict:
    return {"name": name, "sha256": hash_key(key), "domains": ["default"], **fields}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("admin", "false", "admin"),  # granted admin: "false" is a true string
        ("domains", "team-b", "domains"),  # granted t, e, a, m, -, b
        ("domains", ["team-b", 5], "domains"),
        ("sha256", "short", "sha256"),
        ("grants", ["*"], "grants"),  # unknown field, silently ignored before
    ],
)
def test_type_confusion_in_the_key_file_is_refused_naming_the_entry(
    tmp_path, field, value, message
):
    key = new_key()
    path = tmp_path / "keys.json"
    path.write_text(
        json.dumps({"keys": [entry("ok", new_key()), entry("bad", key, **{field: value})]})
    )
    with pytest.raises(KeyFileError) as err:
        KeyFile.load(path)
    text = str(err.value)
    assert "keys[1] ('bad')" in text and message in text, text
    # and the agent refuses to start on it (one line naming the file, exit 2)
    proc = subprocess.run(
        [sys.executable, "-m", "cube_agent", "serve", "--port", "1"],
        env={**os.environ, "UV_CUBE_AGENT_KEY_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "keys[1] ('bad')" in proc.stderr, proc.stderr


def wait_status(agent, key: str, status: int, path: str = "/team-a/v1/models") -> None:
    wait_until(
        lambda: httpx.get(agent.url + path, headers=bearer(key)).status_code == status,
        5,
        f"the key answers {status}",
    )


def test_key_file_changes_in_a_running_agent_fail_closed(tmp_path):
    """A deleted, emptied or broken key file kept the old keys valid, silently; a removed
    key kept working (issue 22). Now: removed key 401; file gone, empty or not JSON: every
    key 401; an entry that does not check: the change is refused, the last good keys stay;
    each logged at error level."""
    keys = make_keys(tmp_path)
    engine = EngineOnPort("openai").start()
    agent = None
    try:
        agent = start_agent(engine.url, keys, engine="openai")
        default, team_a = keys.default, keys.team_a
        assert httpx.get(agent.url + "/v1/models", headers=bearer(default)).status_code == 200
        # a key removed with the CLI is refused within the reload interval
        assert cube_agent_keys("remove", "--file", str(keys.file), "app").returncode == 0
        wait_status(agent, default, 401, "/v1/models")
        assert httpx.get(agent.url + "/team-a/v1/models", headers=bearer(team_a)).status_code == 200
        good = keys.file.read_text()
        # a broken entry (JSON that parses): refused, the last good keys stay
        data = json.loads(good)
        data["keys"][1]["domains"] = "team-b"  # the team-a key
        keys.file.write_text(json.dumps(data))
        time.sleep(1.5)
        assert httpx.get(agent.url + "/team-a/v1/models", headers=bearer(team_a)).status_code == 200
        assert httpx.get(agent.url + "/team-b/v1/models", headers=bearer(team_a)).status_code == 403
        # not JSON (a half-done edit), emptied, deleted: no key is valid
        for broken in ('{"keys": [', "", None):
            keys.file.write_text(good)
            wait_status(agent, team_a, 200)
            if broken is None:
                keys.file.unlink()
            else:
                keys.file.write_text(broken)
            wait_status(agent, team_a, 401)
            assert httpx.get(agent.url + "/metrics", headers=bearer(keys.admin)).status_code == 401
        keys.file.write_text(good)
        wait_status(agent, team_a, 200)
        errors = [
            json.loads(line)
            for line in agent.process.output().splitlines()
            if line.startswith("{") and '"cube_agent.keys"' in line
        ]
        assert sum(e["level"] == "error" for e in errors) >= 4, errors
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()


def test_parallel_key_edits_lose_nothing(tmp_path):
    """8 parallel `keys add` printed 8 keys and stored 6."""
    path = tmp_path / "keys.json"
    assert cube_agent_keys("init", "--file", str(path)).returncode == 0
    keys = [sys.executable, "-m", "cube_agent", "keys"]
    args = [*keys, "add", "--file", str(path)]
    procs = [
        subprocess.Popen(
            [*args, "--name", f"k{i}", "--domain", "default"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    printed = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    stored = KeyFile.load(path)
    assert sorted(k.name for k in stored.keys) == ["admin"] + [f"k{i}" for i in range(8)]
    assert all(stored.find(key) is not None for key in printed)
    # and removals in parallel with adds
    procs = [
        subprocess.Popen([*keys, "remove", "--file", str(path), f"k{i}"]) for i in range(4)
    ] + [
        subprocess.Popen([*args, "--name", f"n{i}", "--domain", "default"], stdout=subprocess.PIPE)
        for i in range(4)
    ]
    for p in procs:
        p.communicate(timeout=60)
    names = sorted(k.name for k in KeyFile.load(path).keys)
    assert names == ["admin", "k4", "k5", "k6", "k7", "n0", "n1", "n2", "n3"]


# -- LOW: rule regexes backtrack on client input (ReDoS) -------------------------------------


def test_a_backtracking_rule_regex_cannot_freeze_the_agent(keys, tmp_path):
    engine = EngineOnPort("openai").start()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "rules:\n"
        f"  - {{name: team, match: {{headers: {{x-team: '(x+x+)+y'}}}}, target: '{engine.url}'}}\n"
    )
    agent = None
    try:
        agent = start_agent(engine.url, keys, engine="openai", routes_file=str(routes))
        evil = {**bearer(keys.default), "x-team": "x" * 4000}
        with ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(httpx.get, agent.url + "/v1/models", headers=evil, timeout=30)]
            slow += [pool.submit(httpx.get, agent.url + "/v1/models", headers=evil, timeout=30)]
            time.sleep(0.05)
            health = httpx.get(agent.url + "/health", timeout=5)
            assert health.status_code == 200 and health.elapsed.total_seconds() < 1
            for future in slow:
                resp = future.result()
                assert resp.status_code == 400, resp.text
                assert "took too long" in resp.json()["error"]["message"]
                assert resp.elapsed.total_seconds() < 2
        ok = httpx.get(agent.url + "/v1/models", headers={**bearer(keys.default), "x-team": "xy"})
        assert ok.status_code == 200
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()


# -- MEDIUM and LOW: what one client can hold, and what crosses the agent --------------------

HOSTILE = Path(__file__).with_name("hostile_engine.py")


class Hostile:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process([sys.executable, str(HOSTILE), str(self.port)])
        self.process.wait_for_url(self.url + "/health", timeout=20)

    def stats(self) -> dict:
        return httpx.get(self.url + "/stats", timeout=5).json()


@pytest.fixture
def hostile(keys):
    engine = Hostile()
    agents = []

    def start(**settings: str):
        agent = start_agent(engine.url, keys, engine="openai", **settings)
        agents.append(agent)
        return agent

    try:
        yield engine, start
    finally:
        for agent in agents:
            agent.stop()
        engine.process.stop()


def slow_chat(agent, key: str, delay: float, timeout: float = 30) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "delay": delay}
    return httpx.post(
        agent.url + "/v1/chat/completions", json=body, headers=bearer(key), timeout=timeout
    )


def test_one_key_cannot_take_every_engine_slot(hostile):
    """One key took all 512 upstream pool slots; the others got 504 after the connect
    timeout. Now a key past its share gets a fast 429, the agent past its limit a fast
    503, and another key still gets through."""
    engine, start = hostile
    agent = start(max_concurrency="6", max_key_concurrency="4")
    keys = agent.keys
    with ThreadPoolExecutor(8) as pool:
        hogs = [pool.submit(slow_chat, agent, keys.default, 3) for _ in range(4)]
        wait_until(lambda: engine.stats()["started"] == 4, 5, "4 slow requests at the engine")
        t = time.monotonic()
        extra = slow_chat(agent, keys.default, 0)
        assert extra.status_code == 429 and time.monotonic() - t < 1, extra.text
        assert extra.headers["retry-after"] == "1"
        # another key is served meanwhile; past the agent's own limit: 503 at once
        others = [pool.submit(slow_chat, agent, keys.admin, 3) for _ in range(2)]
        wait_until(lambda: engine.stats()["started"] == 6, 5, "6 slow requests at the engine")
        t = time.monotonic()
        full = slow_chat(agent, keys.admin, 0)  # within the admin key's share
        assert full.status_code == 503 and time.monotonic() - t < 1, full.text
        assert all(f.result().status_code == 200 for f in hogs + others)
    # the slots come back
    assert slow_chat(agent, keys.default, 0).status_code == 200


def test_request_bodies_held_at_once_are_bounded(hostile):
    """40 x 10 MiB bodies to a slow endpoint took the agent to 712 MB. Now the bodies held
    at once have a budget (503 past it)."""
    engine, start = hostile
    agent = start(
        max_body_bytes=str(4 << 20),
        max_buffered_bytes=str(10 << 20),
        max_key_concurrency="256",  # = max_concurrency: the key's share is the whole budget
    )
    rss = agent.rss()
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * (3 << 20)}], "delay": 3}
    post = partial(
        httpx.post,
        agent.url + "/v1/chat/completions",
        json=big,
        headers=agent.headers(),
        timeout=30,
    )
    with ThreadPoolExecutor(8) as pool:
        held = [pool.submit(post) for _ in range(3)]
        wait_until(lambda: engine.stats()["started"] == 3, 10, "3 bodies at the engine")
        refused = post()
        assert refused.status_code == 503, refused.text
        assert all(f.result().status_code == 200 for f in held)
    assert agent.rss() - rss < 60 << 20
    assert post().status_code == 200  # the budget comes back


def test_one_keys_slow_uploads_leave_the_body_budget_to_the_others(hostile):
    """One key's bodies that are announced and then sent slowly held the whole body budget,
    so every other key's request got 503. Now a key holds at most its share (the
    concurrency's, half by default): past it, 429 for that key; the others get in."""
    engine, start = hostile
    agent = start(max_body_bytes=str(4 << 20), max_buffered_bytes=str(8 << 20))
    host, port = agent.url.removeprefix("http://").split(":")
    trickling = []
    try:
        for _ in range(4):  # 4 x 2 MiB announced: the whole budget; the key's share is 4 MiB
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
                b"Authorization: Bearer " + agent.keys.default.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n{"
            )
            trickling.append(sock)
        time.sleep(0.5)
        own = slow_chat(agent, agent.keys.default, 0)
        assert own.status_code == 429, own.text
        other = slow_chat(agent, agent.keys.admin, 0)
        assert other.status_code == 200, other.text
    finally:
        for sock in trickling:
            sock.close()
    wait_until(lambda: slow_chat(agent, agent.keys.default, 0).status_code == 200, 10,
               "the share back once the uploads are gone")  # fmt: skip
    assert engine.stats()["started"] >= 2


def test_a_huge_engine_answer_is_relayed_not_held(hostile):
    """A 300 MB engine answer with a Content-Length took the agent to 669 MB RSS: it was
    buffered whole. Now it is relayed as it arrives, with its length."""
    _, start = hostile
    agent = start()
    rss = agent.rss()
    peak = 0
    received = 0
    with httpx.stream(
        "GET", agent.url + "/v1/big?mb=200", headers=agent.headers(), timeout=60
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-length"] == str(200 << 20)
        for chunk in resp.iter_raw(1 << 20):
            received += len(chunk)
            if received % (16 << 20) < len(chunk):
                peak = max(peak, agent.rss())
    assert received == 200 << 20
    assert peak - rss < 50 << 20, (rss, peak)


def test_a_client_leaving_before_the_answer_cancels_the_engine_request(hostile):
    """A client that left before the answer started did not cancel the engine request:
    every non-streamed generation ran to its end for nobody."""
    engine, start = hostile
    agent = start()
    with pytest.raises(httpx.ReadTimeout):
        slow_chat(agent, agent.keys.default, 30, timeout=1)
    wait_until(lambda: engine.stats()["cancelled"] == 1, 5, "the engine request cancelled")
    assert engine.stats()["finished"] == 0
    wait_until(lambda: agent.in_flight() == 0, 5, "nothing left in flight")


def test_hop_by_hop_headers_stop_at_the_agent_both_ways(hostile):
    engine, start = hostile
    agent = start()
    headers = {
        **agent.headers(),
        "Connection": "keep-alive, X-Client-Secret",
        "X-Client-Secret": "for the agent only",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Trailer": "X-Sum",
        "Proxy-Authorization": "Basic eA==",
        "Proxy-Foo": "bar",
        "X-Kept": "yes",
    }
    resp = httpx.get(agent.url + "/v1/hop", headers=headers)
    assert resp.status_code == 200
    seen = {k.lower() for k in engine.stats()["last_headers"]}
    for name in ("x-client-secret", "keep-alive", "te", "trailer", "proxy-authorization"):
        assert name not in seen, name
    assert "proxy-foo" not in seen and "x-kept" in seen
    got = {k.lower() for k in resp.headers}
    for name in ("x-engine-secret", "keep-alive", "upgrade", "trailer", "proxy-authenticate"):
        assert name not in got, name
    assert resp.headers["x-kept"] == "yes"


def test_the_engine_gets_the_clients_headers_and_no_others(hostile):
    """What the agent forwards is what the client sent (end-to-end headers), with the
    request id: its HTTP client adds none of its own (no Accept, no Accept-Encoding that
    would have the engine compress, no User-Agent naming the agent's stack)."""
    engine, start = hostile
    agent = start()
    host, port = agent.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", "/v1/hop", skip_accept_encoding=True)
    conn.putheader("Authorization", agent.headers()["Authorization"])
    conn.putheader("X-Kept", "yes")
    conn.endheaders()
    assert conn.getresponse().status == 200
    seen = {k.lower() for k in engine.stats()["last_headers"]}
    assert seen == {"host", "x-kept", "x-request-id"}, seen


def test_a_cookie_the_engine_sets_for_one_client_never_reaches_it_for_another(hostile, keys):
    """The agent's client kept the engine's Set-Cookie (for an engine named by host name,
    as in the sandbox) and sent it with every later request of every key. Now the agent
    keeps no cookies: the answer carries the cookie to its own client, and that is all."""
    engine, _ = hostile
    agent = start_agent(engine.url.replace("127.0.0.1", "localhost"), keys, engine="openai")
    try:
        first = httpx.get(agent.url + "/v1/cookie", headers=bearer(keys.default))
        assert first.status_code == 200
        assert "engine-session" in first.headers["set-cookie"]  # the engine's answer, whole
        later = httpx.get(agent.url + "/v1/models", headers=bearer(keys.admin))
        assert later.status_code == 200
        seen = {k.lower(): v for k, v in engine.stats()["last_headers"].items()}
        assert "cookie" not in seen, seen["cookie"]
        own = httpx.get(agent.url + "/v1/models", headers={**bearer(keys.admin), "Cookie": "a=b"})
        assert own.status_code == 200
        assert engine.stats()["last_headers"].get("Cookie") == "a=b"  # a client's own: passed
    finally:
        agent.stop()


def test_a_client_cannot_set_its_own_address_in_the_log(hostile, keys):
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: any local client chose
    the address the access log names. The agent is the front door: it trusts none."""
    _, start = hostile
    agent = start(log_level="debug")  # successes are logged at debug
    spoof = {**bearer(keys.default), "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert httpx.get(agent.url + "/v1/models", headers=spoof).status_code == 200

    def logged() -> list[dict]:  # written after the answer went out
        lines = [json.loads(ln) for ln in agent.process.output().splitlines() if "{" in ln]
        return [ln for ln in lines if ln.get("route") == "/v1/models"]

    wait_until(logged, 10, "the access log line")
    assert [ln["client"] for ln in logged()] == ["127.0.0.1"], logged()


def test_engine_failures_do_not_reveal_the_engine_to_clients(keys, tmp_path):
    """502 messages named the engine's URL and the parser's internals; the log keeps them."""
    port = free_port()  # nothing listens there
    agent = start_agent(f"http://127.0.0.1:{port}", keys, engine="openai", log_level="warning")
    malformed = EngineOnPort("openai", "--malformed").start()
    other = None
    try:
        for path in ("/v1/models", "/api/tags"):
            resp = httpx.get(agent.url + path, headers=bearer(keys.default))
            assert resp.status_code == 502
            assert str(port) not in resp.text and "127.0.0.1" not in resp.text, resp.text
        assert str(port) in agent.process.output()  # the operator still learns where
        other = start_agent(malformed.url, keys, engine="openai")
        chat = {
            "model": "Qwen/Qwen2.5-0.5B-Instruct",
            "messages": [{"role": "user", "content": "x"}],
        }
        resp = httpx.post(
            other.url + "/api/chat", json={**chat, "stream": False}, headers=bearer(keys.default)
        )
        assert resp.status_code == 502, resp.text
        text = resp.text.lower()
        assert str(malformed.port) not in text and "json" in text
        for internal in ("decode", "char ", "line 1", "orjson", "traceback"):
            assert internal not in text, resp.text
    finally:
        agent.stop()
        if other is not None:
            other.stop()
        malformed.stop()

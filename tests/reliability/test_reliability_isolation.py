"""Isolation: a key reaches only its own domains' routes and engines, admin endpoints need an
admin key, and the key file holds only hashes, readable by the agent's group alone.

"The engine records no request" is read from the engines' own access logs."""

from __future__ import annotations

import http.client
import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from reliability_support import (
    CHAT,
    OLLAMA_MODEL,
    EngineOnPort,
    bearer,
    start_agent,
)

# Every way into a domain's engine: OpenAI and Ollama API, reads and generation.
DOMAIN_CALLS = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/completions", {"model": CHAT["model"], "prompt": "hi"}),
    ("POST", "/v1/embeddings", {"model": CHAT["model"], "input": "hi"}),
    ("GET", "/api/tags", None),
    ("POST", "/api/chat", {**CHAT, "stream": False}),
    ("POST", "/api/generate", {"model": CHAT["model"], "prompt": "hi", "stream": False}),
    ("POST", "/api/show", {"model": CHAT["model"]}),
]
MODEL_MANAGEMENT = [
    ("/api/pull", {"model": "evil:1b", "stream": False}),
    ("/api/delete", {"model": OLLAMA_MODEL}),
    ("/api/copy", {"source": OLLAMA_MODEL, "destination": "stolen"}),
    ("/api/create", {"model": "evil", "from": OLLAMA_MODEL}),
    ("/api/push", {"model": OLLAMA_MODEL}),
]


def engine_requests(engine: EngineOnPort) -> int:
    """Requests the engine has logged (both doubles log one line per request)."""
    return sum(1 for line in engine.output().splitlines() if " HTTP/1.1" in line)


def raw_request(url: str, method: str, path: str, key: str, body: object = None) -> int:
    """Send `path` exactly as written (no client-side normalisation of '..', '//', '%2F')."""
    host = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**bearer(key), "Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status >= 400:  # the agent's own errors, or the engine's passed on: JSON
            assert resp.getheader("content-type", "").startswith("application/json"), payload
            error = json.loads(payload)
            if resp.status in (401, 403):
                assert "error" in error, payload
        return resp.status
    finally:
        conn.close()


@pytest.fixture
def two_domains(keys, tmp_path):
    """Engine A serves domain team-a (and the default), engine B serves domain team-b."""
    a = EngineOnPort("openai").start()
    b = EngineOnPort("openai").start()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "rules:\n"
        f"  - {{name: team-b, match: {{domain: ^team-b$}}, target: '{b.url}', engine: openai}}\n"
        f"  - {{name: team-a, match: {{domain: ^team-a$}}, target: '{a.url}', engine: openai}}\n"
    )
    agent = None
    try:
        agent = start_agent(a.url, keys, engine="openai", routes_file=str(routes))
        yield agent, a, b
    finally:
        if agent is not None:
            agent.stop()
        a.stop()
        b.stop()


def test_a_domain_key_never_reaches_another_domains_engine(two_domains):
    agent, a, b = two_domains
    keys = agent.keys
    # the keys work in their own domain, on their own engine
    for key, domain, engine in ((keys.team_a, "team-a", a), (keys.team_b, "team-b", b)):
        before = engine_requests(engine)
        for method, path, body in DOMAIN_CALLS:
            status = raw_request(agent.url, method, f"/{domain}{path}", key, body)
            assert status < 500 and status not in (401, 403), (domain, path, status)
        assert engine_requests(engine) - before >= len(DOMAIN_CALLS)

    served_b = engine_requests(b)
    served_a = engine_requests(a)
    # team-a's key, aimed at team-b by every path spelling a client could try
    tricks = [
        "/team-b{path}",
        "/TEAM-B{path}",
        "/team-a/../team-b{path}",
        "/team-a/%2E%2E/team-b{path}",
        "/team-a%2F..%2Fteam-b{path}",
        "//team-b{path}",
        "/team-b/{path}",
        "/./team-b{path}",
    ]
    for method, path, body in DOMAIN_CALLS:
        for trick in tricks:
            status = raw_request(agent.url, method, trick.format(path=path), keys.team_a, body)
            assert status in (400, 401, 403, 404), (trick, path, status)
        # and the default domain is not team-a's either
        assert raw_request(agent.url, method, path, keys.team_a, body) == 403
        # team-b's key cannot go the other way
        assert raw_request(agent.url, method, "/team-a" + path, keys.team_b, body) == 403
    assert engine_requests(b) == served_b, "engine B saw a request made with team-a's key"
    assert engine_requests(a) == served_a, "engine A saw a request made with team-b's key"


def test_admin_endpoints_and_model_management_need_an_admin_key(keys, tmp_path):
    engine = EngineOnPort("ollama", models_dir=tmp_path / "models").start()
    agent = None
    try:
        agent = start_agent(engine.url, keys, engine="ollama")
        before = engine_requests(engine)
        for path, body in MODEL_MANAGEMENT:
            for prefix in ("", "/default", "/team-a"):
                for key in (keys.default, keys.team_a):
                    status = raw_request(agent.url, "POST", prefix + path, key, body)
                    assert status == 403, (prefix, path, status)
                assert httpx.post(agent.url + prefix + path, json=body).status_code == 401
        for path in ("/metrics", "/admin/routes"):
            assert httpx.get(agent.url + path).status_code == 401
            for key in (keys.default, keys.team_a, keys.team_b):
                resp = httpx.get(agent.url + path, headers=bearer(key))
                assert resp.status_code == 403 and "admin" in resp.json()["error"]["message"]
        assert engine_requests(engine) == before, "a non-admin call reached the engine"
        # the admin key does get through
        resp = httpx.post(
            agent.url + "/api/pull",
            json={"model": "nomic-embed-text:v1.5", "stream": False},
            headers=bearer(keys.admin),
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        assert httpx.get(agent.url + "/metrics", headers=bearer(keys.admin)).status_code == 200
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()


def test_a_leaked_key_file_gives_no_usable_key(keys, tmp_path):
    engine = EngineOnPort("openai").start()
    agent = None
    try:
        agent = start_agent(engine.url, keys, engine="openai")
        stored = json.loads(keys.file.read_text())["keys"]
        for entry in stored:
            for presented in (entry["sha256"], entry["sha256"].upper(), entry["name"]):
                resp = httpx.get(agent.url + "/v1/models", headers=bearer(presented))
                assert resp.status_code == 401, presented
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()


def cube_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cube_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_key_file_is_0640_and_holds_only_hashes(tmp_path: Path):
    key_file = tmp_path / "etc" / "keys.json"
    cube_agent("keys", "init", "--file", str(key_file))
    admin_file = key_file.parent / "admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o640
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    admin = admin_file.read_text().strip()
    added = cube_agent("keys", "add", "--file", str(key_file), "--name", "app", "--domain", "x")
    app = added.stdout.strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o640  # an edit keeps the mode
    text = key_file.read_text()
    for plaintext in (admin, app):
        assert len(plaintext) > 32
        assert plaintext not in text
        assert plaintext.removeprefix("cube_") not in text
    for entry in json.loads(text)["keys"]:
        assert set(entry) <= {"name", "sha256", "domains", "admin", "created"}
        assert len(entry["sha256"]) == 64
    # a second init (every service start runs it) changes nothing
    cube_agent("keys", "init", "--file", str(key_file))
    assert key_file.read_text() == text and admin_file.read_text().strip() == admin
    # `keys list` shows names and grants, never keys or hashes
    listed = cube_agent("keys", "list", "--file", str(key_file), "--json").stdout
    assert admin not in listed and app not in listed and "sha256" not in listed

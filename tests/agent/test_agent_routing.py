"""Routing rules: two engines at once, priority order, every match kind, validation."""

from __future__ import annotations

import subprocess
import sys

import httpx
import ollama
import pytest
from support.engines import start_openai_double

CHAT = {"messages": [{"role": "user", "content": "hi"}], "stream": False}


@pytest.fixture
def two_engines(ollama_double):
    """Ollama (the default) plus a vLLM serving "special", as a routes file would pair them."""
    vllm = start_openai_double(model="special")
    try:
        yield ollama_double, vllm
    finally:
        vllm.stop()


def served_by(agent, path: str, body: dict, headers: dict | None = None, params=None) -> str:
    resp = httpx.post(
        agent.url + path,
        json=body,
        params=params,
        headers={**agent.headers(), **(headers or {})},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()
    # vLLM's OpenAI answers carry a null system_fingerprint, Ollama's "fp_ollama".
    if "system_fingerprint" in data:
        return "ollama" if data["system_fingerprint"] == "fp_ollama" else "vllm"
    return "ollama" if "message" in data and "done" in data else "vllm"


def write_rules(tmp_path, text: str):
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


def test_model_field_sends_one_model_to_another_engine(two_engines, agent_factory, tmp_path):
    ollama_engine, vllm = two_engines
    routes = write_rules(
        tmp_path,
        f"""
rules:
  - name: special-on-vllm
    match: {{body: {{model: ^special$}}}}
    target: {vllm.url}
""",
    )
    agent = agent_factory(ollama_engine.url, routes_file=routes)
    chat = "/v1/chat/completions"
    assert served_by(agent, chat, {**CHAT, "model": "special"}) == "vllm"
    assert served_by(agent, chat, {**CHAT, "model": "llama3.2:3b"}) == "ollama"
    # The same rule serves the Ollama API: translated for vLLM, passed through to Ollama.
    client = ollama.Client(host=agent.url, headers=agent.headers())
    reply = client.chat(model="special", messages=CHAT["messages"], stream=False)
    assert reply.message.content == "Echo: hi"
    assert client.chat(model="llama3.2:3b", messages=CHAT["messages"], stream=False).done


def test_higher_priority_wins_and_ties_keep_file_order(two_engines, agent_factory, tmp_path):
    """The file lists the rules out of priority order: only sorting by priority (stable,
    highest first; no priority is 0) gives these answers."""
    ollama_engine, vllm = two_engines
    routes = write_rules(
        tmp_path,
        f"""
rules:
  - name: no-priority-is-0
    match: {{path: ^/v1/chat/}}
    target: {ollama_engine.url}
  - name: all-chat-to-vllm
    priority: 1
    match: {{path: ^/v1/chat/, methods: [POST]}}
    target: {vllm.url}
  - name: never-reached-tie
    priority: 1
    match: {{path: ^/v1/chat/}}
    target: {ollama_engine.url}
  - name: team-header-to-ollama
    priority: 5
    match: {{headers: {{X-Team: ^blue$}}}}
    target: {ollama_engine.url}
""",
    )
    agent = agent_factory(ollama_engine.url, routes_file=routes)
    chat = "/v1/chat/completions"
    body = {**CHAT, "model": "special"}
    assert served_by(agent, chat, body) == "vllm"
    assert served_by(agent, chat, {**CHAT, "model": "llama3.2:3b"}, {"X-Team": "blue"}) == "ollama"
    assert served_by(agent, chat, body, {"X-Team": "green"}) == "vllm"
    listed = httpx.get(agent.url + "/admin/routes", headers=agent.headers(agent.keys.admin)).json()
    assert [r["name"] for r in listed["rules"]] == [
        "team-header-to-ollama",
        "all-chat-to-vllm",
        "never-reached-tie",
        "no-priority-is-0",
    ]
    assert listed["default"]["target"] == ollama_engine.url


def test_domain_query_and_prefix_strip(two_engines, agent_factory, tmp_path):
    ollama_engine, vllm = two_engines
    routes = write_rules(
        tmp_path,
        f"""
rules:
  - name: team-a-on-vllm
    match: {{domain: ^team-a$}}
    target: {vllm.url}
  - name: query-flag
    match: {{query: {{engine: ^b$}}}}
    target: {vllm.url}/v1
    strip_prefix: /v1
""",
    )
    agent = agent_factory(ollama_engine.url, routes_file=routes)
    body = {**CHAT, "model": "special"}
    resp = httpx.post(
        agent.url + "/team-a/v1/chat/completions",
        json=body,
        headers=agent.headers(agent.keys.team_a),
    )
    assert resp.status_code == 200 and resp.json()["system_fingerprint"] is None  # vLLM's
    assert served_by(agent, "/v1/chat/completions", body, params={"engine": "b"}) == "vllm"


def test_malformed_body_when_a_rule_needs_it_is_400(two_engines, agent_factory, tmp_path):
    ollama_engine, vllm = two_engines
    routes = write_rules(
        tmp_path,
        f"""
rules:
  - name: by-model
    match: {{body: {{model: x}}}}
    target: {vllm.url}
""",
    )
    agent = agent_factory(ollama_engine.url, routes_file=routes)
    resp = httpx.post(agent.url + "/v1/chat/completions", content=b"{nope", headers=agent.headers())
    assert resp.status_code == 400 and "malformed JSON" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            "rules:\n  - name: r\n    match: {path: '(unclosed'}\n    target: http://x\n",
            "rule #1 ('r'): match.path: Value error, invalid regex",
        ),
        ("rules:\n  - name: r\n    target: not-a-url\n", "rule #1 ('r'): target:"),
        ("rules:\n  - name: r\n    target: http://x\n    engine: tgi\n", "rule #1 ('r'): engine:"),
        ("rules:\n  - target: http://x\n", "rule #1: name: Field required"),
        ("rules:\n  - name: r\n    target: http://x\n    colour: red\n", "rule #1 ('r'): colour:"),
        ("rules: [\n", "not YAML"),
    ],
)
def test_a_bad_rule_stops_start_up_with_one_line(tmp_path, agent_env, rules, expected):
    routes = write_rules(tmp_path, rules)
    env = {**agent_env, "UV_CUBE_AGENT_ROUTES_FILE": str(routes), "UV_CUBE_AGENT_AUTH": "off"}
    done = subprocess.run(
        [sys.executable, "-m", "cube_agent"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert str(routes) in lines[0]

"""Browsers: CORS as Ollama does it (OLLAMA_ORIGINS semantics as UV_CUBE_AGENT_ORIGINS), on
every path family, and `GET /` as Ollama's heartbeat. The Ollama double follows Ollama
0.12.3's CORS, so each answer is also compared with what Ollama itself says."""

from __future__ import annotations

import httpx
import pytest

PATHS = ("/api/chat", "/v1/chat/completions", "/team-a/api/chat", "/team-a/v1/models", "/health")


def preflight(url: str, path: str, origin: str) -> httpx.Response:
    return httpx.options(
        url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )


@pytest.mark.parametrize("path", PATHS)
def test_localhost_pages_may_call_by_default(ollama_double, agent_factory, path):
    agent = agent_factory(ollama_double.url)
    answer = preflight(agent.url, path, "http://localhost:5173")
    assert answer.status_code == 204  # before authentication: browsers send no key here
    assert answer.headers["access-control-allow-origin"] == "http://localhost:5173"
    allowed = answer.headers["access-control-allow-headers"].lower().split(",")
    assert {"authorization", "content-type"} <= set(allowed)
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert preflight(ollama_double.url, "/api/chat", "http://localhost:5173").status_code == 204


@pytest.mark.parametrize("path", PATHS)
def test_other_origins_are_refused(ollama_double, agent_factory, path):
    agent = agent_factory(ollama_double.url)
    assert preflight(agent.url, path, "https://evil.example").status_code == 403
    answer = httpx.post(
        agent.url + path,
        headers={**agent.headers(), "Origin": "https://evil.example"},
        json={"model": ollama_double.model, "messages": []},
        timeout=10,
    )
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers
    assert preflight(ollama_double.url, "/api/chat", "https://evil.example").status_code == 403


def test_configured_origins_and_answers_carry_the_header(ollama_double, agent_factory):
    agent = agent_factory(
        ollama_double.url, origins="https://app.example.com, https://*.corp.example"
    )
    for origin in ("https://app.example.com", "https://chat.corp.example"):
        assert preflight(agent.url, "/api/chat", origin).status_code == 204
        answer = httpx.post(
            agent.url + "/api/chat",
            headers={**agent.headers(), "Origin": origin},
            json={
                "model": ollama_double.model,
                "stream": False,
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=10,
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == origin
        assert answer.headers["vary"] == "Origin"
    assert preflight(agent.url, "/api/chat", "https://corp.example.evil").status_code == 403
    # a key is still needed for the call itself
    assert (
        httpx.get(
            agent.url + "/api/tags", headers={"Origin": "https://app.example.com"}, timeout=10
        ).status_code
        == 401
    )


def test_all_origins(ollama_double, agent_factory):
    agent = agent_factory(ollama_double.url, origins="*")
    answer = preflight(agent.url, "/v1/models", "https://anywhere.example")
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"


def test_requests_without_origin_are_untouched(ollama_double, agent_factory):
    agent = agent_factory(ollama_double.url)
    answer = httpx.get(agent.url + "/api/tags", headers=agent.headers(), timeout=10)
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    same_origin = httpx.get(
        agent.url + "/api/tags",
        headers={**agent.headers(), "Origin": agent.url},
        timeout=10,
    )
    assert same_origin.status_code == 200


def test_heartbeat_needs_no_key(ollama_double, agent_factory):
    agent = agent_factory(ollama_double.url)
    for url in (agent.url, ollama_double.url):
        answer = httpx.get(url + "/", timeout=10)
        assert (answer.status_code, answer.text) == (200, "Ollama is running")
        assert httpx.head(url + "/", timeout=10).status_code == 200

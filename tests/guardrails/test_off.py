"""Guardrails off (the default) costs nothing: no import, and the request path is the same."""

import json
import subprocess
import sys

import httpx
import pytest
from cube_agent.guardrails import DEFAULT_CONFIG_DIR
from guardrails_support import Judge, start_agent

# Odd spacing, key order and escapes: any re-serialisation on the way would change them.
RAW = (
    b'{ "stream":false,"model" : "judge",  "messages":[{"content":"card 4111 1111 1111 1111'
    b' \\u00e9t\\u00e9","role":"user"}] ,"x-extra": [1.50, 1e3]}'
)

PROBE = """
import json, sys
from starlette.testclient import TestClient
from cube_agent.app import create_app
from cube_agent.config import load_settings

settings = load_settings(target_url=sys.argv[1], engine="ollama", auth=False,
                         guardrails_config=sys.argv[2])
with TestClient(create_app(settings)) as client:
    status = client.post("/v1/chat/completions", json={
        "model": "judge", "messages": [{"role": "user", "content": "hi"}]}).status_code
print(json.dumps({"status": status, "imported": "nemoguardrails" in sys.modules}))
"""


@pytest.mark.parametrize("config", ["", str(DEFAULT_CONFIG_DIR)])
def test_nemoguardrails_is_imported_only_when_on(judge: Judge, config, request):
    if config:  # on: NeMo must be there (off needs nothing)
        request.getfixturevalue("needs_nemoguardrails")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, judge.url, config],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "imported": bool(config)}


@pytest.fixture(scope="module")
def agent_off(judge: Judge):
    proc = start_agent(judge.url, None)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_off_the_engine_gets_the_same_bytes(agent_off, fresh_judge, path):
    resp = httpx.post(agent_off.url + path, content=RAW, timeout=10)
    assert resp.status_code == 200
    assert [(r["path"], r["raw"]) for r in fresh_judge.received()] == [(path, RAW.decode())]
    assert "guardrails" not in httpx.get(agent_off.url + "/metrics").text

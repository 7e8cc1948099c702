"""The unmodified ollama-js client (npm `ollama`, pinned in tests/agent/ollama_js) through the
agent: version, list, show, streamed tool calls, the tool loop and thinking, in front of the
Ollama double and of OpenAI-only engines alike."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import missing
from support.engines import TOOL_MODEL

JS = Path(__file__).with_name("ollama_js")
CACHE = Path.home() / ".cache" / "cube-hal" / "ollama-js"


@pytest.fixture(scope="module")
def ollama_js() -> Path:
    """A directory with client.mjs and its node_modules, installed once per lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node and npm are not installed (the machine image ships Node.js 20)")
    lock = (JS / "package-lock.json").read_bytes()
    where = CACHE / hashlib.sha256(lock).hexdigest()[:16]
    if not (where / "node_modules" / "ollama").is_dir():
        where.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(JS / name, where / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=where,
            check=True,
            capture_output=True,
            timeout=300,
        )
    shutil.copy(JS / "client.mjs", where / "client.mjs")
    return where


def test_ollama_js(tools_agent, ollama_js):
    name, _, agent = tools_agent
    args = {"host": agent.url, "key": agent.keys.default, "model": TOOL_MODEL}
    done = subprocess.run(
        ["node", "client.mjs", json.dumps(args)],
        cwd=ollama_js,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["version"] == "0.12.3"
    assert got["calls"] == [["get_weather", {"city": "Paris", "days": 2}]]
    assert got["done_reason"] == "stop"
    assert got["second"] == "tool said: 18 degrees"
    assert (got["thinking"], got["content"]) == ("thinking about: why", "Echo: why")
    assert "completion" in got["capabilities"] and got["context_length"][0] > 0
    if name != "llama.cpp":  # llama.cpp's server serves its model under any name
        assert TOOL_MODEL in got["listed"]

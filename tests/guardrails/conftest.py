"""Fixtures for the guardrails suite: the judge engine (a real process on a free port) and
a Guardrails stage built from the shipped default configuration, judging with it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nemoguardrails", reason="pip install './agent[guardrails]'")

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


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
            if "Answer:" in r["body"]["messages"][-1]["content"]
        ]

    def chats(self) -> list[dict]:
        """What reached the engine as the client's own request."""
        return [r for r in self.received() if "Answer:" not in r["raw"]]


@pytest.fixture(scope="session")
def judge() -> Iterator[Judge]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "judge_engine.py"), str(port)])
    try:
        wait_for(f"http://127.0.0.1:{port}/api/version", proc)
        yield Judge(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def fresh_judge(judge: Judge) -> Judge:
    judge.clear()
    return judge

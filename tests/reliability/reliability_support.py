"""Helpers for the reliability tests: the agent as a real process, its keys, what it holds
open towards the engine, its in-flight gauge, and engines that come and go on a fixed port."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from cube_agent.keys import KeyFile
from support import Process, free_port
from support.agent import start_agent_process
from support.engines import OLLAMA_DOUBLE, OPENAI_DOUBLE
from support.timing import wait_until  # noqa: F401 (the suites import it from here)

OLLAMA_MODEL = "llama3.2:3b"
# An instruct model for the vLLM double: it ships a chat template, so chat works.
VLLM_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
CHAT = {"model": VLLM_MODEL, "messages": [{"role": "user", "content": "hello there"}]}
IN_FLIGHT = re.compile(r"^cube_agent_requests_in_flight (\S+)$", re.M)


@dataclass
class Keys:
    file: Path
    admin: str  # every domain and the admin endpoints
    default: str  # domain "default" only (the unprefixed API)
    team_a: str  # domain "team-a" only
    team_b: str  # domain "team-b" only


def make_keys(where: Path) -> Keys:
    kf = KeyFile(where / "keys.json")
    keys = Keys(
        kf.path,
        admin=kf.add("admin", ["*"], admin=True),
        default=kf.add("app", ["default"]),
        team_a=kf.add("team-a", ["team-a"]),
        team_b=kf.add("team-b", ["team-b"]),
    )
    kf.save()
    return keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Agent:
    url: str
    process: Process
    keys: Keys

    @property
    def pid(self) -> int:
        return self.process.pid

    def headers(self, key: str | None = None) -> dict[str, str]:
        return bearer(key or self.keys.default)

    def in_flight(self) -> float:
        text = httpx.get(
            self.url + "/metrics", headers=bearer(self.keys.admin), timeout=10
        ).raise_for_status()
        found = IN_FLIGHT.search(text.text)
        assert found, "cube_agent_requests_in_flight missing from /metrics"
        # The scrape itself is in flight while /metrics renders.
        return float(found[1]) - 1

    def metric(self, name: str) -> float:
        """Sum of every sample of `name` on /metrics (all label sets)."""
        text = httpx.get(self.url + "/metrics", headers=bearer(self.keys.admin), timeout=10).text
        sample = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
        return sum(float(m[1]) for m in sample.finditer(text))

    def upstream_sockets(self, port: int, states: tuple[str, ...] = ("ESTABLISHED",)) -> int:
        """TCP connections from the agent to `port` (the engine) in one of `states`."""
        return sum(
            1
            for c in psutil.Process(self.pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status in states
        )

    def rss(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def stop(self) -> int:
        return self.process.stop()


def start_agent(target_url: str, keys: Keys, **settings: str) -> Agent:
    """`cube-agent serve` on a free port; settings as lower-case names (read_timeout="1")."""
    settings = {"key_file": str(keys.file), "log_level": "warning", **settings}
    url, process, _ = start_agent_process(target_url, **settings)
    return Agent(url, process, keys)


class EngineOnPort:
    """An engine double that can be stopped and started again on the same port (a flapping
    engine); between the two nothing listens there, so connections are refused."""

    def __init__(self, kind: str, *flags: str, models_dir: Path | None = None) -> None:
        self.kind = kind
        self.flags = flags
        self.models_dir = models_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Process | None = None

    def start(self) -> EngineOnPort:
        if self.kind == "openai":
            args = [sys.executable, OPENAI_DOUBLE, "serve", VLLM_MODEL, "--host", "127.0.0.1"]
            args += ["--port", str(self.port), *self.flags]
            self.process = Process(args)
            self.process.wait_for_url(self.url + "/health", timeout=20)
        else:
            assert self.models_dir is not None
            self.process = Process(
                [sys.executable, OLLAMA_DOUBLE, "serve", *self.flags],
                env={
                    "OLLAMA_HOST": f"127.0.0.1:{self.port}",
                    "OLLAMA_MODELS": str(self.models_dir),
                },
            )
            self.process.wait_for_url(self.url + "/api/version", timeout=20)
            # Pulled models live in models_dir, so they survive a restart.
            httpx.post(
                self.url + "/api/pull", json={"model": OLLAMA_MODEL, "stream": False}, timeout=10
            ).raise_for_status()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def output(self) -> str:
        return self.process.output() if self.process else ""

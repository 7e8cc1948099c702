#!/usr/bin/env python3
"""Soak the agent: mixed traffic for a while with the engine flapping, watching its memory.

Starts the vLLM engine double and `cube-agent serve` (this venv), then runs `--clients`
concurrent loops of plain and streamed chat, model lists, the Ollama API (translated) and
bad requests, while the engine is stopped and restarted on the same port. The agent's RSS
is sampled every few seconds. Fails (exit 1, one line) when RSS grows more than
`--rss-growth-mb` after the warm-up, when any request hangs or gets a 500, or when requests
are left in flight at the end. Prints the figures either way.

    python scripts/soak.py --seconds 300        (make soak; SOAK_SECONDS=60 make soak)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
from cube_agent.keys import KeyFile

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "tests" / "doubles" / "openai_double.py"
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
REQUEST_TIMEOUT = 30  # s; a request still open after this counts as hung
IN_FLIGHT = re.compile(r"^cube_agent_requests_in_flight (\S+)$", re.M)


class SoakError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], log: Path, ready_url: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SoakError(f"{args[1]} did not start; see {log}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.engine_port = free_port()
        self.engine_url = f"http://127.0.0.1:{self.engine_port}"
        self.agent_url = f"http://127.0.0.1:{free_port()}"
        self.engine: subprocess.Popen | None = None
        self.agent: subprocess.Popen | None = None
        self.statuses: Counter[str] = Counter()
        self.failures: list[str] = []
        self.rss: list[tuple[float, int]] = []
        kf = KeyFile(workdir / "keys.json")
        self.admin = kf.add("admin", ["*"], admin=True)
        self.key = kf.add("app", ["default"])
        kf.save()

    # -- processes -------------------------------------------------------------------------

    def start_engine(self) -> None:
        self.engine = start(
            [
                *(sys.executable, str(ENGINE), "serve", MODEL, "--host", "127.0.0.1"),
                *("--port", str(self.engine_port), "--chunk-delay", "0.005"),
            ],
            {},
            self.workdir / "engine.log",
            self.engine_url + "/health",
        )

    def start_agent(self) -> None:
        env = {
            "UV_CUBE_AGENT_TARGET_URL": self.engine_url,
            "UV_CUBE_AGENT_ENGINE": "openai",
            "UV_CUBE_AGENT_HOST": "127.0.0.1",
            "UV_CUBE_AGENT_PORT": self.agent_url.rsplit(":", 1)[1],
            "UV_CUBE_AGENT_KEY_FILE": str(self.workdir / "keys.json"),
            "UV_CUBE_AGENT_LOG_LEVEL": "error",
            "UV_CUBE_AGENT_CONNECT_TIMEOUT": "2",
            "UV_CUBE_AGENT_READ_TIMEOUT": "10",
            "UV_CUBE_AGENT_TOTAL_TIMEOUT": "20",
            "UV_CUBE_AGENT_MAX_BODY_BYTES": str(256 * 1024),
        }
        self.agent = start(
            [sys.executable, "-m", "cube_agent", "serve"],
            env,
            self.workdir / "agent.log",
            self.agent_url + "/health",
        )

    def close(self) -> None:
        stop(self.agent)
        stop(self.engine)

    # -- traffic ---------------------------------------------------------------------------

    def requests(self) -> list[tuple[str, str, str, dict | bytes | None, dict[str, str]]]:
        """(label, method, path, body, headers): the mix, drawn from at random."""
        auth = {"Authorization": f"Bearer {self.key}"}
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "tell me a story"}]}
        return [
            ("chat", "POST", "/v1/chat/completions", chat, auth),
            ("chat stream", "POST", "/v1/chat/completions", {**chat, "stream": True}, auth),
            ("models", "GET", "/v1/models", None, auth),
            ("ollama chat", "POST", "/api/chat", chat, auth),
            ("ollama chat plain", "POST", "/api/chat", {**chat, "stream": False}, auth),
            ("ollama tags", "GET", "/api/tags", None, auth),
            ("bad json", "POST", "/v1/chat/completions", b"{not json", auth),
            ("no key", "POST", "/v1/chat/completions", chat, {}),
            ("wrong key", "GET", "/v1/models", None, {"Authorization": "Bearer cube_nope"}),
            ("no such endpoint", "POST", "/api/nothing", chat, auth),
            ("too large", "POST", "/v1/chat/completions", b"x" * (300 * 1024), auth),
        ]

    async def client(self, http: httpx.AsyncClient, deadline: float) -> None:
        mix = self.requests()
        while time.monotonic() < deadline:
            label, method, path, body, headers = random.choice(mix)  # noqa: S311 (a traffic mix)
            kwargs: dict = {"headers": headers}
            if isinstance(body, bytes):
                kwargs["content"] = body
            elif body is not None:
                kwargs["json"] = body
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    async with http.stream(method, self.agent_url + path, **kwargs) as resp:
                        with contextlib.suppress(httpx.RemoteProtocolError):
                            async for _ in resp.aiter_bytes():
                                pass  # a stream the engine broke ends early: that is fine
                status = resp.status_code
            except TimeoutError:
                self.failures.append(f"{label}: no answer within {REQUEST_TIMEOUT} s")
                continue
            except httpx.HTTPError as exc:
                self.failures.append(f"{label}: {type(exc).__name__}: {exc}")
                continue
            self.statuses[f"{label} {status}"] += 1
            if status == 500:
                self.failures.append(f"{label}: 500")

    async def flap(self, deadline: float) -> None:
        """Engine up for --flap-up s, down for --flap-down s, until the end (then up)."""
        flaps = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(min(self.args.flap_up, max(0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                break
            await asyncio.to_thread(stop, self.engine)
            flaps += 1
            await asyncio.sleep(self.args.flap_down)
            await asyncio.to_thread(self.start_engine)
        self.statuses["engine restarts"] = flaps

    async def sample(self, deadline: float) -> None:
        assert self.agent is not None
        proc = psutil.Process(self.agent.pid)
        started = time.monotonic()
        while True:
            self.rss.append((time.monotonic() - started, proc.memory_info().rss))
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(self.args.sample_every)

    async def run(self) -> None:
        deadline = time.monotonic() + self.args.seconds
        limits = httpx.Limits(max_connections=self.args.clients * 2)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT + 5, limits=limits) as http:
            await asyncio.gather(
                self.sample(deadline),
                self.flap(deadline),
                *(self.client(http, deadline) for _ in range(self.args.clients)),
            )

    def in_flight(self) -> float:
        text = httpx.get(
            self.agent_url + "/metrics",
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=10,
        ).text
        found = IN_FLIGHT.search(text)
        return float(found[1]) - 1 if found else -1  # the scrape itself is in flight


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "300"))
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rss-growth-mb", type=float, default=20.0)
    parser.add_argument("--warm-up", type=float, default=None, help="default: a fifth, max 60 s")
    parser.add_argument("--flap-up", type=float, default=15.0)
    parser.add_argument("--flap-down", type=float, default=3.0)
    parser.add_argument("--sample-every", type=float, default=2.0)
    args = parser.parse_args()
    if args.seconds < 10:
        print("soak: --seconds must be at least 10", file=sys.stderr)
        return 2
    warm_up = args.warm_up if args.warm_up is not None else min(60.0, args.seconds / 5)

    with tempfile.TemporaryDirectory(prefix="cube-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            soak.start_engine()
            soak.start_agent()
            print(
                f"soak: {args.seconds:g} s, {args.clients} clients, engine up {args.flap_up:g} s"
                f" / down {args.flap_down:g} s, warm-up {warm_up:g} s",
                flush=True,
            )
            asyncio.run(soak.run())
            time.sleep(1)
            left = soak.in_flight()
        except SoakError as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return 1
        finally:
            soak.close()

    total = sum(v for k, v in soak.statuses.items() if k != "engine restarts")
    for key, count in sorted(soak.statuses.items()):
        print(f"  {key}: {count}")
    after_warm_up = [rss for t, rss in soak.rss if t >= warm_up] or [soak.rss[-1][1]]
    base = after_warm_up[0]
    peak = max(after_warm_up)
    growth = peak - base
    print(
        f"soak: {total} requests; agent RSS start {mb(soak.rss[0][1])}, after warm-up"
        f" {mb(base)}, peak {mb(peak)}, end {mb(soak.rss[-1][1])}; growth after warm-up"
        f" {mb(growth)} (limit {args.rss_growth_mb:g} MB); {len(soak.rss)} samples"
    )
    problems = soak.failures[:5]
    if growth > args.rss_growth_mb * 1e6:
        problems.append(f"RSS grew {mb(growth)} after warm-up (limit {args.rss_growth_mb:g} MB)")
    if left != 0:
        problems.append(f"{left:g} requests still in flight at the end")
    if problems:
        more = len(soak.failures) - 5 if len(soak.failures) > 5 else 0
        print(f"soak: FAILED: {'; '.join(problems)}" + (f" (+{more} more)" if more else ""))
        return 1
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

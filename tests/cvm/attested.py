"""The real agent over TLS with a signed fake TSM behind it, and men in the middle.

- `AttestedAgent`: `cube-agent serve` with its key made at start-up (UV_CUBE_AGENT_TLS=on),
  /attestation backed by fake_tsm.py signing with a test VCEK (tests/support/snp_chain.py).
- `Mitm`: a TLS-terminating HTTP proxy with its OWN certificate in front of an agent, as a
  hostile host would run it: it forwards as it is, rewrites the nonce, or replays a
  report it recorded earlier. It records the headers it saw.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from cube_agent import tls
from cube_agent.keys import KeyFile
from starlette.requests import Request
from starlette.responses import Response
from support import Process, free_port

AGENT = [sys.executable, "-m", "cube_agent", "serve"]


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_for_tls(url: str, process: Process | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", verify=insecure_context(), timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and not process.alive():
            raise RuntimeError(f"the agent exited:\n{process.output()}")
        if time.monotonic() > deadline:
            out = process.output() if process is not None else ""
            raise TimeoutError(f"{url} did not answer over TLS in {timeout} s\n{out}")
        time.sleep(0.1)


@dataclass
class AttestedAgent:
    url: str
    key: str
    process: Process
    env: dict[str, str]

    def stop(self) -> None:
        self.process.stop()


def start_agent(
    tmp_path: Path, tsm_root: Path, target_url: str = "http://127.0.0.1:9", **settings: str
) -> AttestedAgent:
    tmp_path.mkdir(parents=True, exist_ok=True)
    keys = KeyFile(tmp_path / "agent-keys.json")
    key = keys.add("tenant", ["*"])
    keys.save()
    port = free_port()
    env = {
        "UV_CUBE_AGENT_TARGET_URL": target_url,
        "UV_CUBE_AGENT_HOST": "127.0.0.1",
        "UV_CUBE_AGENT_PORT": str(port),
        "UV_CUBE_AGENT_TLS": "on",
        "UV_CUBE_AGENT_KEY_FILE": str(keys.path),
        "UV_CUBE_AGENT_TSM_ROOT": str(tsm_root),
        **{f"UV_CUBE_AGENT_{k.upper()}": str(v) for k, v in settings.items()},
    }
    process = Process(AGENT, env=env)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_for_tls(url, process)
    except Exception:
        process.stop()
        raise
    return AttestedAgent(url, key, process, env)


@dataclass
class Mitm:
    """mode: "forward" (relay as is), "rewrite-nonce" (ask the agent for another nonce),
    "replay" (answer every attestation with the first one recorded)."""

    upstream: str
    mode: str = "forward"
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    recorded: bytes | None = None

    def __post_init__(self) -> None:
        self.identity = tls.generate()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
            ssl_certfile=self.identity.serve_path(),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    async def app(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        self.seen_headers.append(dict(request.headers))
        attestation = request.url.path == "/attestation"
        if attestation and self.mode == "rewrite-nonce":
            body = json.dumps({"nonce": "ab" * 32}).encode()
        if attestation and self.mode == "replay" and self.recorded is not None:
            answer = json.loads(self.recorded)
            answer["nonce"] = json.loads(body)["nonce"]  # claims the new nonce: a lie
            await Response(json.dumps(answer), media_type="application/json")(scope, receive, send)
            return
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        async with httpx.AsyncClient(verify=insecure_context()) as client:
            upstream = await client.request(
                request.method, self.upstream + request.url.path, content=body, headers=headers
            )
        if attestation and self.recorded is None:
            self.recorded = upstream.content
        out = {
            k: v
            for k, v in upstream.headers.items()
            if k not in ("content-length", "transfer-encoding", "content-encoding")
        }
        response = Response(upstream.content, upstream.status_code, headers=out)
        await response(scope, receive, send)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def port_answers_plain_http(host: str, port: int) -> bool:
    """Whether a plain HTTP request to host:port gets an HTTP answer."""
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        try:
            data = s.recv(100)
        except (TimeoutError, ConnectionResetError):
            return False
    return data.startswith(b"HTTP/1.1 200")


Factory = Callable[..., AttestedAgent]

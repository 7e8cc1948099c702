#!/usr/bin/env python3
"""make bench: what the Cube agent costs in front of an engine, measured against its peers.

One run on this machine, the same load against seven contenders, all on loopback:

  direct    the engine double (nginx + echo module: fixed JSON, fixed SSE), never the bottleneck
  nginx     nginx proxy_pass with a keepalive upstream: the C reference
  nginx-tls the same with TLS terminated by nginx: the C reference over TLS
  bare      a bare Python pass-through proxy (bare_proxy.py): the Python floor
  litellm   the LiteLLM proxy, installed into its own cached venv: the Python peer
  agent     the Cube agent with auth (a real key file, Bearer key) and routing rules on
  agent-tls the same agent serving HTTPS with its key made at start-up, as in the image

Load comes from wrk (post.lua) at concurrency 1 and 32, plain and streaming; time to the
first streamed chunk from a small sequential client against a stream the engine sends with
gaps. Contenders are alternated and each round is repeated; medians are reported. The
table is printed as Markdown and everything is saved as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LITELLM_VERSION = "1.108.0"  # the newest whose [proxy] extra resolves from PyPI here
GAP_S = 0.02  # between the events of the gapped stream used for time to first chunk
PATH = "/v1/chat/completions"
MODEL = "bench"
PLAIN_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
)
STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": True,
    }
)
# The engine recognises "ttfb-probe" in the body and answers with the gapped stream.
PROBE_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "ttfb-probe"}], "stream": True}
)
SCENARIOS = [("plain", 1), ("plain", 32), ("stream", 1), ("stream", 32)]
NAMES = ["direct", "nginx", "nginx-tls", "bare", "litellm", "agent", "agent-tls"]
AGENTS = ("agent", "agent-tls")  # the targets are checked for both

# Targets from issue 9, checked against the agent.
MAX_ADDED_P50_MS = 0.5
MIN_VS_BARE = 0.8
MIN_VS_LITELLM = 3.0
MAX_P99_OVER_P50 = 4.0
MAX_ADDED_TTFB_MS = 1.0
MAX_IDLE_RSS_MB = 80.0


class BenchError(Exception):
    """Stops the run; the message is one line."""


@dataclass
class Contender:
    name: str
    url: str
    key: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    log: Path | None = None
    note: str = ""

    @property
    def pid(self) -> int:
        return self.procs[-1].pid


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a process in its own session so that it and its children stop together."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def connection(url: str, timeout: float) -> http.client.HTTPConnection:
    """Plain or TLS, by the URL; TLS unverified (the benchmark measures, it trusts nothing)."""
    scheme, _, address = url.partition("://")
    host, port = address.split(":")
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return http.client.HTTPSConnection(host, int(port), timeout=timeout, context=ctx)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def request(
    url: str, body: str, key: str = "", timeout: float = 10.0
) -> tuple[int, bytes, dict[str, str]]:
    conn = connection(url, timeout)
    try:
        conn.request("POST", PATH, body=body, headers=headers(key))
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def headers(key: str) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    return h


def wait_ready(c: Contender, timeout: float) -> None:
    """Ready means a correct answer, plain and streamed, through this contender."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in c.procs):
            raise BenchError(f"{c.name} exited at start (log: {c.log}): {tail(c.log)}")
        try:
            status, body, _ = request(c.url, PLAIN_BODY, c.key, timeout=5)
            if status == 200 and b"chat.completion" in body:
                status, body, _ = request(c.url, STREAM_BODY, c.key, timeout=5)
                if status == 200 and body.count(b"data:") >= 2 and b"[DONE]" in body:
                    return
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BenchError(f"{c.name} not ready after {timeout:.0f} s ({last}; log: {c.log})")


def tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def render(template: Path, out: Path, **values: object) -> Path:
    text = template.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    out.write_text(text)
    return out


def start_nginx(name: str, template: Path, run: Path, **values: object) -> Contender:
    port = free_port()
    conf = render(template, run / f"{name}.conf", DIR=run, PORT=port, **values)
    log = run / f"{name}.log"
    if "ssl_certificate" in conf.read_text():
        from cube_agent import tls  # the agent's own key type: ECDSA P-256, self-signed

        identity = tls.generate()
        (run / "tls-cert.pem").write_bytes(identity.cert_pem)
        (run / "tls-key.pem").write_bytes(identity.key_pem)
    scheme = "https" if "ssl_certificate" in conf.read_text() else "http"
    proc = spawn(["nginx", "-p", str(run), "-c", str(conf), "-g", "daemon off;"], log)
    return Contender(name, f"{scheme}://127.0.0.1:{port}", procs=[proc], log=log)


def uvicorn_flags(port: int) -> list[str]:
    # What `cube-agent serve` runs too: one worker, uvloop, httptools, no access log.
    return [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def start_bare(engine: str, run: Path) -> Contender:
    port = free_port()
    log = run / "bare.log"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "bare_proxy:create_app"]
    cmd += ["--app-dir", str(HERE), *uvicorn_flags(port)]
    proc = spawn(cmd, log, {"BENCH_TARGET_URL": engine})
    return Contender("bare", f"http://127.0.0.1:{port}", procs=[proc], log=log)


def write_agent_files(engine: str, run: Path) -> tuple[Path, Path, str]:
    """A real key file (the agent's documented format: SHA-256 of the key) and a routes
    file whose rules are all evaluated on each request, the one that matches after parsing
    the body (routing by model). The others point at an Ollama that is never reached."""
    key = "cube_bench_" + os.urandom(24).hex()
    run.mkdir(parents=True, exist_ok=True)
    key_file = run / "keys.json"
    digest = hashlib.sha256(key.encode()).hexdigest()
    entry = {"name": "bench", "sha256": digest, "domains": ["*"], "admin": False}
    key_file.write_text(json.dumps({"keys": [entry]}))
    routes = {
        "rules": [
            {
                "name": "ollama-api",
                "priority": 30,
                "match": {"path": "^/api/"},
                "target": "http://127.0.0.1:9",
                "engine": "ollama",
            },
            {
                "name": "team-blue",
                "priority": 20,
                "match": {"headers": {"x-team": "^blue$"}},
                "target": "http://127.0.0.1:9",
                "engine": "ollama",
            },
            {
                "name": "bench-model",
                "priority": 10,
                "match": {"path": f"^{PATH}$", "methods": ["POST"], "body": {"model": "^bench$"}},
                "target": engine,
                "engine": "openai",
            },
        ]
    }
    routes_file = run / "routes.yaml"
    routes_file.write_text(json.dumps(routes, indent=2))  # JSON is YAML
    return key_file, routes_file, key


def start_agent(engine: str, run: Path, name: str = "agent") -> Contender:
    port = free_port()
    log = run / f"{name}.log"
    key_file, routes_file, key = write_agent_files(engine, run / name)
    env = {
        "UV_CUBE_AGENT_TARGET_URL": engine,
        "UV_CUBE_AGENT_ENGINE": "openai",
        "UV_CUBE_AGENT_HOST": "127.0.0.1",
        "UV_CUBE_AGENT_PORT": str(port),
        "UV_CUBE_AGENT_KEY_FILE": str(key_file),
        "UV_CUBE_AGENT_AUTH": "on",
        "UV_CUBE_AGENT_ROUTES_FILE": str(routes_file),
        "UV_CUBE_AGENT_LOG_LEVEL": "info",  # the default; requests that succeed log nothing
        # agent-tls: HTTPS with a key made in memory at start-up, as the image serves it
        "UV_CUBE_AGENT_TLS": "on" if name == "agent-tls" else "off",
    }
    # As deployed: `cube-agent serve`, which runs uvicorn with uvloop and httptools when
    # they are installed (preflight checks they are), one worker, no access log.
    proc = spawn([sys.executable, "-m", "cube_agent", "serve"], log, env)
    scheme = "https" if name == "agent-tls" else "http"
    return Contender(name, f"{scheme}://127.0.0.1:{port}", key=key, procs=[proc], log=log)


def litellm_venv(cache: Path, version: str) -> Path:
    """LiteLLM in its own venv keyed by version, so it never touches the project's."""
    venv = cache / f"litellm-{version}"
    if (venv / ".installed").exists():
        return venv
    print(f"bench: installing litellm[proxy]=={version} into {venv} (once)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check"]
    res = subprocess.run(
        [*pip, f"litellm[proxy]=={version}"], capture_output=True, text=True, timeout=600
    )
    if res.returncode != 0:
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
        raise BenchError(f"pip failed: {(errors or ['?'])[-1]}")
    (venv / ".installed").touch()
    return venv


def start_litellm(engine: str, run: Path, cache: Path, version: str) -> Contender:
    venv = litellm_venv(cache, version)
    port = free_port()
    log = run / "litellm.log"
    key = "sk-bench-" + os.urandom(16).hex()
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{engine}/v1",
                    "api_key": "unused",
                },
            }
        ],
        "litellm_settings": {"telemetry": False, "set_verbose": False},
    }
    conf = run / "litellm.yaml"
    conf.write_text(json.dumps(config, indent=2))
    env = {
        "LITELLM_MASTER_KEY": key,
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download at start: there is no network
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    cmd = [str(venv / "bin/litellm"), "--config", str(conf), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--num_workers", "1"]
    proc = spawn(cmd, log, env)
    return Contender("litellm", f"http://127.0.0.1:{port}", key=key, procs=[proc], log=log)


# --- measurements ------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue
    return total / 1024


class PeakRss:
    """Samples a process tree's RSS every 50 ms while a load runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wrk(c: Contender, body: str, conns: int, seconds: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["-s", str(HERE / "post.lua"), c.url + PATH]
    env = {**os.environ, "BENCH_BODY": body, "BENCH_KEY": c.key}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if res.returncode != 0 or line is None:
        raise BenchError(f"wrk against {c.name} failed: {(res.stderr or res.stdout).strip()}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "errors": sum(raw["errors"].values()),
    }


def first_chunks(c: Contender, n: int) -> dict:
    """n sequential streamed requests on one keep-alive connection: time from sending the
    request to the first SSE event, and from the first event to the last. The engine sends
    the first event at once and the others GAP_S apart, so a proxy that buffers shows a
    late first event and a collapsed spread."""
    conn = connection(c.url, 10)
    ttfb, spread = [], []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("POST", PATH, body=PROBE_BODY, headers=headers(c.key))
            resp = conn.getresponse()
            if resp.status != 200:
                raise BenchError(f"{c.name}: streamed probe got HTTP {resp.status}")
            first = last = None
            while line := resp.readline():
                if line.startswith(b"data:"):
                    last = time.perf_counter()
                    first = first or last
            if first is None:
                raise BenchError(f"{c.name}: streamed probe got no SSE event")
            ttfb.append((first - t0) * 1000)
            spread.append((last - first) * 1000)
    finally:
        conn.close()
    return {"ttfb_ms": statistics.median(ttfb), "spread_ms": statistics.median(spread)}


# --- the run -----------------------------------------------------------------------------


def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def measure(contenders: list[Contender], args: argparse.Namespace) -> dict:
    bodies = {"plain": PLAIN_BODY, "stream": STREAM_BODY}
    runs: dict[str, dict[str, list[dict]]] = {c.name: {} for c in contenders}
    probes: dict[str, list[dict]] = {c.name: [] for c in contenders}
    rss = {c.name: {"idle_mb": 0.0, "load_mb": 0.0} for c in contenders}

    for c in contenders:  # warm-up: connection pools, caches, lazy imports
        for kind in bodies:
            wrk(c, bodies[kind], 32, args.warmup)
        first_chunks(c, 2)
        time.sleep(0.5)
        rss[c.name]["idle_mb"] = rss_mb(c.pid)

    for r in range(args.rounds):
        print(f"bench: round {r + 1}/{args.rounds}", flush=True)
        for kind, conns in SCENARIOS:
            for c in rotate(contenders, r):
                with PeakRss(c.pid) as peak:
                    res = wrk(c, bodies[kind], conns, args.duration)
                if conns == 32:
                    rss[c.name]["load_mb"] = max(rss[c.name]["load_mb"], peak.peak)
                runs[c.name].setdefault(f"{kind}_c{conns}", []).append(res)
        for c in rotate(contenders, r):
            probes[c.name].append(first_chunks(c, args.ttfb_requests))

    results = {}
    for c in contenders:
        fig: dict = {}
        for scen, rs in runs[c.name].items():
            fig[scen] = {
                "rps": statistics.median(x["rps"] for x in rs),
                "p50_ms": statistics.median(x["p50_ms"] for x in rs),
                "p99_ms": statistics.median(x["p99_ms"] for x in rs),
                "errors": sum(x["errors"] for x in rs),
                "rounds": rs,
            }
        fig["ttfb_ms"] = statistics.median(p["ttfb_ms"] for p in probes[c.name])
        fig["spread_ms"] = statistics.median(p["spread_ms"] for p in probes[c.name])
        fig["rss_idle_mb"] = rss[c.name]["idle_mb"]
        fig["rss_load_mb"] = rss[c.name]["load_mb"]
        results[c.name] = fig
    return results


def div(x: float, y: float) -> float:
    """A ratio that survives a peer with no successful request (inf: it did nothing)."""
    return x / y if y else float("inf")


def paired_ratio(a: dict, b: dict) -> float:
    """The median of the per-round req/s ratios of `a` to `b`: the two run seconds apart in
    each round, so a machine that slows down between rounds (neighbours, steal) slows both;
    the ratio of the medians would mix one round's `a` with another's `b`."""
    pairs = list(zip(a.get("rounds", []), b.get("rounds", []), strict=False))
    if not pairs:
        return div(a["rps"], b["rps"])
    return statistics.median(div(x["rps"], y["rps"]) for x, y in pairs)


def check_targets(res: dict, name: str = "agent") -> list[dict]:
    """Each target of issue 9 against the agent (or agent-tls: the same targets against the
    same plain references, so the price of TLS counts against it)."""
    a, d = res[name], res["direct"]
    bare, lite = res.get("bare"), res.get("litellm")
    out = []

    def add(target: str, value: str, ok: bool | None) -> None:
        out.append({"target": target, "measured": value, "pass": ok})

    for kind in ("plain", "stream"):
        added = a[f"{kind}_c1"]["p50_ms"] - d[f"{kind}_c1"]["p50_ms"]
        add(
            f"c=1 {kind}: p50 added over direct ≤ {MAX_ADDED_P50_MS} ms",
            f"{added:+.2f} ms",
            added <= MAX_ADDED_P50_MS,
        )
    for kind in ("plain", "stream"):
        scen = f"{kind}_c32"
        if bare is None:
            add(f"c=32 {kind}: req/s ≥ {MIN_VS_BARE}x bare proxy", "bare proxy not run", None)
        else:
            ratio = paired_ratio(a[scen], bare[scen])
            add(
                f"c=32 {kind}: req/s ≥ {MIN_VS_BARE}x bare proxy",
                f"{ratio:.2f}x",
                ratio >= MIN_VS_BARE,
            )
        if lite is None:
            add(f"c=32 {kind}: req/s ≥ {MIN_VS_LITELLM:.0f}x LiteLLM", "LiteLLM not run", None)
        else:
            ratio = div(a[scen]["rps"], lite[scen]["rps"])
            add(
                f"c=32 {kind}: req/s ≥ {MIN_VS_LITELLM:.0f}x LiteLLM",
                f"{ratio:.1f}x",
                ratio >= MIN_VS_LITELLM,
            )
        ratio = div(a[scen]["p99_ms"], a[scen]["p50_ms"])
        add(
            f"c=32 {kind}: p99 ≤ {MAX_P99_OVER_P50:.0f}x own p50",
            f"{ratio:.1f}x",
            ratio <= MAX_P99_OVER_P50,
        )
    added = a["ttfb_ms"] - d["ttfb_ms"]
    add(
        f"first streamed chunk: added ≤ {MAX_ADDED_TTFB_MS} ms",
        f"{added:+.2f} ms",
        added <= MAX_ADDED_TTFB_MS,
    )
    kept = div(a["spread_ms"], d["spread_ms"])
    add(
        "stream not buffered: first-to-last event spread ≥ 0.8x direct", f"{kept:.2f}x", kept >= 0.8
    )
    add(
        f"idle RSS ≤ {MAX_IDLE_RSS_MB:.0f} MB",
        f"{a['rss_idle_mb']:.0f} MB",
        a["rss_idle_mb"] <= MAX_IDLE_RSS_MB,
    )
    errors = sum(a[s]["errors"] for s in a if isinstance(a[s], dict))
    add("no failed requests through the agent", str(errors), errors == 0)
    return out


def tls_price(res: dict) -> list[list[str]]:
    """What TLS costs each server that has both: req/s ratio and p50 added, per scenario."""
    rows = []
    for plain, tls in (("nginx", "nginx-tls"), ("agent", "agent-tls")):
        if plain not in res or tls not in res:
            continue
        row = [f"{tls} vs {plain}"]
        for kind, conns in SCENARIOS:
            s = f"{kind}_c{conns}"
            ratio = div(res[tls][s]["rps"], res[plain][s]["rps"])
            row.append(f"{ratio:.2f}x / {res[tls][s]['p50_ms'] - res[plain][s]['p50_ms']:+.2f} ms")
        row.append(f"{res[tls]['ttfb_ms'] - res[plain]['ttfb_ms']:+.2f} ms")
        row.append(f"{res[tls]['rss_idle_mb'] - res[plain]['rss_idle_mb']:+.0f} MB")
        rows.append(row)
    return rows


# --- the report --------------------------------------------------------------------------


def fmt_rps(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 10000 else f"{x:.0f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(results: dict, targets: list[dict], notes: dict[str, str]) -> str:
    names = [n for n in NAMES if n in results]
    d = results["direct"]
    parts = []
    for kind in ("plain", "stream"):
        header = ["contender"]
        for conns in (1, 32):
            header += [f"c={conns} req/s", f"c={conns} p50 ms", f"c={conns} p99 ms"]
        header += ["c=32 req/s ÷ direct", "c=1 p50 added ms"]
        rows = []
        for n in names:
            r = results[n]
            row = [n]
            for conns in (1, 32):
                s = r[f"{kind}_c{conns}"]
                flag = f" ({s['errors']} errors)" if s["errors"] else ""
                row += [fmt_rps(s["rps"]) + flag, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}"]
            row.append(f"{div(r[f'{kind}_c32']['rps'], d[f'{kind}_c32']['rps']):.3f}")
            row.append(f"{r[f'{kind}_c1']['p50_ms'] - d[f'{kind}_c1']['p50_ms']:+.2f}")
            rows.append(row)
        parts.append(
            f'**{kind}** (`"stream": {str(kind == "stream").lower()}`)\n\n' + table(header, rows)
        )

    rows = []
    for n in names:
        r = results[n]
        rows.append(
            [
                n,
                f"{r['ttfb_ms']:.2f}",
                f"{r['ttfb_ms'] - d['ttfb_ms']:+.2f}",
                f"{r['spread_ms']:.0f}",
                "—" if n == "direct" else f"{r['rss_idle_mb']:.0f}",
                "—" if n == "direct" else f"{r['rss_load_mb']:.0f}",
            ]
        )
    parts.append(
        "**first streamed chunk and memory** (RSS of the whole process tree)\n\n"
        + table(
            [
                "contender",
                "first chunk ms",
                "added ms",
                "first→last event ms",
                "RSS idle MB",
                "RSS c=32 MB",
            ],
            rows,
        )
    )

    a = results.get("agent")
    rows = []
    for peer in names:
        if a is None or peer in AGENTS:
            continue
        p = results[peer]
        row = [peer]
        for kind, conns in SCENARIOS:
            s = f"{kind}_c{conns}"
            rps, p50 = div(a[s]["rps"], p[s]["rps"]), div(a[s]["p50_ms"], p[s]["p50_ms"])
            row.append(f"{rps:.2f}x / {p50:.2f}x")
        rows.append(row)
    if rows:
        parts.append(
            "**agent ÷ each peer** (req/s ratio / p50 ratio)\n\n"
            + table(["peer"] + [f"{k} c={c}" for k, c in SCENARIOS], rows)
        )

    rows = tls_price(results)
    if rows:
        parts.append(
            "**the price of TLS** (req/s ratio / p50 added; first chunk and idle RSS added)\n\n"
            + table(
                ["server"] + [f"{k} c={c}" for k, c in SCENARIOS] + ["first chunk", "RSS idle"],
                rows,
            )
        )

    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    by_agent: dict[str, list[dict]] = {}
    for t in targets:
        by_agent.setdefault(t.get("agent", "agent"), []).append(t)
    for name, ts in by_agent.items():
        rows = [[t["target"], t["measured"], verdict[t["pass"]]] for t in ts]
        parts.append(f"**targets ({name})**\n\n" + table(["target", "measured", "result"], rows))
    if notes:
        parts.append("\n".join(f"- {n}: {why}" for n, why in notes.items()))
    return "\n\n".join(parts)


def machine() -> dict:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.machine(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }


def versions(litellm: Contender | None) -> dict:
    def out(cmd: list[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (res.stdout + res.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    import importlib.metadata as md

    v = {"nginx": out(["nginx", "-v"]), "wrk": out(["wrk", "-v"])}
    for pkg in ("aiohttp", "uvicorn", "uvloop", "httptools", "cube-agent"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = "?"
    if litellm is not None:
        v["litellm"] = LITELLM_VERSION
    return v


def preflight(names: list[str]) -> None:
    for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk")):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found (apt-get install {pkg})")
    if not Path("/usr/lib/nginx/modules/ngx_http_echo_module.so").exists():
        raise BenchError("nginx echo module missing (apt-get install libnginx-mod-http-echo)")
    for mod in ("aiohttp", "uvicorn", "uvloop", "httptools"):
        try:
            __import__(mod)
        except ImportError:
            raise BenchError(
                f"python module {mod} missing from {sys.executable} (make venv)"
            ) from None
    if set(AGENTS) & set(names) or "nginx-tls" in names:
        try:
            __import__("cube_agent.app")
        except ImportError as exc:
            raise BenchError(f"the agent does not import: {exc}") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=2, help="seconds per wrk run (default 2)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, medians taken (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up seconds per load kind")
    ap.add_argument("--ttfb-requests", type=int, default=20, help="streamed probes per round")
    ap.add_argument("--quick", action="store_true", help="one round, few probes: a smoke run")
    ap.add_argument(
        "--contenders",
        default=",".join(NAMES),
        help="comma-separated subset of " + ",".join(NAMES) + " (direct is always run)",
    )
    ap.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    ap.add_argument("--litellm-version", default=LITELLM_VERSION)
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cube-hal",
    )
    ap.add_argument("--out", type=Path, default=REPO / "build/bench/results.json")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.ttfb_requests = 1, 3
    names = ["direct", *(n for n in args.contenders.split(",") if n and n != "direct")]
    unknown = set(names) - set(NAMES)
    if unknown:
        ap.error(f"unknown contender {', '.join(sorted(unknown))}")
    if args.no_litellm and "litellm" in names:
        names.remove("litellm")
    if min(args.duration, args.rounds, args.warmup, args.ttfb_requests) < 1:
        ap.error("--duration, --rounds, --warmup and --ttfb-requests must be ≥ 1")

    started = time.monotonic()
    run = args.out.parent / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    contenders: list[Contender] = []
    notes: dict[str, str] = {}
    try:
        preflight(names)
        engine = start_nginx("direct", HERE / "engine.conf", run, GAP=GAP_S)
        contenders.append(engine)
        wait_ready(engine, 10)
        if "nginx" in names:
            contenders.append(
                start_nginx(
                    "nginx", HERE / "proxy.conf", run, ENGINE_PORT=engine.url.rsplit(":", 1)[1]
                )
            )
        if "bare" in names:
            contenders.append(start_bare(engine.url, run))
        if "nginx-tls" in names:
            contenders.append(
                start_nginx(
                    "nginx-tls",
                    HERE / "proxy-tls.conf",
                    run,
                    ENGINE_PORT=engine.url.rsplit(":", 1)[1],
                )
            )
        for name in AGENTS:
            if name in names:
                contenders.append(start_agent(engine.url, run, name))
        litellm = None
        if "litellm" not in names:
            notes["litellm"] = "left out on request"
        else:
            try:
                litellm = start_litellm(engine.url, run, args.cache_dir, args.litellm_version)
                contenders.append(litellm)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                notes["litellm"] = f"not run: {exc}"
        for c in contenders:
            try:
                wait_ready(c, 60 if c is litellm else 20)
            except BenchError as exc:
                if c is not litellm:
                    raise
                notes["litellm"] = f"not run: {exc}"
                stop(c.procs[0])
                contenders.remove(c)
                litellm = None
        contenders.sort(key=lambda c: NAMES.index(c.name))
        print("bench: " + ", ".join(f"{c.name} {c.url}" for c in contenders), flush=True)

        results = measure(contenders, args)
        targets = [
            {**t, "agent": name}
            for name in AGENTS
            if name in results
            for t in check_targets(results, name)
        ]
        text = report(results, targets, notes)
        data = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "seconds": round(time.monotonic() - started, 1),
            "settings": {
                "duration_s": args.duration,
                "rounds": args.rounds,
                "warmup_s": args.warmup,
                "ttfb_requests": args.ttfb_requests,
                "gap_ms": GAP_S * 1000,
            },
            "machine": machine(),
            "versions": versions(litellm),
            "contenders": {c.name: c.url for c in contenders},
            "notes": notes,
            "results": results,
            "targets": targets,
            "table": text,
        }
        args.out.write_text(json.dumps(data, indent=2) + "\n")
        print()
        print(text)
        print(f"\nbench: {data['seconds']:.0f} s; results in {args.out}")
        return 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        for c in reversed(contenders):
            for p in c.procs:
                stop(p)


if __name__ == "__main__":
    sys.exit(main())

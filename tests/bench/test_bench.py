"""`make bench` end to end on a tiny load: every contender runs, every figure is measured,
the table and the JSON say the same thing, and the verdicts follow the figures.

The timings themselves are not checked (they swing with the machine's load); LiteLLM is
left out to keep this short (its install alone takes over a minute on a fresh machine).
About 35 s.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import missing

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/bench/bench.py"
CONTENDERS = ["direct", "nginx", "nginx-tls", "bare", "agent", "agent-tls"]
SCENARIOS = ["plain_c1", "plain_c32", "stream_c1", "stream_c32"]

pytestmark = pytest.mark.slow


def _load_bench():
    spec = importlib.util.spec_from_file_location("cube_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (scripts/install-host-deps.sh)")
    out = tmp_path_factory.mktemp("bench") / "results.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--duration", "1", "--warmup", "1"]
    cmd += ["--no-litellm", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


def test_every_contender_gets_every_figure(run) -> None:
    _, data = run
    results = data["results"]
    assert sorted(results) == sorted(CONTENDERS)
    for name in CONTENDERS:
        for scen in SCENARIOS:
            fig = results[name][scen]
            assert fig["rps"] > 0, (name, scen)
            assert 0 < fig["p50_ms"] <= fig["p99_ms"], (name, scen)
            assert fig["errors"] == 0, (name, scen)
        assert results[name]["ttfb_ms"] > 0
        if name != "direct":
            assert results[name]["rss_idle_mb"] > 1
            assert results[name]["rss_load_mb"] >= results[name]["rss_idle_mb"] * 0.9
    assert "left out" in data["notes"]["litellm"]


def test_engine_double_streams_with_gaps(run) -> None:
    # The first-chunk probe means something only if the engine really spaces its events:
    # three gaps between the first and the last event.
    _, data = run
    gap_ms = data["settings"]["gap_ms"]
    assert data["results"]["direct"]["spread_ms"] >= 3 * gap_ms * 0.9
    assert data["results"]["direct"]["ttfb_ms"] < gap_ms


def test_table_is_printed_and_saved(run) -> None:
    proc, data = run
    assert data["table"] in proc.stdout
    for name in CONTENDERS:
        assert f"| {name} |" in data["table"]
    for target in data["targets"]:
        assert target["target"] in data["table"]
    # The saved verdicts are the ones the saved figures give; only LiteLLM's (not run) are
    # undecided.
    for name in ("agent", "agent-tls"):
        saved = [{k: v for k, v in t.items() if k != "agent"} for t in data["targets"]]
        saved = [t for t, a in zip(saved, data["targets"], strict=True) if a["agent"] == name]
        assert saved == bench.check_targets(data["results"], name)
        for target in saved:
            assert (target["pass"] is None) == ("LiteLLM" in target["target"]), target
    assert "LiteLLM not run" in data["table"]
    agent_row = next(ln for ln in data["table"].splitlines() if ln.startswith("| agent |"))
    assert bench.fmt_rps(data["results"]["agent"]["plain_c32"]["rps"]) in agent_row


@pytest.mark.parametrize("name", ["agent", "agent-tls"])
def test_measured_idle_rss_and_stream_relay_meet_their_targets(run, name) -> None:
    """Two targets that are bounds, not speeds, so they hold on a loaded machine too: the
    idle agent's RSS, and a stream that keeps the engine's spacing (a relay that buffered
    it would squeeze the first-to-last spread to nothing)."""
    _, data = run
    verdicts = {t["target"]: t for t in bench.check_targets(data["results"], name)}
    idle = next(t for k, t in verdicts.items() if k.startswith("idle RSS"))
    relay = next(t for k, t in verdicts.items() if k.startswith("stream not buffered"))
    assert idle["pass"] is True, idle
    assert relay["pass"] is True, relay


def test_verdicts_follow_the_figures(run) -> None:
    _, data = run
    results = copy.deepcopy(data["results"])
    agent, direct, bare = results["agent"], results["direct"], results["bare"]

    def verdict(res: dict, starts: str) -> bool | None:
        return next(t["pass"] for t in bench.check_targets(res) if t["target"].startswith(starts))

    agent["spread_ms"] = 0.0  # a proxy that buffered the whole stream
    assert verdict(results, "stream not buffered") is False
    agent["spread_ms"] = direct["spread_ms"]
    assert verdict(results, "stream not buffered") is True

    def agent_rounds_at(share: float) -> None:
        pairs = zip(agent["plain_c32"]["rounds"], bare["plain_c32"]["rounds"], strict=True)
        for mine, theirs in pairs:
            mine["rps"] = theirs["rps"] * share

    agent_rounds_at(0.5)
    assert verdict(results, "c=32 plain: req/s") is False
    agent_rounds_at(1.0)
    assert verdict(results, "c=32 plain: req/s") is True

    agent["plain_c1"]["p50_ms"] = direct["plain_c1"]["p50_ms"] + 5
    assert verdict(results, "c=1 plain") is False

    agent["rss_idle_mb"] = 200
    assert verdict(results, "idle RSS") is False


def test_the_ratio_to_the_bare_proxy_pairs_the_runs_of_each_round() -> None:
    """Rounds run seconds apart for both: a round in which the machine was slow for both
    must not be set against another round's figure (the ratio of medians would say 0.45)."""
    agent = {"rps": 45.0, "rounds": [{"rps": 90.0}, {"rps": 45.0}, {"rps": 30.0}]}
    bare = {"rps": 100.0, "rounds": [{"rps": 100.0}, {"rps": 50.0}, {"rps": 100.0}]}
    assert bench.paired_ratio(agent, bare) == pytest.approx(0.9)


def test_tls_is_priced_and_judged_by_the_same_targets(run) -> None:
    _, data = run
    table = data["table"]
    assert "**the price of TLS**" in table
    assert "| agent-tls vs agent |" in table and "| nginx-tls vs nginx |" in table
    judged = {t["agent"] for t in data["targets"]}
    assert judged == {"agent", "agent-tls"}
    assert "**targets (agent-tls)**" in table
    results = copy.deepcopy(data["results"])
    results["agent-tls"]["rss_idle_mb"] = 200
    idle = next(
        t for t in bench.check_targets(results, "agent-tls") if t["target"].startswith("idle")
    )
    assert idle["pass"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--contenders", "direct,bogus"], "unknown contender bogus"),
        (["--duration", "0"], "must be ≥ 1"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(args: list[str], message: str, tmp_path) -> None:
    cmd = [sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "r.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "r.json").exists()

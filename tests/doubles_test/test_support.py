"""The shared test helpers keep their promises: stopped means the whole process group, an
engine that dies says why, and a missing tool fails in CI instead of skipping."""

from __future__ import annotations

import sys
import time

import pytest
from support import Process, free_port, missing, running


def test_stop_kills_children_too(tmp_path):
    pidfile = tmp_path / "child.pid"
    process = Process(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"])
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pidfile.read_text())
    process.stop()
    time.sleep(0.1)
    assert not running(child)


def test_a_program_that_exits_early_is_reported_with_its_output():
    process = Process([sys.executable, "-c", "print('no model here'); raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3") as e:
        process.wait_for_url(f"http://127.0.0.1:{free_port()}/", timeout=10)
    assert "no model here" in str(e.value)


def test_a_program_that_never_answers_times_out():
    with Process(["sleep", "30"]) as process:
        with pytest.raises(TimeoutError):
            process.wait_for_url(f"http://127.0.0.1:{free_port()}/", timeout=0.5)
        assert not process.alive()


def test_missing_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        missing("no tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no tool"):
        missing("no tool")

"""pull-models.sh against a scripted `ollama` CLI, under dash, bash and busybox sh.

The busybox runs see only busybox applets and the fake `ollama` on PATH, as on the image.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "package/cube-models/pull-models.sh"
FAKE = Path(__file__).with_name("fake_ollama.py")
DOUBLE = ROOT / "tests/doubles/ollama_double.py"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
APPLETS = ("sh", "awk", "sleep", "cat", "printf", "echo", "[")

SHELLS = ["dash", "bash", "busybox"]


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, state: Path, elapsed: float):
        self.status = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.elapsed = elapsed
        self.state = state

    @property
    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def pulls(self) -> list[str]:
        return [c.removeprefix("pull ") for c in self.calls if c.startswith("pull ")]

    @property
    def models(self) -> list[str]:
        path = self.state / "models"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(params=SHELLS)
def shell(request, tmp_path) -> list[str]:
    """argv prefix for the shell, with PATH set up for it (returned via env)."""
    if request.param == "busybox":
        if not os.access(BUSYBOX, os.X_OK):
            pytest.fail(f"busybox not found at {BUSYBOX} (Debian package busybox-static)")
        return [BUSYBOX, "sh"]
    path = shutil.which(request.param)
    if path is None:
        pytest.fail(f"{request.param} not installed")
    return [path]


@pytest.fixture
def engine(tmp_path, shell):
    """Runs pull-models.sh with the fake engine; state in tmp_path/state."""
    state = tmp_path / "state"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ollama = bin_dir / "ollama"
    ollama.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
    ollama.chmod(0o755)
    if shell[0] == BUSYBOX:
        for applet in APPLETS:
            (bin_dir / applet).symlink_to(BUSYBOX)
        path = str(bin_dir)  # nothing from the host: busybox applets only
    else:
        path = f"{bin_dir}:{os.environ['PATH']}"

    def run(models="llama3.2:3b starcoder2:3b", attempts="5", interval="0", **extra) -> Run:
        env = {
            "PATH": path,
            "FAKE_OLLAMA_DIR": str(state),
            "OLLAMA_HOST": "127.0.0.1:11434",
            "CUBE_MODELS": models,
            "CUBE_PULL_ATTEMPTS": attempts,
            "CUBE_PULL_INTERVAL": interval,
            **extra,
        }
        start = time.monotonic()
        proc = subprocess.run(
            [*shell, str(SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        return Run(proc, state, time.monotonic() - start)

    run.state = state
    return run


def write(state: Path, name: str, text: str) -> None:
    (state / name).write_text(text)


def test_waits_for_the_engine_then_pulls_every_model(engine):
    write(engine.state, "down_calls", "3")
    run = engine(attempts="5")
    assert run.status == 0, run.err
    for attempt in (1, 2, 3):
        assert (
            f"pull-models: attempt {attempt}/5: engine not answering at 127.0.0.1:11434" in run.out
        )
    assert "attempt 4/5: engine not answering" not in run.out
    assert run.pulls == ["llama3.2:3b", "starcoder2:3b"]
    assert sorted(run.models) == ["llama3.2:3b", "starcoder2:3b"]


def test_gives_up_after_the_last_attempt(engine):
    write(engine.state, "down_calls", "1000")
    run = engine(attempts="4")
    assert run.status == 1
    assert "attempt 4/4: engine not answering at 127.0.0.1:11434" in run.out
    assert (
        "pull-models: gave up after 4 attempts: engine at 127.0.0.1:11434 never answered" in run.err
    )
    assert run.calls == ["down"] * 4
    assert run.models == []


def test_default_is_twenty_attempts(engine):
    write(engine.state, "down_calls", "1000")
    run = engine(attempts="")
    assert run.status == 1
    assert "gave up after 20 attempts" in run.err
    assert len(run.calls) == 20


def test_skips_models_already_present(engine):
    write(engine.state, "models", "llama3.2:3b\nnomic-embed-text:latest\n")
    run = engine(models="llama3.2:3b starcoder2:3b nomic-embed-text")
    assert run.status == 0, run.err
    assert run.pulls == ["starcoder2:3b"]


def test_only_an_exact_name_and_tag_counts_as_present(engine):
    write(engine.state, "models", "llama3.2:3b-instruct\nllama3.2:1b\nqwen:latest\n")
    run = engine(models="llama3.2:3b llama3.2 qwen:0.5b qwen")
    assert run.status == 0, run.err
    assert run.pulls == ["llama3.2:3b", "llama3.2", "qwen:0.5b"]


def test_second_run_pulls_nothing(engine):
    first = engine()
    assert first.status == 0, first.err
    calls_before = len(first.calls)
    second = engine()
    assert second.status == 0, second.err
    assert second.calls[calls_before:] == ["list"]
    assert "all models present" in second.out


def test_read_only_models_present_are_checked_and_nothing_is_pulled(engine):
    """A preloaded image: Ollama's models are in the read-only root."""
    write(engine.state, "models", "llama3.2:3b\nnomic-embed-text:latest\n")
    run = engine(models="llama3.2:3b nomic-embed-text", CUBE_MODELS_READ_ONLY="yes")
    assert run.status == 0, run.err
    assert run.calls == ["list"]
    assert "all models present" in run.out


def test_read_only_models_missing_fail_at_once_without_a_pull(engine):
    write(engine.state, "down_calls", "2")
    write(engine.state, "models", "llama3.2:3b\n")
    run = engine(models="llama3.2:3b qwen:0.5b starcoder2", CUBE_MODELS_READ_ONLY="yes")
    assert run.status == 1
    assert run.calls == ["down", "down", "list"]  # waits for the engine, then one check
    assert "qwen:0.5b starcoder2" in run.err
    assert "BR2_PACKAGE_OLLAMA_PRELOAD_DIR" in run.err


def test_failed_pull_is_retried_within_the_budget(engine):
    write(engine.state, "fail_pulls", "starcoder2:3b 2\n")
    run = engine(attempts="3")
    assert run.status == 0, run.err
    assert "attempt 1/3: could not pull starcoder2:3b" in run.out
    assert "attempt 2/3: could not pull starcoder2:3b" in run.out
    assert run.pulls == ["llama3.2:3b", "starcoder2:3b", "starcoder2:3b", "starcoder2:3b"]


def test_pull_that_keeps_failing_gives_up_naming_the_model(engine):
    write(engine.state, "fail_pulls", "starcoder2:3b 99\n")
    run = engine(attempts="3")
    assert run.status == 1
    assert "pull-models: gave up after 3 attempts: could not pull starcoder2:3b" in run.err
    assert run.pulls.count("starcoder2:3b") == 3
    assert run.models == ["llama3.2:3b"]


def test_engine_that_stops_answering_is_reported(engine):
    # Attempt 1: list answers, the pull fails; attempt 2: the engine is gone.
    write(engine.state, "fail_pulls", "starcoder2:3b 99\n")
    write(engine.state, "down_after", "2")
    run = engine(models="starcoder2:3b", attempts="2")
    assert run.status == 1
    assert run.calls == ["list", "pull starcoder2:3b", "down"]
    assert "gave up after 2 attempts: engine at 127.0.0.1:11434 stopped answering" in run.err


@pytest.mark.parametrize("attempts", ["0", "abc", "-3", "1.5", "2 3"])
def test_bad_attempts_is_refused(engine, attempts):
    run = engine(attempts=attempts)
    assert run.status == 2
    assert run.err.startswith("pull-models: CUBE_PULL_ATTEMPTS must be a positive integer")
    assert run.calls == []


@pytest.mark.parametrize("interval", ["soon", "-1", "1.2.3", "."])
def test_bad_interval_is_refused(engine, interval):
    run = engine(interval=interval)
    assert run.status == 2
    assert run.err.startswith("pull-models: CUBE_PULL_INTERVAL must be a number")
    assert run.calls == []


def test_fractional_interval_is_slept(engine):
    write(engine.state, "down_calls", "3")
    run = engine(attempts="5", interval="0.3")
    assert run.status == 0, run.err
    assert run.elapsed >= 0.9  # three waits between four attempts


def test_empty_model_list_does_nothing(engine):
    run = engine(models="")
    assert run.status == 0
    assert run.calls == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def double_on_path(tmp_path: Path, models: str, attempts: str, interval: str) -> dict:
    """busybox applets and the Ollama double as `ollama`, nothing else; the env to run with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ollama = bin_dir / "ollama"
    ollama.write_text(f'#!/bin/sh\nexec {sys.executable} {DOUBLE} "$@"\n')
    ollama.chmod(0o755)
    for applet in APPLETS:
        (bin_dir / applet).symlink_to(BUSYBOX)
    return {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "OLLAMA_HOST": f"127.0.0.1:{free_port()}",
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "CUBE_MODELS": models,
        "CUBE_PULL_ATTEMPTS": attempts,
        "CUBE_PULL_INTERVAL": interval,
    }


def listed(env: dict) -> list[str]:
    done = subprocess.run(["ollama", "list"], env=env, capture_output=True, text=True, timeout=30)
    return sorted(line.split()[0] for line in done.stdout.splitlines()[1:])


@pytest.mark.parametrize("shell", ["busybox"], indirect=True)
def test_against_the_ollama_double_that_starts_late(tmp_path, shell):
    """The real CLI protocol: the Ollama double refuses connections for a while."""
    env = double_on_path(tmp_path, "llama3.2:3b nomic-embed-text:v1.5", "40", "0.25")
    host = env["OLLAMA_HOST"]
    server = subprocess.Popen(
        [sys.executable, str(DOUBLE), "serve", "--ready-after", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run = subprocess.run(
            [*shell, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"attempt 1/40: engine not answering at {host}" in run.stdout
        assert "pulled llama3.2:3b" in run.stdout
        assert "pulled nomic-embed-text:v1.5" in run.stdout
        assert listed(env) == ["llama3.2:3b", "nomic-embed-text:v1.5"]

        again = subprocess.run(
            [*shell, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "pulling" not in again.stdout
        assert "all models present" in again.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("shell", ["busybox"], indirect=True)
def test_a_typo_in_cube_models_fails_against_the_ollama_double(tmp_path, shell):
    """The registry lacks "lama3.2:3b": the real engine's pull fails, and so must the script."""
    env = double_on_path(tmp_path, "llama3.2:3b lama3.2:3b", "2", "0")
    server = subprocess.Popen(
        [sys.executable, str(DOUBLE), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run = subprocess.run(
            [*shell, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 1, run.stdout + run.stderr
        assert "pulled llama3.2:3b" in run.stdout
        assert "attempt 2/2: could not pull lama3.2:3b" in run.stdout
        assert "Error: pull model manifest: file does not exist" in run.stderr
        assert "gave up after 2 attempts: could not pull lama3.2:3b" in run.stderr
        assert listed(env) == ["llama3.2:3b"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_model_names_are_not_expanded_as_file_patterns(engine, tmp_path):
    # A "*" in CUBE_MODELS must reach ollama as it is, whatever the working directory holds;
    # the engine then refuses the name, as Ollama does.
    (tmp_path / "qwen-notes.txt").touch()
    run = engine(models="qwen* llama3.2:3b", attempts="1")
    assert run.pulls == ["qwen*", "llama3.2:3b"]
    assert run.status == 1
    assert "Error: 400 Bad Request: invalid model name" in run.err
    assert "gave up after 1 attempts: could not pull qwen*" in run.err

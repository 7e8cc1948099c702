"""A bad setting stops the agent at start with one line naming it, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cube_agent", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "seven"),
        ("PORT", "70000"),
        ("TARGET_URL", "localhost:11434"),
        ("ENGINE", "tgi"),
        ("AUTH", "maybe"),
        ("LOG_LEVEL", "loud"),
        ("READ_TIMEOUT", "-1"),
        ("MAX_BODY_BYTES", "lots"),
        ("WORKERS", "0"),
        ("ORIGINS", "example.com"),
        ("ORIGINS", "https://*.a.*"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(name, value):
    done = start({f"UV_CUBE_AGENT_{name}": value})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"cube-agent: UV_CUBE_AGENT_{name}={value}: ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_missing_key_file_with_auth_on(tmp_path, workers):
    done = start(
        {"UV_CUBE_AGENT_KEY_FILE": str(tmp_path / "none.json"), "TMPDIR": str(tmp_path)},
        "serve",
        "--workers",
        workers,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"cube-agent: UV_CUBE_AGENT_KEY_FILE={tmp_path / 'none.json'}: {tmp_path / 'none.json'}:"
        " no such key file (create it: cube-agent keys init)"
    ]
    assert sorted(tmp_path.iterdir()) == []  # no metrics directory left behind

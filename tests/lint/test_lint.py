"""The tree stays ruff- and shellcheck-clean: `make check`, enforced by `make test`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return [ROOT / name for name in out.split("\0") if name]


def shell_scripts() -> list[Path]:
    scripts = []
    for path in tracked_files():
        if path.suffix == ".j2" or not path.is_file():
            continue
        with path.open("rb") as f:
            first = f.readline()
        if first.startswith((b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash")):
            scripts.append(path)
    return scripts


def test_shell_scripts_are_found():
    names = {p.name for p in shell_scripts()}
    assert {"pull-models.sh", "fetch-buildroot.sh", "run"} <= names


def test_shellcheck_is_clean():
    if not shutil.which("shellcheck"):
        pytest.fail("shellcheck is not installed (scripts/install-host-deps.sh installs it)")
    result = subprocess.run(
        ["shellcheck", "--format=gcc", *map(str, shell_scripts())],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(args):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr

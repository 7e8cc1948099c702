"""The tree as a Buildroot maintainer would check it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from buildroot_support import REPO, TREE

pytestmark = pytest.mark.buildroot


def tree_files() -> list[Path]:
    """Every file of the external tree and the directories it points at, but the generator's
    templates, which are not Buildroot files (the generator's suite checks what they render)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *map(str, TREE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    files = [REPO / line for line in out.stdout.splitlines()]
    return [f for f in files if f.is_file() and "templates" not in f.relative_to(REPO).parts]


def test_check_package_gives_no_warning(buildroot):
    files = tree_files()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        [str(buildroot / "utils" / "check-package"), "-b", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 warnings generated" in proc.stderr, proc.stdout + proc.stderr


def test_shell_scripts_are_shellcheck_clean():
    scripts = [f for f in tree_files() if f.read_bytes().startswith(b"#!/bin/sh")]
    assert scripts
    proc = subprocess.run(
        ["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout


def test_every_visible_symbol_of_the_tree_has_help(kconfig):
    ours = [
        node
        for node in kconfig.node_iter()
        if node.filename.startswith(tuple(map(str, TREE)))
        and node.prompt
        and isinstance(node.item, kconfig.syms["BR2_x86_64"].__class__)
    ]
    assert len(ours) > 20
    without = [node.item.name for node in ours if not (node.help or "").strip()]
    assert not without, f"symbols without help text: {without}"


def test_autologin_is_a_test_only_option(kconfig):
    node = kconfig.syms["BR2_CUBE_TEST_AUTOLOGIN"].nodes[0]
    assert "NEVER" in node.help and "production" in node.help

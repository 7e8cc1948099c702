"""`make check`'s undefined-symbol check (scripts/check-kconfig-symbols.py): the tree
references no Kconfig symbol that exists nowhere, and a bad `select` fails it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from buildroot_support import EXTERNAL, REPO, TREE

pytestmark = pytest.mark.buildroot

SCRIPT = REPO / "scripts" / "check-kconfig-symbols.py"


def check(buildroot, external) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, buildroot, external],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_the_tree_references_only_symbols_that_exist(buildroot):
    proc = check(buildroot, EXTERNAL)
    assert proc.returncode == 0, proc.stderr
    assert "0 undefined symbol(s)" in proc.stdout


def test_a_select_of_a_symbol_that_does_not_exist_fails(buildroot, tmp_path):
    for part in TREE:  # the external tree points at its siblings
        shutil.copytree(part, tmp_path / part.name, symlinks=True)
    config = tmp_path / "package" / "cube-agent" / "Config.in"
    text = config.read_text()
    config.write_text(text.replace(
        "\tselect BR2_PACKAGE_PYTHON_FASTAPI # runtime\n",
        "\tselect BR2_PACKAGE_PYTHON_FASTAPI # runtime\n\tselect BR2_PACKAGE_HOST_PYTHON_PIP\n",
    ))  # fmt: skip
    proc = check(buildroot, tmp_path / EXTERNAL.name)
    assert proc.returncode == 1
    assert "undefined symbol BR2_PACKAGE_HOST_PYTHON_PIP" in proc.stderr
    assert "cube-agent/Config.in" in proc.stderr

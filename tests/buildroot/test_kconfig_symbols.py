"""`make check`'s undefined-symbol check (scripts/check-kconfig-symbols.py): the tree
references no Kconfig symbol that exists nowhere, and a bad `select` fails it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import kconfiglib
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


def conjuncts(expr) -> set:
    if isinstance(expr, tuple) and expr[0] == kconfiglib.AND:
        return conjuncts(expr[1]) | conjuncts(expr[2])
    return {expr}


def implied(expr) -> set:
    """What `expr` being true implies: its conjuncts and, for symbols, their dependencies."""
    found, todo = set(), list(conjuncts(expr))
    while todo:
        item = todo.pop()
        if item not in found:
            found.add(item)
            if isinstance(item, kconfiglib.Symbol):
                todo += conjuncts(item.direct_dep)
    return found


# Written differently from, but equivalent to, what the selector depends on.
EQUIVALENT = {"!BR2_TOOLCHAIN_USES_UCLIBC || (BR2_TOOLCHAIN_USES_UCLIBC && !BR2_STATIC_LIBS)"}


def test_every_select_carries_the_dependencies_of_what_it_selects(kconfig):
    """Kconfig's select ignores the selected symbol's `depends on`: a selector must depend
    on them itself (Buildroot's rule), or a configuration enables a package that
    cannot build."""
    problems = []
    for symbol in kconfig.unique_defined_syms:
        if not any(str(REPO) in node.filename for node in symbol.nodes):
            continue
        selected_too = {s for s, _ in symbol.selects}
        for selected, condition in symbol.selects:
            have = implied(symbol.direct_dep) | implied(condition) | selected_too
            for need in conjuncts(selected.direct_dep) - {kconfig.y}:
                text = kconfiglib.expr_str(need)
                if need not in have and text not in EQUIVALENT:
                    problems.append(f"{symbol.name} selects {selected.name} without {text}")
    assert problems == []

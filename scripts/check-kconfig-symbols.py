#!/usr/bin/env python3
"""Fail on any Kconfig reference, in the external tree, to a symbol that exists
nowhere: a `select`, `depends on`, `default` or `if` naming a BR2_ symbol that
neither Buildroot nor the tree defines (Kconfig itself ignores them silently).

    scripts/check-kconfig-symbols.py BUILDROOT_DIR EXTERNAL_DIR

Loads Buildroot's whole Config.in with the external tree, as Buildroot's own
kconfig does (the .br2-external.in files come from its support/scripts/br2-external),
with kconfiglib's undefined-symbol warnings on; Buildroot's own references are
not ours to fix and are not reported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import kconfiglib


def undefined_references(buildroot: Path, external: Path) -> list[str]:
    buildroot, external = buildroot.resolve(), external.resolve()
    tree = external.parent
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            ["support/scripts/br2-external", "-d", out, external],
            cwd=buildroot,
            check=True,
        )
        os.environ.update(
            srctree=str(buildroot),
            BASE_DIR=out,
            BR2_BASE_DIR=out,
            BR2_EXTERNAL_CUBE_PATH=str(external),
            BR2_VERSION_FULL=buildroot.name.removeprefix("buildroot-"),
            HOSTARCH="x86_64",
            HOST_GCC_VERSION="12",
            BR2_DEFCONFIG="",
            SKIP_LEGACY="",
            KCONFIG_WARN_UNDEF="y",
        )
        kconf = kconfiglib.Kconfig(str(buildroot / "Config.in"), warn=True, warn_to_stderr=False)
    return [w for w in kconf.warnings if "undefined symbol" in w and str(tree) in w]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("buildroot", type=Path)
    parser.add_argument("external", type=Path)
    args = parser.parse_args()
    found = undefined_references(args.buildroot, args.external)
    for warning in found:
        print(warning, file=sys.stderr)
    print(f"check-kconfig-symbols: {len(found)} undefined symbol(s) referenced")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""The pinned Buildroot as the tests use it: where it is, and output directories
configured from the tree's defconfigs (for `make show-info`, .config and friends)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXTERNAL = REPO / "br2-external"
DEFCONFIGS = ("cube_cvm_defconfig", "cube_cvm_sysv_defconfig")
# Where `make buildroot` unpacks it; BUILDROOT_DIR overrides.
DEFAULT_BUILDROOT = Path.home() / ".cache/cube-hal/buildroot-2026.02.3"


def buildroot_dir() -> Path:
    return Path(os.environ.get("BUILDROOT_DIR", DEFAULT_BUILDROOT))


def parse_config(text: str) -> dict[str, str]:
    """A .config or defconfig as symbol -> value ("n" for '# BR2_X is not set')."""
    values = {}
    for line in text.splitlines():
        if line.startswith("# BR2_") and line.endswith(" is not set"):
            values[line[2:].split()[0]] = "n"
        elif line.startswith("BR2_") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


@dataclass
class Output:
    """A Buildroot output directory configured from one defconfig."""

    buildroot: Path
    dir: Path

    def make(self, *targets: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "make",
                "-s",
                "-C",
                str(self.buildroot),
                f"BR2_EXTERNAL={EXTERNAL}",
                f"O={self.dir}",
                *targets,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def config(self) -> dict[str, str]:
        return parse_config((self.dir / ".config").read_text())

    def show_info(self) -> dict:
        proc = self.make("show-info")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

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
# The external tree points at these (the layout the project was specified with).
TREE = (EXTERNAL, REPO / "board", REPO / "package", REPO / "overlay", REPO / "generator")
DEFCONFIGS = ("cube_cvm_defconfig", "cube_cvm_sysv_defconfig")
# Variants of the systemd defconfig: each backend, and the guardrails stage on.
VARIANTS = {
    "OLLAMA": "BR2_PACKAGE_CUBE_AGENT_BACKEND_OLLAMA=y",
    "VLLM": "BR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM=y",
    "LLAMA_CPP": "BR2_PACKAGE_CUBE_AGENT_BACKEND_LLAMA_CPP=y",
    "GUARDRAILS": "BR2_PACKAGE_CUBE_AGENT_GUARDRAILS=y",
}
# Where `make buildroot` unpacks it; BUILDROOT_DIR overrides.
DEFAULT_BUILDROOT = Path.home() / ".cache/cube-hal/buildroot-2026.02.3"


def buildroot_dir() -> Path:
    return Path(os.environ.get("BUILDROOT_DIR", DEFAULT_BUILDROOT))


def variant_defconfig(directory: Path, name: str, line: str) -> Path:
    """The systemd defconfig with one more line, as the defconfig file `name` in `directory`."""
    path = directory / name
    path.write_text((EXTERNAL / "configs" / DEFCONFIGS[0]).read_text() + line + "\n")
    return path


def sha256_lines(hash_file: Path) -> dict[str, str]:
    """file name -> sha256 of a Buildroot .hash file."""
    hashes = {}
    for line in hash_file.read_text().splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "sha256" and len(fields[1]) == 64:
            hashes[fields[2]] = fields[1]
    return hashes


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

    def configure(self, defconfig: str) -> Output:
        """`make <defconfig>` for one of the tree's, else BR2_DEFCONFIG=<path> defconfig."""
        if defconfig in DEFCONFIGS:
            args: tuple[str, ...] = (defconfig,)
        else:
            args = (f"BR2_DEFCONFIG={defconfig}", "defconfig")
        proc = self.make(*args)
        assert proc.returncode == 0, f"make {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return self

    def config(self) -> dict[str, str]:
        return parse_config((self.dir / ".config").read_text())

    def show_info(self) -> dict:
        proc = self.make("show-info")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def printvars(self, names: tuple[str, ...], *args: str) -> dict[str, str]:
        """`make printvars` of these variables, every reference expanded (a define keeps
        its lines; $(@D) reads as ".": run its commands in the package's build directory)."""
        proc = self.make(*args, "printvars", f"VARS={' '.join(names)}")
        assert proc.returncode == 0, proc.stderr
        values: dict[str, str] = {}
        name = None
        for line in proc.stdout.splitlines():
            head = line.split("=", 1)[0]
            if head in names:
                name = head
                values[name] = line.split("=", 1)[1]
            else:  # a define's next line
                assert name, line
                values[name] += "\n" + line
        return values


def run_recipe(text: str, cwd: Path) -> subprocess.CompletedProcess:
    """Each line of a make define, run with `sh -c` as make runs a recipe line; the first
    that fails is returned, else the last."""
    proc = subprocess.CompletedProcess([], 0, "", "")
    for line in text.splitlines():
        if not line.strip():
            continue
        proc = subprocess.run(["sh", "-c", line.strip()], cwd=cwd, capture_output=True,
                              text=True, timeout=600, check=False)  # fmt: skip
        if proc.returncode != 0:
            return proc
    return proc

"""Helpers for the generator tests: run cube-config, read what it wrote like the target does."""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support import missing

ROOT = Path(__file__).resolve().parents[2]
CUBE_CONFIG = ROOT / "generator/cube-config"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def require_tool(name: str) -> str:
    """Path of a host tool; missing fails under CI (never a silent skip there)."""
    path = shutil.which(name) or (name if os.access(name, os.X_OK) else None)
    if path:
        return path
    missing(f"{name} is not installed (see scripts/install-host-deps.sh)")


@dataclass
class Rendered:
    status: int
    stderr: str
    out: Path

    def files(self) -> set[str]:
        return {p.relative_to(self.out).as_posix() for p in self.out.rglob("*") if p.is_file()}

    def __truediv__(self, path: str) -> Path:
        return self.out / path


def run_cube_config(config: str, workdir: Path, *extra: str) -> Rendered:
    """Write config into workdir, render it into workdir/out (or as extra says)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config"
    config_file.write_text(config)
    out = workdir / "out"
    proc = subprocess.run(
        [sys.executable, str(CUBE_CONFIG), "--config", str(config_file), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Rendered(proc.returncode, proc.stderr, out)


def read_env_with_sh(path: Path, shell: list[str]) -> dict[str, str]:
    """What an init script gets after sourcing the env file with set -a."""
    proc = subprocess.run(
        [*shell, "-c", 'set -a; . "$1"; env -0', "sh", str(path)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        timeout=30,
        check=True,
    )
    pairs = [item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item]
    return {key: value for key, value in pairs if key not in ("PATH", "PWD", "SHLVL", "_")}


ENV_GENERATOR = "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"


def read_env_with_systemd(path: Path, tmp_path: Path) -> dict[str, str]:
    """The file as systemd's own env-file parser reads it.

    systemd's environment.d generator uses the parser behind EnvironmentFile=, then
    expands $VAR and drops empty variables, which EnvironmentFile= does not: keep '$' out
    of the values checked here; an empty value reads as a missing one. It prints the
    result shell-quoted, one variable a line.
    """
    generator = require_tool(ENV_GENERATOR)
    conf = tmp_path / "xdg" / "environment.d"
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, conf / "50-test.conf")
    proc = subprocess.run(
        [generator],
        env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    env = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if value.startswith('"'):  # systemd quotes with a backslash before \ " ` $
            value = re.sub(r'\\([\\"`$])', r"\1", value[1:-1])
        env[key] = value
    (conf / "50-test.conf").unlink()
    return {key: env.get(key, "") for key in re.findall(r"^(\w+)=", path.read_text(), re.M)}


def read_unit(path: Path) -> dict[str, dict[str, str]]:
    """The sections of a unit file; a key given several times keeps every value, one a line.

    Strict: anything but a section header, Key=value, a comment or a blank line fails.
    """
    sections: dict[str, dict[str, str]] = {}
    current = None
    for number, line in enumerate(path.read_text().replace("\\\n", " ").splitlines(), 1):
        where = f"{path.name}:{number}: {line!r}"
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if header := re.fullmatch(r"\[(\w+)\]", line):
            assert header[1] not in sections, f"{where}: duplicate section"
            current = sections[header[1]] = {}
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and re.fullmatch(r"[A-Za-z]+", key), where
        current[key] = f"{current[key]}\n{value}" if key in current else value
    return sections

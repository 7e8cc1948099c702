"""Fixtures for the CVM suite: image directories, the fake configfs-tsm mount."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fake_ovmf
import pytest
from support import missing

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "board" / "cube" / "launch-vm"
MEASURE = REPO / "scripts" / "measure"
FAKE_TSM = Path(__file__).with_name("fake_tsm.py")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """An IMAGE_DIR with stand-ins for bzImage and rootfs.ext4 and an AmdSev-like OVMF.

    The kernel is fixed bytes: the launcher only passes its path, the measurement only
    hashes it."""
    d = tmp_path / "images"
    d.mkdir()
    (d / "bzImage").write_bytes(b"not a kernel, hashed only\n" * 1000)
    with (d / "rootfs.ext4").open("wb") as f:
        f.truncate(1 << 20)
    fake_ovmf.write(d / "OVMF.amdsev.fd")
    return d


def script_env(images: Path, **overrides: str) -> dict[str, str]:
    """The environment for launch-vm/measure: only our settings, nothing from the caller's
    shell (a developer's CPUS=8 must not change what the tests see)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, "IMAGE_DIR": str(images), "OVMF": str(images / "OVMF.amdsev.fd"), **overrides}


@pytest.fixture
def fake_tsm(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount fake_tsm.py's configfs-tsm stand-in: `fake_tsm("--race")` returns its root.

    Needs FUSE (/dev/fuse, and root or fusermount3): skipped without it, failed in CI."""
    if not Path("/dev/fuse").exists():
        missing("/dev/fuse is missing: the fake configfs-tsm needs FUSE")
    mounted: list[tuple[Path, subprocess.Popen[bytes]]] = []

    def mount(*args: str) -> Path:
        root = tmp_path / f"tsm{len(mounted)}"
        root.mkdir()
        log = (tmp_path / f"tsm{len(mounted)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(FAKE_TSM), str(root), *args], stdout=log, stderr=log
        )
        mounted.append((root, proc))
        deadline = time.monotonic() + 10
        while not os.path.ismount(root):
            if proc.poll() is not None or time.monotonic() > deadline:
                missing(f"cannot mount the fake configfs-tsm (FUSE, Debian fuse3): see {log.name}")
            time.sleep(0.05)
        return root

    try:
        yield mount
    finally:
        for root, proc in mounted:
            unmount(root)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def unmount(root: Path) -> None:
    if not os.path.ismount(root):
        return
    tool = ["umount"] if os.geteuid() == 0 else [shutil.which("fusermount3") or "fusermount", "-u"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([*tool, str(root)], check=False, timeout=10, capture_output=True)

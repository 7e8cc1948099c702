"""The offline test images are reproducible: two builds from the same inputs, each into its
own work directory with the image cache bypassed, give the same rootfs.img bytes, the same
root hash on the kernel command line and the same predicted SEV-SNP measurement, so a
published measurement.json can be recomputed from the inputs.

The inputs are the tree, the Debian base root (mmdebstrap, cached by its package list),
the CVM kernel (cached by its inputs), the test root of trust (cached by its sources: its
RSA keys and PSS signatures are random) and the wheels pip fetches (unpinned: uvloop,
mfusepy and pip as PyPI serves them that day). Both builds here share those caches, as a
rebuild from the same inputs does. Nothing is booted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from integration.guest import TIMINGS, predict_measurement, testimage
from support import missing

# Two builds an init system: 20-70 s each here (pip, mkfs.erofs), past the cached inputs.
pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]


def tree(root: Path) -> dict[str, tuple]:
    """Every path's type and mode, owner, content (or link target) and xattrs."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as f:
                    content = hashlib.file_digest(f, "sha256").hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                content = "-> " + os.readlink(path)
            else:
                content = ""
            xattrs = sorted(
                (key, os.getxattr(path, key, follow_symlinks=False))
                for key in os.listxattr(path, follow_symlinks=False)
            )
            entries[os.path.relpath(path, root)] = (
                stat.filemode(info.st_mode), info.st_uid, info.st_gid, content, xattrs
            )  # fmt: skip
    return entries


def differences(first: Path, second: Path) -> list[str]:
    a, b = tree(first), tree(second)
    return [
        f"{path}: {a.get(path, 'missing')} != {b.get(path, 'missing')}"
        for path in sorted(a.keys() | b.keys())
        if a.get(path) != b.get(path)
    ]


@pytest.mark.parametrize("init", ["systemd", "sysv"])
def test_two_builds_give_the_same_root_hash_and_measurement(init: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        missing("building the offline test image needs root")
    for tool in ("mmdebstrap", "mkfs.erofs", "veritysetup"):
        if shutil.which(tool) is None:
            missing(f"{tool} not installed (scripts/install-host-deps.sh)")
    if not (testimage.BUILDROOT_DIR / "Makefile").is_file():
        missing(f"no Buildroot at BUILDROOT_DIR={testimage.BUILDROOT_DIR} (make buildroot)")
    builds = []
    try:
        for name in ("first", "second"):
            workdir = tmp_path / name
            workdir.mkdir()
            started = time.monotonic()
            try:
                inputs = testimage.gather_inputs(init, workdir)
                root = testimage.build_into(inputs, workdir / "images", workdir)
            except testimage.BuildError as error:
                pytest.fail(f"test image: {error}")
            TIMINGS.append(f"reproducible {init}: {name} build {time.monotonic() - started:.0f} s")
            builds.append((inputs, workdir / "images", root))
        (first, a, root_a), (second, b, root_b) = builds
        assert first.key == second.key  # the same inputs

        same_bytes = (a / "rootfs.img").read_bytes() == (b / "rootfs.img").read_bytes()
        assert same_bytes, "the two roots differ:\n" + "\n".join(differences(root_a, root_b))
        assert (a / "kernel-cmdline").read_text() == (b / "kernel-cmdline").read_text()
        # veritysetup's report, but for its first line (the image's path).
        reports = [(d / "rootfs.verity").read_text().split("\n", 1)[1] for d in (a, b)]
        assert reports[0] == reports[1]
        measured = [
            json.loads(predict_measurement(images, tmp_path / f"measure-{n}").read_text())
            for n, images in (("first", a), ("second", b))
        ]
        assert measured[0]["measurement"] == measured[1]["measurement"]
        root_hash = (a / "rootfs.verity").read_text().split("Root hash:")[1].split()[0]
        assert root_hash in measured[0]["inputs"]["cmdline"]
    finally:
        for _, images, root in builds:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(images, ignore_errors=True)

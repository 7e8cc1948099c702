"""The top-level Makefile and the pinned-Buildroot fetch script."""

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

from buildroot_support import REPO

FETCH = REPO / "scripts" / "fetch-buildroot.sh"


def test_make_help_lists_the_defconfigs_and_test_targets():
    proc = subprocess.run(
        ["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for word in (
        "cube_cvm_defconfig",
        "cube_cvm_sysv_defconfig",
        "test",
        "test-quick",
        "check",
        "savedefconfig",
    ):
        assert word in proc.stdout, word


def fake_buildroot(tmp_path):
    """A tiny buildroot-X/ tarball (xz, as upstream's) and its sha256."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        content = b"all:\n"
        info = tarfile.TarInfo("buildroot-0.0/Makefile")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    tarball = tmp_path / "buildroot-0.0.tar.xz"
    tarball.write_bytes(data.getvalue())
    return tarball, hashlib.sha256(data.getvalue()).hexdigest()


def fetch(url, tarball, sha256, dest):
    return subprocess.run(
        ["sh", str(FETCH), url, str(tarball), sha256, str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fetch_refuses_a_tarball_with_a_wrong_hash(tmp_path):
    source, digest = fake_buildroot(tmp_path)
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    dest = tmp_path / "buildroot"
    proc = fetch(source.as_uri(), tmp_path / "cache" / "br.tar.xz", wrong, dest)
    assert proc.returncode != 0
    assert f"expected {wrong}" in proc.stderr
    assert not dest.exists()


def test_fetch_downloads_checks_and_unpacks_a_good_one(tmp_path):
    source, digest = fake_buildroot(tmp_path)
    dest = tmp_path / "buildroot"
    proc = fetch(source.as_uri(), tmp_path / "cache" / "br.tar.xz", digest, dest)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "Makefile").read_text() == "all:\n"


def fake_path(tmp_path, without: str = "") -> tuple[dict[str, str], Path]:
    """PATH with the host's tools (but `without`) and a Debian that has nothing
    installed: dpkg-query finds nothing, sudo and apt-get leave a mark."""
    bin_dir, mark = tmp_path / "bin", tmp_path / "installed"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for tool in Path(directory).glob("*") if Path(directory).is_dir() else ():
            link = bin_dir / tool.name
            if tool.name != without and not link.exists() and os.access(tool, os.X_OK):
                link.symlink_to(tool)
    for name, script in (
        ("dpkg-query", "exit 1"),
        ("sudo", f'echo "$@" >> {mark}; exec "$@"'),
        ("apt-get", f'echo "apt-get $@" >> {mark}'),
    ):
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": str(bin_dir)}, mark


def test_configuring_the_image_installs_nothing(tmp_path, buildroot):
    env, mark = fake_path(tmp_path)
    proc = subprocess.run(
        ["make", "-s", "cube_cvm_defconfig", f"O={tmp_path / 'out'}", f"BUILDROOT_DIR={buildroot}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out" / ".config").is_file()
    assert not mark.exists(), f"ran: {mark.read_text()}"


def test_a_missing_build_tool_is_named_and_nothing_installed(tmp_path):
    env, mark = fake_path(tmp_path, without="rsync")
    proc = subprocess.run(["make", "-s", "build-deps"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0
    assert "missing rsync" in proc.stderr
    assert not mark.exists()

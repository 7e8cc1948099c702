"""The top-level Makefile and the pinned-Buildroot fetch script."""

import hashlib
import io
import subprocess
import tarfile

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

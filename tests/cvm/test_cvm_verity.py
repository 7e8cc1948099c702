"""board/cube/verity-image and post-image.sh: the dm-verity root and its measured command line.

A small root tree goes through what a Buildroot build does with it: mkfs.erofs with
BR2_REPRODUCIBLE's arguments (fs/erofs/erofs.mk), then post-image.sh. The result is checked
with veritysetup using the exact parameters of the dm-verity table on the kernel command
line (the kernel sets the root up from that line alone), and measured with scripts/measure.
The booted proof is tests/integration (the test image's root is made by the same script).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fake_ovmf
import pytest
from cvm_support import MEASURE, REPO, script_env
from support import missing

VERITY_IMAGE = REPO / "board/cube/verity-image"
POST_IMAGE = REPO / "board/cube/post-image.sh"
SOURCE_DATE_EPOCH = "1767225600"
TABLE = re.compile(
    r'dm-mod\.create="root,CRYPT-VERITY-[0-9a-f]{32}-root,,ro,'
    r"0 (?P<sectors>\d+) verity 1 (?P<data>\S+) (?P<hash>\S+) "
    r"4096 4096 (?P<blocks>\d+) (?P<start>\d+) sha256 (?P<root>[0-9a-f]{64}) "
    r'(?P<salt>[0-9a-f]{64}) 1 panic_on_corruption"'
)


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing(f"{name} is not installed (Debian erofs-utils, cryptsetup-bin)")
    return path


def make_tree(root: Path, agent: bytes = b"print('agent')\n" * 4096) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/bin/cube-agent").write_bytes(agent)
    (root / "etc/hostname").write_text("cube\n")
    return root


def build(tmp_path: Path, name: str, tree: Path) -> Path:
    """rootfs.erofs as Buildroot's erofs.mk makes it with BR2_REPRODUCIBLE, then
    post-image.sh: an images directory."""
    images = tmp_path / name
    images.mkdir()
    subprocess.run(
        [tool("mkfs.erofs"), "--quiet", "-T", SOURCE_DATE_EPOCH, "-U",
         "00000000-0000-0000-0000-000000000000", "--all-root",
         str(images / "rootfs.erofs"), str(tree)],
        check=True, timeout=60,
    )  # fmt: skip
    tool("veritysetup")
    proc = subprocess.run(
        ["sh", str(POST_IMAGE), str(images)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "kernel command line (measured" in proc.stdout
    return images


def table(images: Path) -> dict[str, str]:
    match = TABLE.search((images / "kernel-cmdline").read_text())
    assert match, (images / "kernel-cmdline").read_text()
    return match.groupdict()


def verify(images: Path, disk: Path | None = None) -> subprocess.CompletedProcess[str]:
    """veritysetup verify with the table's own numbers (no superblock read): what the
    kernel will check."""
    t = table(images)
    disk = disk or images / "rootfs.img"
    return subprocess.run(
        [tool("veritysetup"), "verify", "--no-superblock", "--hash=sha256",
         "--data-block-size=4096", "--hash-block-size=4096",
         f"--data-blocks={t['blocks']}", f"--hash-offset={int(t['start']) * 4096}",
         f"--salt={t['salt']}", str(disk), str(disk), t["root"]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return build(tmp_path, "images", make_tree(tmp_path / "root"))


def test_the_command_line_mounts_a_verified_read_only_root(images: Path) -> None:
    line = (images / "kernel-cmdline").read_text()
    assert line.endswith("\n") and line.count("\n") == 1
    words = line.split('"')[2].split()
    assert words == [
        "dm-mod.waitfor=/dev/vda",
        "root=/dev/dm-0",
        "ro",
        "rootfstype=erofs",
        "console=ttyS0",
    ]
    t = table(images)
    assert t["data"] == t["hash"] == "/dev/vda"
    erofs = (images / "rootfs.erofs").stat().st_size
    assert int(t["blocks"]) * 4096 == erofs and int(t["sectors"]) * 512 == erofs
    assert int(t["start"]) == int(t["blocks"]) + 1  # past the verity superblock
    # the data area is the EROFS image itself: the kernel mounts /dev/dm-0 as it is
    assert (images / "rootfs.img").read_bytes()[:erofs] == (images / "rootfs.erofs").read_bytes()
    assert f"Root hash:      \t{t['root']}" in (images / "rootfs.verity").read_text()
    proc = verify(images)
    assert proc.returncode == 0, proc.stderr


def test_a_flipped_byte_in_a_file_fails_verification(images: Path, tmp_path: Path) -> None:
    data = (images / "rootfs.img").read_bytes()
    at = data.index(b"print('agent')")
    bad = tmp_path / "tampered.img"
    bad.write_bytes(data[:at] + b"P" + data[at + 1 :])
    proc = verify(images, bad)
    assert proc.returncode != 0
    assert f"Verification failed at position {at // 4096 * 4096}" in proc.stderr + proc.stdout


def test_same_inputs_give_the_same_disk_and_root_hash(images: Path, tmp_path: Path) -> None:
    again = build(tmp_path, "again", make_tree(tmp_path / "root-again"))
    for name in ("rootfs.erofs", "rootfs.img", "kernel-cmdline"):
        assert (again / name).read_bytes() == (images / name).read_bytes(), name


def test_one_changed_file_changes_the_root_hash_and_the_measurement(
    images: Path, tmp_path: Path
) -> None:
    changed = build(tmp_path, "changed", make_tree(tmp_path / "root2", b"print('evil')\n"))
    assert table(changed)["root"] != table(images)["root"]

    def measured(d: Path) -> dict:
        (d / "bzImage").write_bytes(b"kernel\n" * 100)
        fake_ovmf.write(d / "OVMF.amdsev.fd")
        out = d / "measurement.json"
        proc = subprocess.run(
            [sys.executable, str(MEASURE), "--output", str(out)],
            env=script_env(d),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(out.read_text())

    a, b = measured(images), measured(changed)
    assert a["inputs"]["cmdline"] == (images / "kernel-cmdline").read_text().strip()
    assert table(images)["root"] in a["inputs"]["cmdline"]
    assert a["measurement"] != b["measurement"]
    assert measured(images)["measurement"] == a["measurement"]


def test_without_an_erofs_image_it_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(VERITY_IMAGE), str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1
    assert proc.stderr == f"verity-image: {tmp_path}/rootfs.erofs: no such file " + (
        "(BR2_TARGET_ROOTFS_EROFS=y makes it)\n"
    )


def test_post_image_leaves_an_image_without_erofs_alone(tmp_path: Path) -> None:
    (tmp_path / "rootfs.ext4").write_bytes(b"\0" * 4096)
    proc = subprocess.run(
        ["sh", str(POST_IMAGE), str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "kernel-cmdline").exists()

"""board/cube/post-build.sh: the test-only serial auto-login, and nothing without it."""

import os
import subprocess

import pytest
from buildroot_support import EXTERNAL, REPO

POST_BUILD = REPO / "board" / "cube" / "post-build.sh"
# Buildroot's busybox inittab line for BR2_TARGET_GENERIC_GETTY_PORT="ttyS0".
INITTAB = (
    "::sysinit:/etc/init.d/rcS\nttyS0::respawn:/sbin/getty -L  ttyS0 0 vt100 # GENERIC_SERIAL\n"
)
DROP_IN = "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"


def post_build(tmp_path, config: str) -> tuple[subprocess.CompletedProcess, object]:
    target = tmp_path / "target"
    (target / "etc").mkdir(parents=True)
    (target / "etc" / "inittab").write_text(INITTAB)
    (tmp_path / ".config").write_text(config)
    env = dict(
        os.environ, BR2_CONFIG=str(tmp_path / ".config"), BR2_EXTERNAL_CUBE_PATH=str(EXTERNAL)
    )
    proc = subprocess.run(
        ["sh", str(POST_BUILD), str(target)], env=env, capture_output=True, text=True, timeout=30
    )
    return proc, target


@pytest.mark.parametrize("init", ["BR2_INIT_SYSTEMD=y", "BR2_INIT_BUSYBOX=y"])
def test_nothing_changes_without_the_option(tmp_path, init):
    proc, target = post_build(tmp_path, f"{init}\n# BR2_CUBE_TEST_AUTOLOGIN is not set\n")
    assert proc.returncode == 0, proc.stderr
    assert (target / "etc" / "inittab").read_text() == INITTAB
    assert not (target / DROP_IN).exists()


def test_busybox_init_gets_a_root_shell_on_ttyS0(tmp_path):
    proc, target = post_build(tmp_path, "BR2_INIT_BUSYBOX=y\nBR2_CUBE_TEST_AUTOLOGIN=y\n")
    assert proc.returncode == 0, proc.stderr
    lines = (target / "etc" / "inittab").read_text().splitlines()
    assert lines == ["::sysinit:/etc/init.d/rcS", "ttyS0::respawn:-/bin/sh"]
    assert "test image" in proc.stdout


def test_systemd_gets_an_agetty_autologin_drop_in(tmp_path):
    proc, target = post_build(tmp_path, "BR2_INIT_SYSTEMD=y\nBR2_CUBE_TEST_AUTOLOGIN=y\n")
    assert proc.returncode == 0, proc.stderr
    drop_in = (target / DROP_IN).read_text()
    assert "ExecStart=\n" in drop_in
    assert "--autologin root" in drop_in


def test_a_busybox_image_without_serial_getty_is_an_error(tmp_path):
    _, target = post_build(tmp_path, "BR2_INIT_BUSYBOX=y\nBR2_CUBE_TEST_AUTOLOGIN=y\n")
    (target / "etc" / "inittab").write_text("::sysinit:/etc/init.d/rcS\n")
    env = dict(
        os.environ, BR2_CONFIG=str(tmp_path / ".config"), BR2_EXTERNAL_CUBE_PATH=str(EXTERNAL)
    )
    proc = subprocess.run(
        ["sh", str(POST_BUILD), str(target)], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0
    assert "no ttyS0 getty line" in proc.stderr

"""The offline test image builder and `make try`'s launcher, without booting anything."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from integration.guest import image_for, testimage

# The users and homes docs/architecture.md promises, as the packages' _USERS create them.
CONTRACT_USERS = {
    "ollama": "/var/lib/ollama",
    "vllm": "/var/lib/vllm",
    "llama-server": "/var/lib/llama-server",
    "cube-models": "-",
    "cube-agent": "/var/lib/cube-agent",
}


def test_package_users_match_the_contract(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text(
        "".join(f"BR2_PACKAGE_{p}=y\n" for p in ("OLLAMA", "VLLM", "CUBE_LLAMA_SERVER"))
        + "BR2_PACKAGE_CUBE_MODELS=y\nBR2_PACKAGE_CUBE_AGENT=y\n"
    )
    users = {line[0]: line for line in testimage.package_users(config)}
    assert {name: users[name][5] for name in users} == CONTRACT_USERS
    for name, line in users.items():
        assert line[2] == name, "each service has its own group"


def test_disabled_packages_create_no_users(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("BR2_PACKAGE_OLLAMA=y\n# BR2_PACKAGE_VLLM is not set\n")
    assert [line[0] for line in testimage.package_users(config)] == ["ollama"]


def test_the_image_key_follows_every_input(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    source = tmp_path / "agent" / "app.py"
    source.write_text("one")
    first = testimage.inputs_hash([tmp_path / "agent"], ["6.1.0"])
    assert testimage.inputs_hash([tmp_path / "agent"], ["6.1.0"]) == first
    source.write_text("two")
    assert testimage.inputs_hash([tmp_path / "agent"], ["6.1.0"]) != first
    assert testimage.inputs_hash([tmp_path / "agent"], ["6.1.1"]) != first


def test_bad_init_is_refused_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, testimage.__file__, "build", "--init", "openrc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid choice: 'openrc'" in result.stderr


@pytest.mark.vm
@pytest.mark.timeout(1200)
def test_try_boots_the_test_image_with_the_agent_forwarded() -> None:
    """`make try`'s launcher, up to the QEMU command line (DRY_RUN: nothing is booted)."""
    image, offline = image_for("systemd")
    if not offline:
        pytest.skip("IMAGE_DIR is set: make try boots the offline test image only")
    result = subprocess.run(
        [sys.executable, testimage.__file__, "try", "--agent-port", "17123"],
        env=dict(os.environ, DRY_RUN="1"),
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout.strip().splitlines()[-1])
    assert command[0] == "qemu-system-x86_64"
    assert "user,id=net0,hostfwd=tcp:127.0.0.1:17123-:7001" in command
    assert command[command.index("-kernel") + 1] == str(image / "bzImage")
    assert "-initrd" not in command  # the CVM kernel mounts the verity root itself
    assert f"if=virtio,format=raw,file={image / 'rootfs.img'},readonly=on" in command
    assert command[command.index("-append") + 1] == (image / "kernel-cmdline").read_text().strip()
    assert "-snapshot" in command, "the cached image must stay pristine"
    assert "cat /etc/cube/agent/admin.key" in result.stderr

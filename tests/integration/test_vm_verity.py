"""A tampered root disk: one byte of the agent flipped by the host, root hash unchanged.

The host controls the disk but not the measured command line, which keeps the image's
root hash. dm-verity finds the changed block at its first read and, as the table says
(panic_on_corruption), the kernel panics: the machine stops and never serves. What a
guest reads is never the tampered byte.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pexpect
import pytest
from integration.emulator import Emulator, scaled
from integration.guest import TIMINGS, image_for, testimage
from support import free_port

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

# The agent's console script, as pip writes it into the test image: read when the agent
# starts (ExecStartPre=cube-agent keys init), if nothing read its block before.
AGENT_SCRIPT = b"from cube_agent.cli import main"
PANIC = "Kernel panic - not syncing: dm-verity device corrupted"


def tampered_copy(image: Path, dest: Path) -> int:
    """The image directory with one byte of the agent's script flipped; its offset."""
    dest.mkdir()
    for item in image.iterdir():
        if item.is_file() and item.name != "state.img":
            shutil.copyfile(item, dest / item.name)
    disk = dest / "rootfs.img"
    data = bytearray(disk.read_bytes())
    assert data.count(AGENT_SCRIPT) == 1, "the script's text must be findable once"
    at = data.index(AGENT_SCRIPT)
    data[at] ^= 0x20  # "from" -> "Ffrom": a different byte, same length
    disk.write_bytes(bytes(data))
    return at


def test_a_flipped_byte_in_the_agent_stops_the_machine(console_logs: Path, tmp_path: Path) -> None:
    image, offline = image_for("systemd")
    if not offline:
        pytest.skip("IMAGE_DIR is set: the tamper test edits the offline test image only")
    tampered = tmp_path / "tampered"
    tampered_copy(image, tampered)
    assert (tampered / "kernel-cmdline").read_text() == (image / "kernel-cmdline").read_text()

    port = free_port()
    console = Emulator(
        testimage.launch_command(),
        testimage.launch_env(tampered, port),
        console_logs / "tampered.log",
    )
    started = time.monotonic()
    try:
        console.start()
        assert console.qemu is not None
        index = console.qemu.expect([PANIC, pexpect.EOF], timeout=scaled(600))
        TIMINGS.append(f"tampered image panicked after {time.monotonic() - started:.0f} s")
        assert index == 0, "QEMU exited without the dm-verity panic"
        # The kernel named the corrupted block of the root device before stopping.
        assert "is corrupted" in console.qemu.before
        # Stopped: QEMU still runs the halted guest, nothing answers behind the forward.
        assert console.qemu.isalive()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://127.0.0.1:{port}/health", verify=False, timeout=10)
    finally:
        console.close()

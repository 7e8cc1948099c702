"""What every booted image must show of its verified root (used by the systemd and
busybox-init modules): mounted read-only from the dm-verity device the kernel set up from
the measured command line, with the root hash that line carries."""

from __future__ import annotations

import re

from integration.guest import Guest


def root_hash(guest: Guest) -> str:
    """The root hash on the image's kernel command line (what is measured)."""
    line = (guest.image / "kernel-cmdline").read_text()
    match = re.search(r" sha256 ([0-9a-f]{64}) [0-9a-f]{64} 1 panic_on_corruption", line)
    assert match, line
    return match.group(1)


def var_mount(guest: Guest) -> str:
    """'SOURCE FSTYPE' of /var."""
    return guest.console.check("awk '$2 == \"/var\" {print $1, $3}' /proc/mounts")


def check_verified_root(guest: Guest) -> None:
    console = guest.console
    # / is EROFS on dm-0, the device dm-mod.create= made (no initramfs: the kernel did it).
    assert console.check("mountpoint -d /") == console.check("cat /sys/block/dm-0/dev")
    assert console.check("cat /sys/block/dm-0/dm/name") == "root"
    fstype, options = console.check("awk '$2 == \"/\" {print $3, $4}' /proc/mounts").split()
    assert fstype == "erofs" and options.split(",")[0] == "ro"
    output, status = console.run("touch /usr/bin/cube-test-write")
    assert status != 0 and "Read-only file system" in output
    # The table the kernel runs: dm-verity over vda with the measured root hash, and a
    # corrupted block panics the machine.
    table = console.check("dmsetup table root")
    assert re.fullmatch(
        rf"0 \d+ verity 1 (\d+:\d+) \1 4096 4096 \d+ \d+ sha256 {root_hash(guest)} "
        r"[0-9a-f]{64} 1 panic_on_corruption",
        table,
    ), table
    status_lines = console.check("veritysetup status root")
    assert re.search(r"type:\s+VERITY", status_lines), status_lines
    assert re.search(r"status:\s+verified", status_lines), status_lines
    assert re.search(r"data device:\s+/dev/vda", status_lines), status_lines

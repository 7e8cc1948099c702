"""board/cube/launch-vm: the QEMU command line of each mode, and its refusals.

The confidential modes cannot boot here (no SEV-SNP or TDX host, QEMU 7.2), so they are
checked on the printed command line; the plain one is also handed to the real QEMU, paused
before the first instruction, to show QEMU accepts every option and file.
"""

from __future__ import annotations

import glob
import json
import os
import select
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cvm_support import LAUNCH, script_env
from support import free_port, missing


def launch(images: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LAUNCH), *args],
        env=script_env(images, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def command(images: Path, mode: str, **env: str) -> list[str]:
    proc = launch(images, "--print", mode, **env)
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout)


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


def test_plain_boots_the_image_with_the_agent_forwarded(images: Path) -> None:
    argv = command(images, "plain", ACCEL="tcg", OVMF="")
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-accel") == ["tcg"]
    assert option(argv, "-kernel") == [str(images / "bzImage")]
    assert option(argv, "-drive") == [
        f"if=virtio,format=raw,file={images / 'rootfs.ext4'}",
        f"if=virtio,format=raw,file={images / 'state.img'}",
    ]
    assert option(argv, "-append") == ["root=/dev/vda rw console=ttyS0"]
    assert option(argv, "-smp") == ["2"] and option(argv, "-m") == ["4G"]
    assert "hostfwd=tcp:127.0.0.1:7001-:7001" in option(argv, "-netdev")[0]
    assert "-bios" not in argv and "-initrd" not in argv


def test_settings_are_overridable(images: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"initrd")
    argv = command(
        images,
        "plain",
        ACCEL="tcg",
        CPUS="4",
        MEM="8G",
        AGENT_PORT="17001",
        INITRD=str(initrd),
        KERNEL_CMDLINE="root=/dev/vda ro console=ttyS0 quiet",
        EXTRA_ARGS="-S -no-reboot",
    )
    assert option(argv, "-smp") == ["4"] and option(argv, "-m") == ["8G"]
    assert "hostfwd=tcp:127.0.0.1:17001-:7001" in option(argv, "-netdev")[0]
    assert option(argv, "-initrd") == [str(initrd)]
    assert option(argv, "-append") == ["root=/dev/vda ro console=ttyS0 quiet"]
    assert option(argv, "-bios") == [str(images / "OVMF.amdsev.fd")]  # UEFI when asked
    assert argv[-2:] == ["-S", "-no-reboot"]


def verity_images(images: Path) -> str:
    """Turn `images` into a verity image directory (what board/cube/verity-image leaves)."""
    (images / "rootfs.ext4").unlink()
    (images / "rootfs.img").write_bytes(b"erofs and hash tree")
    table = "0 8 verity 1 /dev/vda /dev/vda 4096 4096 1 2 sha256 ab cd 1 panic_on_corruption"
    line = f'dm-mod.create="root,,,ro,{table}" root=/dev/dm-0 ro console=ttyS0'
    (images / "kernel-cmdline").write_text(line + "\n")
    return line


@pytest.mark.parametrize("mode", ["plain", "snp", "tdx"])
def test_a_verity_image_boots_its_own_command_line_read_only(images: Path, mode: str) -> None:
    line = verity_images(images)
    argv = command(images, mode, ACCEL="tcg")
    assert option(argv, "-append") == [line]
    drives = option(argv, "-drive")
    assert f"file={images / 'rootfs.img'},readonly=on" in drives[0]
    assert drives[1].endswith(f"file={images / 'state.img'}")
    assert len(drives) == 2


def test_state_none_means_no_state_disk(images: Path) -> None:
    verity_images(images)
    for mode in ("plain", "snp"):
        drives = option(command(images, mode, ACCEL="tcg", STATE="none"), "-drive")
        assert len(drives) == 1 and "rootfs.img" in drives[0]


def test_snp_is_an_sev_snp_guest_with_kernel_hashes(images: Path) -> None:
    argv = command(images, "snp", CPUS="3", MEM="6G")
    assert option(argv, "-accel") == ["kvm"]
    machine = option(argv, "-machine")[0].split(",")
    assert "confidential-guest-support=sev0" in machine and "memory-backend=ram1" in machine
    objects = option(argv, "-object")
    memfd = next(o for o in objects if o.startswith("memory-backend-memfd,"))
    assert "id=ram1" in memfd.split(",") and "size=6G" in memfd.split(",")
    snp = next(o for o in objects if o.startswith("sev-snp-guest,")).split(",")
    assert {"id=sev0", "cbitpos=51", "reduced-phys-bits=1", "kernel-hashes=on"} <= set(snp)
    assert option(argv, "-bios") == [str(images / "OVMF.amdsev.fd")]
    assert option(argv, "-cpu") == ["EPYC-v4"]
    assert option(argv, "-smp") == ["3"] and option(argv, "-m") == ["6G"]
    assert option(argv, "-kernel") == [str(images / "bzImage")]
    # a confidential guest only talks to virtio devices through the DMA API
    devices = option(argv, "-device")
    assert devices and all("iommu_platform=on" in d for d in devices)
    assert any(d.startswith("virtio-blk-pci,drive=disk0") for d in devices)
    assert any(d.startswith("virtio-blk-pci,drive=disk1") for d in devices)  # state


def test_tdx_is_a_td_guest(images: Path) -> None:
    argv = command(images, "tdx")
    machine = option(argv, "-machine")[0].split(",")
    assert {"q35", "kernel-irqchip=split", "confidential-guest-support=tdx0"} <= set(machine)
    assert "tdx-guest,id=tdx0" in option(argv, "-object")
    assert option(argv, "-accel") == ["kvm"] and len(option(argv, "-bios")) == 1
    assert all("iommu_platform=on" in d for d in option(argv, "-device"))


@pytest.mark.parametrize(
    ("mode", "env", "message"),
    [
        ("plain", {"KERNEL": "/nonexistent/bzImage"}, "KERNEL=/nonexistent/bzImage: no such file"),
        ("plain", {"ROOTFS": "/nonexistent/rootfs"}, "ROOTFS=/nonexistent/rootfs: no such file"),
        ("snp", {"OVMF": "/nonexistent/OVMF.fd"}, "OVMF=/nonexistent/OVMF.fd: no such file"),
        ("tdx", {"OVMF": "/nonexistent/OVMF.fd"}, "OVMF=/nonexistent/OVMF.fd: no such file"),
        ("plain", {"CPUS": "two"}, "CPUS=two: not a positive number"),
        ("plain", {"ACCEL": "hvf"}, "ACCEL=hvf: expected auto, kvm or tcg"),
        ("plain", {"QEMU": "no-such-qemu"}, "QEMU=no-such-qemu: not found"),
    ],
)
def test_bad_settings_fail_with_one_line(images: Path, mode: str, env: dict, message: str) -> None:
    for args in (("--print", mode), (mode,)):
        proc = launch(images, *args, **env)
        assert proc.returncode == 1
        assert proc.stdout == ""
        assert proc.stderr.startswith("launch-vm: ") and message in proc.stderr
        assert proc.stderr.count("\n") == 1


def test_usage_error_names_the_modes(images: Path) -> None:
    proc = launch(images, "sev")
    assert proc.returncode == 1 and "plain|snp|tdx" in proc.stderr


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Path:
    """A qemu-system-x86_64 that lists its objects (like QEMU 7.2: no CVM objects) and
    records any real launch in launched.txt."""
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "-object help" ]; then\n'
        "  printf 'List of user creatable objects:\\n  memory-backend-memfd\\n  sev-guest\\n'\n"
        "  exit 0\nfi\n"
        f"printf '%s\\n' \"$@\" > {tmp_path}/launched.txt\n"
    )
    qemu.chmod(0o755)
    return qemu


def host(tmp_path: Path, *files: str, params: dict[str, str] | None = None) -> Path:
    root = tmp_path / "host"
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    for f, value in (params or {}).items():
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(value + "\n")
    root.mkdir(exist_ok=True)
    return root


SNP_PARAM = "sys/module/kvm_amd/parameters/sev_snp"
TDX_PARAM = "sys/module/kvm_intel/parameters/tdx"


@pytest.mark.parametrize(
    ("mode", "files", "params", "message"),
    [
        ("snp", [], {}, "snp needs KVM"),
        ("tdx", [], {}, "tdx needs KVM"),
        ("snp", ["dev/kvm"], {}, "no AMD SEV"),
        ("snp", ["dev/kvm", "dev/sev"], {SNP_PARAM: "N"}, "kvm_amd has SEV-SNP off"),
        ("snp", ["dev/kvm", "dev/sev"], {SNP_PARAM: "Y"}, "no sev-snp-guest object"),
        ("tdx", ["dev/kvm"], {}, "no Intel TDX"),
        ("tdx", ["dev/kvm"], {TDX_PARAM: "N"}, "no Intel TDX"),
        ("tdx", ["dev/kvm"], {TDX_PARAM: "Y"}, "no tdx-guest object"),
    ],
)
def test_host_without_the_tee_is_refused_before_qemu_runs(
    images: Path, tmp_path: Path, fake_qemu: Path, mode: str, files, params, message: str
) -> None:
    root = host(tmp_path, *files, params=params)
    proc = launch(
        images, mode, HOST_ROOT=str(root), QEMU=str(fake_qemu), OVMF=str(images / "OVMF.amdsev.fd")
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("launch-vm: ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "launched.txt").exists()


def test_a_host_with_the_tee_gets_the_printed_command(
    images: Path, tmp_path: Path, fake_qemu: Path
) -> None:
    fake_qemu.write_text(fake_qemu.read_text().replace("sev-guest", "sev-guest\\n  sev-snp-guest"))
    root = host(tmp_path, "dev/kvm", "dev/sev", params={SNP_PARAM: "Y"})
    env = {"HOST_ROOT": str(root), "QEMU": str(fake_qemu)}
    proc = launch(images, "snp", **env)
    assert proc.returncode == 0, proc.stderr
    printed = command(images, "snp", **env)
    assert (tmp_path / "launched.txt").read_text().splitlines() == printed[1:]


def qmp(stream, command: str) -> dict:
    stream.write(json.dumps({"execute": command}).encode() + b"\n")
    stream.flush()
    while True:
        msg = json.loads(stream.readline())
        if "return" in msg or "error" in msg:  # skip asynchronous events
            return msg


def test_qemu_accepts_the_plain_command_line(images: Path, tmp_path: Path) -> None:
    """Real QEMU, real kernel, paused before the first instruction: every option parsed,
    every device created, the kernel loaded. Nothing boots."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        missing("no /boot/vmlinuz-* to load (Debian package linux-image-amd64)")
    sock_path = tmp_path / "qmp.sock"
    env = script_env(
        images,
        ACCEL="tcg",
        MEM="256M",
        KERNEL=kernels[-1],
        AGENT_PORT=str(free_port()),
        EXTRA_ARGS=f"-S -qmp unix:{sock_path},server=on,wait=off",
    )
    proc = subprocess.Popen(
        [str(LAUNCH), "plain"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock_path.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "QEMU did not open its QMP socket"
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(sock_path))
            stream = sock.makefile("rwb")
            stream.readline()  # greeting
            assert "return" in qmp(stream, "qmp_capabilities")
            # The monitor answers only once the machine is built: devices, disk, kernel.
            status = qmp(stream, "query-status")["return"]
            assert status["status"] == "prelaunch" and not status["running"]
            qmp(stream, "quit")
        assert proc.wait(timeout=30) == 0
        # the state disk it made: blank, sparse, for the guest to format on first boot
        state = images / "state.img"
        assert state.stat().st_size == 8 << 30 and state.stat().st_blocks == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.vm
def test_plain_mode_boots_a_kernel_that_sees_the_disk_as_vda(images: Path) -> None:
    """`make run`'s command line under TCG with the host's Debian kernel and initrd: the
    kernel starts on the serial console and finds rootfs.ext4 as /dev/vda (~15 s)."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    initrds = sorted(glob.glob("/boot/initrd.img-*"))
    if not kernels or not initrds:
        missing("no /boot/vmlinuz-* and initrd.img-* (Debian package linux-image-amd64)")
    env = script_env(
        images,
        ACCEL="tcg",
        CPUS="1",
        MEM="512M",
        KERNEL=kernels[-1],
        INITRD=initrds[-1],
        OVMF="",  # SeaBIOS: the fixture's OVMF is a fake
        AGENT_PORT=str(free_port()),
        EXTRA_ARGS="-no-reboot",
    )
    proc = subprocess.Popen(
        [str(LAUNCH), "plain"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    console = b""
    try:
        deadline = time.monotonic() + 180
        while b"[vda]" not in console:
            assert proc.poll() is None, console.decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, console.decode(errors="replace")[-2000:]
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                console += os.read(proc.stdout.fileno(), 65536)
        assert b"root=/dev/vda rw console=ttyS0" in console  # the command line it was given
    finally:
        proc.kill()
        proc.wait()

"""scripts/measure and `make measure`: the predicted SEV-SNP launch measurement.

The OVMF is fake_ovmf.py's synthetic AmdSev-shaped image (Debian bookworm ships no AmdSev
build); sev-snp-measure does the real computation on it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import fake_ovmf
import pytest
from cvm_support import MEASURE, REPO, script_env
from support import missing

TOOL = Path(sys.executable).with_name("sev-snp-measure")


def measure(images: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MEASURE), "--output", str(out)],
        env=script_env(images, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def measured(images: Path, out: Path, **env: str) -> dict:
    proc = measure(images, out, **env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert proc.stdout.split() == [result["measurement"], str(out)]
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_inputs_same_measurement(images: Path, tmp_path: Path) -> None:
    first = measured(images, tmp_path / "a.json")
    second = measured(images, tmp_path / "b.json")
    assert first == second
    assert len(bytes.fromhex(first["measurement"])) == 48  # SHA-384, as in the SNP report


def test_records_the_inputs_it_measured(images: Path, tmp_path: Path) -> None:
    result = measured(images, tmp_path / "m.json")
    inputs = result["inputs"]
    assert inputs["ovmf"] == {
        "path": str(images / "OVMF.amdsev.fd"),
        "sha256": sha256(images / "OVMF.amdsev.fd"),
    }
    kernel = images / "bzImage"
    assert inputs["kernel"] == {"path": str(kernel), "sha256": sha256(kernel)}
    assert inputs["initrd"] is None
    assert inputs["cmdline"] == "root=/dev/vda rw console=ttyS0"
    assert (inputs["vcpus"], inputs["vcpu_type"], inputs["guest_features"]) == (2, "EPYC-v4", "0x1")
    assert result["tool"]["name"] == "sev-snp-measure" and result["tool"]["version"]
    # the command line `make run-snp` runs with these settings
    launch = subprocess.run(
        [str(REPO / "board" / "cube" / "launch-vm"), "--print", "snp"],
        env=script_env(images),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result["launch_command"] == launch.stdout.strip()


def test_agrees_with_sev_snp_measure_run_by_hand(images: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"an initramfs\n")
    result = measured(
        images, tmp_path / "m.json", CPUS="4", INITRD=str(initrd), KERNEL_CMDLINE="console=ttyS0"
    )
    args = ["--mode", "snp", "--vcpus", "4", "--vcpu-type", "EPYC-v4", "--output-format", "hex"]
    args += ["--ovmf", str(images / "OVMF.amdsev.fd"), "--kernel", str(images / "bzImage")]
    args += ["--initrd", str(initrd), "--append", "console=ttyS0"]
    by_hand = subprocess.run(
        [str(TOOL), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    assert result["measurement"] == by_hand
    assert result["inputs"]["initrd"]["sha256"] == sha256(initrd)


@pytest.mark.parametrize(
    "change",
    [
        {"KERNEL_CMDLINE": "root=/dev/vda rw console=ttyS0 quiet"},
        {"CPUS": "4"},
        {"SNP_CPU": "EPYC-Milan"},
        {"GUEST_FEATURES": "0x21"},
    ],
)
def test_any_launch_input_changes_the_measurement(
    images: Path, tmp_path: Path, change: dict[str, str]
) -> None:
    base = measured(images, tmp_path / "base.json")
    changed = measured(images, tmp_path / "changed.json", **change)
    assert changed["measurement"] != base["measurement"]


def test_kernel_and_firmware_bytes_change_the_measurement(images: Path, tmp_path: Path) -> None:
    base = measured(images, tmp_path / "base.json")["measurement"]
    kernel = images / "bzImage"
    kernel.write_bytes(kernel.read_bytes() + b"\0")
    assert measured(images, tmp_path / "k.json")["measurement"] != base
    other = tmp_path / "ovmf.fd"
    other.write_bytes(fake_ovmf.image().replace(b"CUBE-TEST-OVMF", b"CUBE-TEST-OVMX", 1))
    assert measured(images, tmp_path / "o.json", OVMF=str(other))["measurement"] != base


def test_ovmf_without_kernel_hashes_is_refused_clearly(images: Path, tmp_path: Path) -> None:
    # Debian bookworm's OVMF.fd is such a firmware; the fake stands in where it is missing.
    ovmf = Path("/usr/share/ovmf/OVMF.fd")
    if not ovmf.exists():
        ovmf = fake_ovmf.write(tmp_path / "plain-ovmf.fd", kernel_hashes=False)
    out = tmp_path / "m.json"
    proc = measure(images, out, OVMF=str(ovmf))
    assert proc.returncode == 1
    assert proc.stderr.startswith("measure: ") and proc.stderr.count("\n") == 1
    assert "SNP_KERNEL_HASHES" in proc.stderr and "AmdSev" in proc.stderr
    assert not out.exists()


def test_missing_image_is_refused_clearly(images: Path, tmp_path: Path) -> None:
    (images / "bzImage").unlink()
    proc = measure(images, tmp_path / "m.json")
    assert proc.returncode == 1
    assert proc.stderr.startswith("measure: launch-vm: KERNEL=") and "no such file" in proc.stderr


def test_make_measure_writes_measurement_json(images: Path, tmp_path: Path) -> None:
    if not shutil.which("make"):
        missing("make is not installed (scripts/install-host-deps.sh)")
    env = script_env(images)
    args = [f"PYTHON={sys.executable}", f"IMAGE_DIR={images}", "CPUS=3"]
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO), "-o", "venv", "measure", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((images / "measurement.json").read_text())
    assert result["inputs"]["vcpus"] == 3
    assert result == measured(images, tmp_path / "direct.json", CPUS="3")

"""Kernel config fragment options survive the merge, or the build stops naming them.

board/cube/check-kernel-config runs as a LINUX_POST_CONFIGURE_HOOKS in Buildroot and on
the real 6.12 source here: x86_64_defconfig merged with board/cube/linux-cvm.fragment the
way Buildroot merges it (scripts/cvm-kernel/cvmkernel.py; Debian's 6.12 orig tarball,
downloaded once, ~16 s a configuration).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from buildroot_support import EXTERNAL, REPO
from support import missing

CHECK = REPO / "board/cube/check-kernel-config"
FRAGMENT = REPO / "board/cube/linux-cvm.fragment"
sys.path.insert(0, str(REPO / "scripts/cvm-kernel"))
import cvmkernel  # noqa: E402

# What a TDX and SEV-SNP guest with a verity root needs: each must be in the final .config.
CVM_OPTIONS = [
    "CONFIG_AMD_MEM_ENCRYPT=y",
    "CONFIG_SEV_GUEST=y",
    "CONFIG_X86_X2APIC=y",
    "CONFIG_INTEL_TDX_GUEST=y",
    "CONFIG_TDX_GUEST_DRIVER=y",
    "CONFIG_TSM_REPORTS=y",
    "CONFIG_DM_INIT=y",
    "CONFIG_DM_VERITY=y",
    "CONFIG_EROFS_FS=y",
    "CONFIG_VIRTIO_BLK=y",
]


def check(tmp_path: Path, dotconfig: str, *fragments: str) -> subprocess.CompletedProcess:
    (tmp_path / ".config").write_text(dotconfig)
    paths = []
    for i, text in enumerate(fragments):
        paths.append(tmp_path / f"{i}.fragment")
        paths[-1].write_text(text)
    return subprocess.run(
        [str(CHECK), str(tmp_path / ".config"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_every_dropped_option_is_named(tmp_path):
    proc = check(
        tmp_path,
        "CONFIG_A=y\nCONFIG_B=m\nCONFIG_D=y\n# CONFIG_C is not set\n",
        "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n# CONFIG_D is not set\n",
    )
    assert proc.returncode == 1
    assert "CONFIG_A" not in proc.stderr
    assert "CONFIG_B=y (" in proc.stderr and "is m in" in proc.stderr
    assert "CONFIG_C=y (" in proc.stderr and "is not set in" in proc.stderr
    assert "CONFIG_D=n (" in proc.stderr and "is y in" in proc.stderr
    assert "3 fragment option(s) dropped" in proc.stderr


def test_the_last_fragment_wins_as_in_merge_config(tmp_path):
    proc = check(tmp_path, "CONFIG_A=m\n", "CONFIG_A=y\n", "CONFIG_A=m\n")
    assert proc.returncode == 0, proc.stderr
    proc = check(tmp_path, "CONFIG_A=y\n", "CONFIG_A=y\n", "# CONFIG_A is not set\n")
    assert proc.returncode == 1
    assert "1.fragment:1" in proc.stderr


def test_string_values_must_match_exactly(tmp_path):
    proc = check(tmp_path, 'CONFIG_CMDLINE="a"\n', 'CONFIG_CMDLINE="b"\n')
    assert proc.returncode == 1
    assert 'CONFIG_CMDLINE="b"' in proc.stderr


def test_buildroot_runs_the_check_after_configuring_linux(configure):
    out = configure("cube_cvm_defconfig")
    proc = out.make(
        "printvars", "VARS=LINUX_POST_CONFIGURE_HOOKS CUBE_CHECK_KERNEL_CONFIG LINUX_DIR"
    )
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert "CUBE_CHECK_KERNEL_CONFIG" in values["LINUX_POST_CONFIGURE_HOOKS"].split()
    words = values["CUBE_CHECK_KERNEL_CONFIG"].split()
    assert Path(words[0]).resolve() == CHECK
    assert words[1] == values["LINUX_DIR"] + "/.config"
    assert [Path(w).resolve() for w in words[2:]] == [FRAGMENT]
    assert (EXTERNAL / "external.mk").read_text().count("LINUX_POST_CONFIGURE_HOOKS") == 1


@pytest.fixture(scope="module")
def kernel_source():
    try:
        return cvmkernel.kernel_source()
    except cvmkernel.KernelError as error:
        missing(f"no 6.12 kernel source: {error}")


def test_our_fragment_survives_on_6_12(kernel_source, buildroot, tmp_path):
    dotconfig = cvmkernel.configure(tmp_path / "build", [FRAGMENT]).read_text().splitlines()
    for option in CVM_OPTIONS:
        assert option in dotconfig


def test_a_fragment_the_kernel_drops_fails_naming_the_options(kernel_source, buildroot, tmp_path):
    # The fragment as it was before X2APIC: on 6.12 the TDX guest options need it.
    bad = tmp_path / "bad.fragment"
    bad.write_text(FRAGMENT.read_text().replace("CONFIG_X86_X2APIC=y\n", ""))
    with pytest.raises(cvmkernel.KernelError) as error:
        cvmkernel.configure(tmp_path / "build", [bad])
    message = str(error.value)
    assert "CONFIG_INTEL_TDX_GUEST=y" in message
    assert "CONFIG_TDX_GUEST_DRIVER=y" in message
    assert "2 fragment option(s) dropped" in message

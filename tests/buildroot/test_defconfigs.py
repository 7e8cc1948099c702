"""The defconfigs load, mean what they say, and give no one a password."""

import re
from pathlib import Path

import pytest
from buildroot_support import DEFCONFIGS, EXTERNAL, parse_config

pytestmark = pytest.mark.buildroot

defconfig_params = pytest.mark.parametrize("name", DEFCONFIGS)


def defconfig(name: str) -> dict[str, str]:
    return parse_config((EXTERNAL / "configs" / name).read_text())


@defconfig_params
def test_every_symbol_exists_in_the_kconfig_tree(name, kconfig):
    unknown = sorted(set(defconfig(name)) - set(kconfig.syms))
    assert not unknown, f"{name}: symbols no Config.in defines: {unknown}"


@defconfig_params
def test_every_value_survives_into_dot_config(name, configure):
    config = configure(name).config()
    dropped = {
        symbol: (value, config.get(symbol, "n"))
        for symbol, value in defconfig(name).items()
        if config.get(symbol, "n") != value
    }
    assert not dropped, f"{name}: (defconfig, .config) differ, a 'depends on' failed: {dropped}"


@defconfig_params
def test_savedefconfig_gives_back_the_same_file(name, configure, tmp_path):
    saved = tmp_path / "defconfig"
    proc = configure(name).make("savedefconfig", f"BR2_DEFCONFIG={saved}")
    assert proc.returncode == 0, proc.stderr
    assert saved.read_text() == (EXTERNAL / "configs" / name).read_text()


@defconfig_params
def test_the_image_stack(name, configure):
    config = configure(name).config()
    expected = {
        "BR2_x86_64": "y",
        "BR2_TOOLCHAIN_USES_GLIBC": "y",
        "BR2_LINUX_KERNEL": "y",
        "BR2_LINUX_KERNEL_VERSION": '"6.12.91"',
        # a read-only root, hashed for dm-verity by post-image.sh, reproducibly
        "BR2_TARGET_ROOTFS_EROFS": "y",
        "BR2_TARGET_ROOTFS_EXT2": "n",
        "BR2_PACKAGE_HOST_CRYPTSETUP": "y",
        "BR2_TARGET_GENERIC_REMOUNT_ROOTFS_RW": "n",
        "BR2_REPRODUCIBLE": "y",
        "BR2_PACKAGE_PYTHON3": "y",
        "BR2_PACKAGE_CUBE_AGENT": "y",
        "BR2_PACKAGE_CUBE_AGENT_BACKEND_OLLAMA": "y",
        "BR2_PACKAGE_OLLAMA": "y",
        "BR2_PACKAGE_CUBE_MODELS": "y",
        "BR2_TARGET_GENERIC_GETTY_PORT": '"ttyS0"',
        "BR2_DOWNLOAD_FORCE_CHECK_HASHES": "y",
    }
    expected["BR2_INIT_SYSTEMD" if "sysv" not in name else "BR2_INIT_BUSYBOX"] = "y"
    assert {k: config.get(k, "n") for k in expected} == expected


@defconfig_params
def test_no_password_and_root_locked(name, configure):
    text = (EXTERNAL / "configs" / name).read_text()
    assert not re.search(r"PASSW(OR)?D", text), f"{name} mentions a password"
    config = configure(name).config()
    assert config.get("BR2_TARGET_ENABLE_ROOT_LOGIN", "n") == "n"
    assert config.get("BR2_CUBE_TEST_AUTOLOGIN", "n") == "n"
    # Buildroot writes no root password (empty or "=…") when root login is off.
    assert config.get("BR2_TARGET_GENERIC_ROOT_PASSWD", '""') == '""'


@defconfig_params
def test_kernel_fragment_and_hash_are_in_the_tree(name, configure):
    config = configure(name).config()
    external = config["BR2_EXTERNAL_CUBE_PATH"].strip('"')

    def path(symbol):
        return config[symbol].strip('"').replace("$(BR2_EXTERNAL_CUBE_PATH)", external)

    fragment = path("BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES")
    text = Path(fragment).read_text()
    for option in (
        "CONFIG_AMD_MEM_ENCRYPT=y",
        "CONFIG_SEV_GUEST=y",
        "CONFIG_INTEL_TDX_GUEST=y",
        "CONFIG_TDX_GUEST_DRIVER=y",
        "CONFIG_TSM_REPORTS=y",
        "CONFIG_VIRTIO_BLK=y",
        "CONFIG_EFI_STUB=y",
        "CONFIG_EXT4_FS=y",
        "CONFIG_SERIAL_8250_CONSOLE=y",
    ):
        assert option in text.splitlines(), f"{fragment}: no {option}"
    hashes = Path(path("BR2_GLOBAL_PATCH_DIR"), "linux", "linux.hash").read_text()
    assert re.search(r"^sha256  [0-9a-f]{64}  linux-6\.12\.91\.tar\.xz$", hashes, re.M)

"""The real defconfigs, resolved by Buildroot's Kconfig, render; and every file a package's
.mk installs from the render is there."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from render_support import CUBE_CONFIG, ROOT, read_env_with_sh
from support import missing
from support.buildroot import buildroot_dir

pytestmark = pytest.mark.buildroot

EXTERNAL = ROOT / "br2-external"

CASES = {
    # name: (defconfig, lines added before olddefconfig, init symbol, agent target URL)
    "cvm": ("cube_cvm_defconfig", "", "BR2_INIT_SYSTEMD", "http://127.0.0.1:11434"),
    "cvm-sysv": ("cube_cvm_sysv_defconfig", "", "BR2_INIT_BUSYBOX", "http://127.0.0.1:11434"),
    "cvm-vllm": (
        "cube_cvm_defconfig",
        "BR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM=y\n",
        "BR2_INIT_SYSTEMD",
        "http://127.0.0.1:8000",
    ),
    "cvm-sysv-llama-cpp": (
        "cube_cvm_sysv_defconfig",
        "BR2_PACKAGE_CUBE_AGENT_BACKEND_LLAMA_CPP=y\n",
        "BR2_INIT_BUSYBOX",
        "http://127.0.0.1:8080",
    ),
    "cvm-custom": (
        "cube_cvm_defconfig",
        "BR2_PACKAGE_CUBE_AGENT_BACKEND_CUSTOM=y\n"
        'BR2_PACKAGE_CUBE_AGENT_TARGET_URL="http://10.0.2.2:8000"\n',
        "BR2_INIT_SYSTEMD",
        "http://10.0.2.2:8000",
    ),
}


@pytest.fixture(scope="module")
def buildroot() -> Path:
    path = buildroot_dir()
    if not (path / "Makefile").is_file():
        missing(f"no Buildroot at {path} (set BUILDROOT_DIR; make buildroot unpacks it)")
    return path


def make(buildroot: Path, out: Path, target: str) -> None:
    proc = subprocess.run(
        ["make", "-C", str(buildroot), f"BR2_EXTERNAL={EXTERNAL}", f"O={out}", target],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def symbols(config: Path) -> dict[str, str]:
    return dict(re.findall(r"^(BR2_\w+)=(.*)$", config.read_text(), re.MULTILINE))


@pytest.mark.parametrize("case", CASES)
def test_defconfig_renders_what_the_packages_install(buildroot, tmp_path, case):
    defconfig, extra, init, target_url = CASES[case]
    out = tmp_path / "output"
    make(buildroot, out, defconfig)
    config = out / ".config"
    if extra:
        kept = [
            line
            for line in config.read_text().splitlines()
            if "BR2_PACKAGE_CUBE_AGENT_BACKEND_" not in line
        ]
        config.write_text("\n".join(kept) + "\n" + extra)
        make(buildroot, out, "olddefconfig")
    values = symbols(config)
    assert values.get(init) == "y"
    for line in extra.splitlines():  # Kconfig kept the choice (its dependencies are met)
        key, value = line.split("=", 1)
        assert values.get(key) == value, f"Kconfig dropped {line}"

    rendered = tmp_path / "rendered"
    proc = subprocess.run(
        [sys.executable, str(CUBE_CONFIG), "--config", str(config), "--out", str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr

    enabled = [
        package
        for package in sorted((ROOT / "package").iterdir())
        if values.get("BR2_PACKAGE_" + package.name.upper().replace("-", "_")) == "y"
    ]
    assert {p.name for p in enabled} >= {"cube-agent", "ollama", "cube-models"}
    for package in enabled:
        mk = (package / f"{package.name}.mk").read_text()
        for path in re.findall(r"\$\(@D\)/rendered/(\S+)", mk):
            assert (rendered / path).is_file(), f"{package.name}.mk installs {path}: not rendered"

    agent = read_env_with_sh(rendered / "etc/default/cube-agent", ["sh"])
    assert agent["UV_CUBE_AGENT_TARGET_URL"] == target_url
    assert agent["UV_CUBE_AGENT_PORT"] == values["BR2_PACKAGE_CUBE_AGENT_PORT"]
    models = read_env_with_sh(rendered / "etc/default/pull-models", ["sh"])
    assert models["CUBE_MODELS"] == values["BR2_PACKAGE_CUBE_MODELS_LIST"].strip('"')


def test_every_symbol_the_generator_reads_exists(buildroot):
    source = CUBE_CONFIG.read_text()
    read = set(re.findall(r'"(BR2_\w+)"', source))
    kconfig = "".join(
        p.read_text() for p in [*EXTERNAL.glob("Config.in"), *(ROOT / "package").rglob("Config.in")]
    )
    kconfig += (buildroot / "system/Config.in").read_text()
    defined = set(re.findall(r"^\s*(?:menu)?config\s+(BR2_\w+)", kconfig, re.MULTILINE))
    assert read, "no symbols found in cube-config"
    assert sorted(read - defined) == []

"""Each package installs rendered files by path: the generator must render every one of
them for the configurations that enable the package."""

import re
import subprocess
import sys

import pytest
from buildroot_support import DEFCONFIGS, EXTERNAL, REPO

pytestmark = pytest.mark.buildroot

PACKAGES = {
    "ollama": "BR2_PACKAGE_OLLAMA",
    "cube-models": "BR2_PACKAGE_CUBE_MODELS",
    "vllm": "BR2_PACKAGE_VLLM",
    "cube-llama-server": "BR2_PACKAGE_CUBE_LLAMA_SERVER",
    "cube-agent": "BR2_PACKAGE_CUBE_AGENT",
}


def installed_rendered_files(package: str) -> set[str]:
    mk = (REPO / "package" / package / f"{package}.mk").read_text()
    return set(re.findall(r"\$\((?:@D|[A-Z_]+_DIR)\)/rendered/(\S+)", mk))


@pytest.mark.parametrize("backend", ["OLLAMA", "VLLM", "LLAMA_CPP", "SYSV"])
def test_the_generator_renders_what_the_packages_install(backend, configure, tmp_path):
    if backend == "SYSV":
        output = configure(DEFCONFIGS[1])
    else:
        defconfig = tmp_path / f"cube_{backend.lower()}_defconfig"
        text = (EXTERNAL / "configs" / DEFCONFIGS[0]).read_text()
        defconfig.write_text(f"{text}BR2_PACKAGE_CUBE_AGENT_BACKEND_{backend}=y\n")
        output = configure(str(defconfig))
    config = output.config()
    out = tmp_path / "rendered"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "generator" / "cube-config"),
            "--config",
            str(output.dir / ".config"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    enabled = [p for p, symbol in PACKAGES.items() if config.get(symbol) == "y"]
    assert "cube-agent" in enabled and len(enabled) >= 2
    init = "systemd" if config.get("BR2_INIT_SYSTEMD") == "y" else "sysv"
    for package in enabled:
        wanted = installed_rendered_files(package)
        assert wanted, f"{package}.mk installs no rendered file"
        for path in wanted:
            is_unit = path.startswith("usr/lib/systemd/")
            if (init == "systemd" and path.startswith("etc/init.d/")) or (
                init == "sysv" and is_unit
            ):
                continue  # rendered for the other init system only
            assert (out / path).is_file(), f"{package}: cube-config did not render {path}"

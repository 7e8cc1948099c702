"""vllm.mk's build and install commands, executed as Buildroot runs them.

The commands are taken from Buildroot itself (`make printvars` of VLLM_BUILD_CMDS and
VLLM_INSTALL_TARGET_CMDS for the vLLM defconfig, every variable expanded) and each line
is run with `sh -c`, as make runs a recipe line. `$(HOST_DIR)/bin/python3` is Buildroot's
host Python version (3.14) with Buildroot's host pip and Jinja2 versions
(support/host_python.py); the wheels in the download directory are stubs with the pinned
wheels' real metadata (support/wheel_stubs.py), and the CPython runtime, which only
GitHub serves, is an empty tree of its layout.

Whether the pins resolve is checked where it matters, for the runtime's Python 3.12:
uv resolves vLLM offline among exactly the pinned files, with every marker evaluated
for 3.12 on manylinux_2_28 (host pip would evaluate them for 3.14 and the install runs
with --no-deps)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import buildroot_support
import pytest
from buildroot_support import REPO
from support import missing
from support.host_python import build_host_python
from support.image_python import BuildError
from support.wheel_stubs import write_stub

pytestmark = pytest.mark.buildroot

VLLM = REPO / "package" / "vllm"
# What the pins held before they were resolved for 3.12: vLLM 0.10.2 needs setuptools<80
# on Python > 3.11, which a resolution on 3.11 did not see.
OLD_SETUPTOOLS = (
    "https://files.pythonhosted.org/packages/ef/55/6dc6d6bb953bdfc52519a0059592c52b6e3b8ad5"
    "1cf8256dffceb55b0610/setuptools-84.2.1-py3-none-any.whl"
)
VARS = ("VLLM_BUILD_CMDS", "VLLM_INSTALL_TARGET_CMDS", "VLLM_DIR", "VLLM_DL_DIR",
        "VLLM_INSTALL_DIR", "VLLM_SITE_PACKAGES", "HOST_DIR", "TARGET_DIR",
        "STRIP_FIND_CMD", "VLLM_CHECK_LDCONFIG")  # fmt: skip


def wheel_urls() -> list[str]:
    lines = (VLLM / "vllm-wheels.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def pins(urls: list[str]) -> dict[str, str]:
    """distribution (normalised) -> version, from the wheel file names."""
    names = (url.rsplit("/", 1)[1].split("-")[:2] for url in urls)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in names}


def printvars(output, dl_dir: Path) -> dict[str, str]:
    return output.printvars(VARS, f"BR2_DL_DIR={dl_dir}")


def run_recipe(text: str, cwd: Path) -> None:
    proc = buildroot_support.run_recipe(text, cwd)
    assert proc.returncode == 0, f"{proc.args[-1][:300]}\n{proc.stdout}{proc.stderr}"


def uv_resolve(urls: list[str], wheels: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """uv, offline: vLLM among exactly these files, for the runtime's Python."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        missing("uv is not installed (pip install -r requirements-dev.txt)")
    sys.path.insert(0, str(VLLM))
    try:
        import importlib

        update_pins = importlib.import_module("update-pins")
    finally:
        sys.path.remove(str(VLLM))
    constraints = tmp_path / "pins.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins(urls).items()))
    requirement = tmp_path / "vllm.in"
    requirement.write_text(f"vllm=={pins(urls)['vllm']}\n")
    return subprocess.run(
        [uv, "pip", "compile", "--no-config", "--no-cache", "--offline", "--no-index",
         "--find-links", wheels, "--python-version", update_pins.PYTHON_VERSION,
         "--python-platform", update_pins.PLATFORM, "-c", constraints, requirement],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("stubs")
    try:
        for url in wheel_urls():
            write_stub(url, directory)
    except OSError as error:
        missing(f"PyPI's wheel metadata could not be fetched: {error}")
    return directory


@pytest.fixture(scope="module")
def installed(variant, buildroot, stubs, tmp_path_factory) -> dict[str, str]:
    """The vLLM defconfig's output after vllm.mk's build and install commands ran."""
    try:
        host = build_host_python(buildroot)
    except BuildError as error:
        missing(f"Buildroot's host Python: {error}")
    output = variant("VLLM")
    dl_dir = tmp_path_factory.mktemp("dl")
    values = printvars(output, dl_dir)
    build, download = Path(values["VLLM_DIR"]), Path(values["VLLM_DL_DIR"])
    download.mkdir(parents=True)
    for wheel in stubs.iterdir():
        shutil.copy(wheel, download)
    # The extracted runtime (python-build-standalone's install_only layout), and what
    # Buildroot leaves beside it.
    shutil.rmtree(build, ignore_errors=True)
    for path in ("bin/python3.12", "lib/python3.12/LICENSE.txt", "share/man/man1/python3.1"):
        (build / path).parent.mkdir(parents=True, exist_ok=True)
        (build / path).write_text("runtime\n")
    for stamp in (".stamp_extracted", ".stamp_built", ".files-list.txt"):
        (build / stamp).write_text("")
    host.install_wrapper(Path(values["HOST_DIR"]), [output.dir, dl_dir, REPO])
    run_recipe(values["VLLM_BUILD_CMDS"], build)
    run_recipe(values["VLLM_INSTALL_TARGET_CMDS"], build)
    return values


def test_the_install_puts_every_pinned_wheel_in_the_runtime(installed):
    site = Path(installed["TARGET_DIR"] + installed["VLLM_SITE_PACKAGES"])
    found = {
        re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower(): dist.version
        for dist in distributions(path=[str(site)])
    }
    assert found == pins(wheel_urls())


def test_the_runtime_tree_holds_no_buildroot_bookkeeping(installed):
    tree = Path(installed["TARGET_DIR"] + installed["VLLM_INSTALL_DIR"])
    assert sorted(p.name for p in tree.iterdir()) == ["bin", "lib", "share"]
    leftovers = [p for p in tree.rglob(".*") if p.name.startswith((".stamp_", ".files-list"))]
    assert leftovers == []
    assert (tree / "lib/python3.12/LICENSE.txt").is_file()


def test_the_install_keeps_pip_in_the_build_directory(installed):
    command = installed["VLLM_INSTALL_TARGET_CMDS"]
    assert f"TMPDIR={installed['VLLM_DIR']}/tmp " in command
    assert "--isolated --no-deps --no-index" in command
    assert (Path(installed["VLLM_DIR"]) / "tmp").is_dir()


def test_the_service_files_are_rendered_and_installed(installed):
    target = Path(installed["TARGET_DIR"])
    assert "VLLM_MODEL=" in (target / "etc/default/vllm").read_text()
    assert (target / "etc/vllm/chat-template.jinja").is_file()
    assert (target / "usr/bin/vllm").stat().st_mode & 0o111


def test_the_pins_resolve_for_the_runtime_python(stubs, tmp_path):
    proc = uv_resolve(wheel_urls(), stubs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    resolved = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", proc.stdout, re.M))
    assert {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in resolved.items()} == pins(
        wheel_urls()
    ), "the pins hold a wheel vLLM does not need, or miss one it does"


def test_a_pin_set_resolved_on_another_python_fails(stubs, tmp_path):
    """The pins as they were, resolved by pip on 3.11: vLLM's setuptools<80 on > 3.11."""
    wheels = tmp_path / "wheels"
    shutil.copytree(stubs, wheels)
    for old in wheels.glob("setuptools-*.whl"):
        old.unlink()
    write_stub(OLD_SETUPTOOLS, wheels)
    urls = [url for url in wheel_urls() if "/setuptools-" not in url] + [OLD_SETUPTOOLS]
    proc = uv_resolve(urls, wheels, tmp_path)
    assert proc.returncode != 0
    assert "setuptools>=77.0.3,<80" in proc.stderr


def test_target_finalize_strips_nothing_of_the_vllm_tree(installed):
    """Buildroot's own strip selection over the target: PyTorch's and NVIDIA's libraries
    are left as shipped, everything else is still stripped."""
    target = Path(installed["TARGET_DIR"])
    ours = target / installed["VLLM_INSTALL_DIR"].lstrip("/") / "lib/libpython3.12.so.1.0"
    other = target / "usr/lib/libother.so.1"
    for library in (ours, other):
        library.parent.mkdir(parents=True, exist_ok=True)
        library.write_bytes(b"\x7fELF")
    command = installed["STRIP_FIND_CMD"]
    proc = subprocess.run(["sh", "-c", command], capture_output=True, timeout=60, check=True)
    found = {Path(p.decode()) for p in proc.stdout.split(b"\0") if p}
    assert other in found
    assert not [p for p in found if p.is_relative_to(ours.parents[1])]


def test_target_finalize_stops_without_ldconfig(installed, variant, tmp_path):
    """Triton runs /sbin/ldconfig: the image has it (glibc's utilities are selected), and
    a target without it stops the build with the reason."""
    assert variant("VLLM").config()["BR2_PACKAGE_GLIBC_UTILS"] == "y"
    hook = installed["VLLM_CHECK_LDCONFIG"].strip()
    ldconfig = Path(installed["TARGET_DIR"]) / "sbin/ldconfig"
    ldconfig.unlink(missing_ok=True)
    proc = subprocess.run(["sh", "-c", hook], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "Triton needs /sbin/ldconfig" in proc.stderr
    ldconfig.parent.mkdir(parents=True, exist_ok=True)
    ldconfig.write_text("#!/bin/sh\n")
    ldconfig.chmod(0o755)
    run_recipe(hook, tmp_path)

"""The hashes of the downloads that cannot be fetched here (Ollama, the kernel, vLLM's
wheels), checked against what can be had offline: Buildroot's own kernel hashes, the
packages' own pins, and PyPI's sha256 of each pinned wheel (through pip, which reaches
PyPI without downloading the wheels)."""

import json
import re
import subprocess
import sys

import pytest
from buildroot_support import EXTERNAL, REPO, buildroot_dir, sha256_lines
from packaging.utils import parse_wheel_filename
from support import missing

KERNEL_HASHES = [
    REPO / "board/cube/patches/linux/linux.hash",
    REPO / "board/cube/patches/linux-headers/linux-headers.hash",
]
VLLM = REPO / "package/vllm"


def defconfig_values(symbol: str) -> set[str]:
    values = set()
    for defconfig in (EXTERNAL / "configs").glob("*_defconfig"):
        values.update(re.findall(rf'^{symbol}="?([^"\n]*)"?$', defconfig.read_text(), re.M))
    return values


@pytest.mark.buildroot
@pytest.mark.parametrize("hash_file", KERNEL_HASHES, ids=lambda p: p.parent.name)
def test_kernel_hashes_are_buildroots_own(hash_file):
    """Buildroot's maintainers copy kernel.org's signed sha256sums into their linux.hash:
    each line pinned here must be one of theirs, for the version the defconfigs build."""
    buildroot = buildroot_dir()
    theirs_file = buildroot / "linux/before-6.17/linux.hash"
    if not theirs_file.is_file():
        missing(f"no Buildroot at {buildroot} (make buildroot unpacks it)")
    ours, theirs = sha256_lines(hash_file), sha256_lines(theirs_file)
    [version] = defconfig_values("BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE")
    assert f"linux-{version}.tar.xz" in ours, sorted(ours)
    assert ours, hash_file
    for name, digest in ours.items():
        assert theirs.get(name) == digest, f"{hash_file.name}: {name} is not Buildroot's"


def test_ollama_hash_lines_are_the_packages_downloads():
    """One line for each release asset ollama.mk downloads (both architectures), for the
    pinned version's site, and none for anything else."""
    mk = (REPO / "package/ollama/ollama.mk").read_text()
    sources = set(re.findall(r"^OLLAMA_SOURCE = (\S+)$", mk, re.M))
    assert sources == {"ollama-linux-amd64.tgz", "ollama-linux-arm64.tgz"}
    assert re.search(r"^OLLAMA_SITE = .*/download/v\$\(OLLAMA_VERSION\)$", mk, re.M)
    lines = [
        line.split()
        for line in (REPO / "package/ollama/ollama.hash").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert sorted(name for _, _, name in lines) == sorted(sources)
    for kind, digest, _ in lines:
        assert kind == "sha256" and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert len({digest for _, digest, _ in lines}) == len(lines)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vllm_wheel_hashes_are_pypis(tmp_path):
    """Every pinned wheel's sha256 is the one PyPI publishes for that file: pip, asked for
    each pinned name==version for the runtime's platform, reports the file it would take
    and its hash (about a minute; nothing is downloaded but the index pages)."""
    wheels = [
        line.rsplit("/", 1)[1]
        for line in (VLLM / "vllm-wheels.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    pinned = sha256_lines(VLLM / "vllm.hash")
    requirements = tmp_path / "pins.txt"
    requirements.write_text(
        "".join(f"{name}=={version}\n" for name, version, *_ in map(parse_wheel_filename, wheels))
    )
    report = tmp_path / "report.json"
    mk = (VLLM / "vllm.mk").read_text()
    python = re.search(r"^VLLM_PYTHON_VERSION = (\S+)$", mk, re.M)[1]
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 29)]
    platforms += ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "--isolated", "install", "--quiet", "--dry-run"]
    cmd += ["--ignore-installed", "--no-deps", "--only-binary=:all:", "--report", str(report)]
    cmd += ["--target", str(tmp_path / "unused"), "--python-version", python]
    cmd += ["--implementation", "cp", "--abi", "cp" + python.replace(".", "")]
    for platform in platforms:
        cmd += ["--platform", platform]
    cmd += ["-r", str(requirements)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=800)
    if done.returncode != 0 and "NewConnectionError" in done.stderr + done.stdout:
        missing("PyPI is not reachable")
    assert done.returncode == 0, done.stderr[-2000:]
    published = {
        item["download_info"]["url"].rsplit("/", 1)[1]: item["download_info"]["archive_info"][
            "hashes"
        ]["sha256"]
        for item in json.loads(report.read_text())["install"]
    }
    assert set(published) == set(wheels), set(published) ^ set(wheels)
    assert {w: pinned[w] for w in wheels} == {w: published[w] for w in wheels}

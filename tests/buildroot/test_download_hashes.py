"""The hashes of the downloads that cannot be fetched here (Ollama, the kernel, vLLM's
wheels), checked against what can be had offline: Buildroot's own kernel hashes, the
packages' own pins, and PyPI's sha256 of each pinned wheel (through pip, which reaches
PyPI without downloading the wheels)."""

import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from buildroot_support import EXTERNAL, REPO, buildroot_dir, sha256_lines
from packaging.utils import canonicalize_name, parse_wheel_filename
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
    """One line for each release asset ollama.mk downloads (both architectures) and for the
    license it fetches beside them, for the pinned version, and none for anything else."""
    mk = (REPO / "package/ollama/ollama.mk").read_text()
    sources = set(re.findall(r"^OLLAMA_SOURCE = (\S+)$", mk, re.M))
    assert sources == {"ollama-linux-amd64.tgz", "ollama-linux-arm64.tgz"}
    # the license file upstream's tarball lacks, fetched beside it (OLLAMA_EXTRA_DOWNLOADS)
    extra = set(re.findall(r"^\s+https://\S+/v\$\(OLLAMA_VERSION\)/(\S+)$", mk, re.M))
    assert extra == {"LICENSE"}, extra
    assert re.search(r"^OLLAMA_SITE = .*/download/v\$\(OLLAMA_VERSION\)$", mk, re.M)
    lines = [
        line.split()
        for line in (REPO / "package/ollama/ollama.hash").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert sorted(name for _, _, name in lines) == sorted(sources | extra)
    for kind, digest, _ in lines:
        assert kind == "sha256" and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert len({digest for _, digest, _ in lines}) == len(lines)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_vllm_wheel_hashes_are_pypis():
    """Every pinned wheel is a file PyPI publishes, at the URL PyPI gives for it, with the
    sha256 PyPI gives for it: read from each project's page of PyPI's simple API (JSON, PEP
    691), for the exact file pinned (nothing is downloaded but the index pages)."""
    urls = [
        line
        for line in (VLLM / "vllm-wheels.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    pinned = sha256_lines(VLLM / "vllm.hash")
    projects = {canonicalize_name(parse_wheel_filename(u.rsplit("/", 1)[1])[0]) for u in urls}

    def files(project: str) -> dict[str, tuple[str, str]]:
        request = urllib.request.Request(
            f"https://pypi.org/simple/{project}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                page = json.load(answer)
        except urllib.error.URLError as error:
            missing(f"PyPI is not reachable: {error}")
        return {f["filename"]: (f["url"], f["hashes"]["sha256"]) for f in page["files"]}

    with ThreadPoolExecutor(8) as pool:
        published = {}
        for page in pool.map(files, sorted(projects)):
            published.update(page)
    for url in urls:
        wheel = url.rsplit("/", 1)[1]
        assert wheel in published, f"{wheel}: not a file PyPI publishes"
        assert published[wheel][0].split("#")[0] == url, f"{wheel}: not PyPI's URL"
        assert pinned.get(wheel) == published[wheel][1], f"{wheel}: not PyPI's sha256"

"""What `make legal-info` takes from the tree's packages: licenses, license files with
their hashes, and whether sources may be republished.

legal-info itself needs host-tar, which cannot be downloaded here, so the steps it runs
are run one by one: Buildroot's own `<pkg>-rsync` for the packages built from the tree,
and its `support/download/check-hash` on each license file, as legal-info calls it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from buildroot_support import REPO, sha256_lines

pytestmark = pytest.mark.buildroot

PACKAGES = sorted(p.name for p in (REPO / "package").iterdir() if p.is_dir())
LOCAL = ("cube-agent", "cube-models", "cube-llama-server", "cube-state")
# Sources that may not be republished: binaries with NVIDIA's CUDA libraries.
NOT_REDISTRIBUTED = {"ollama", "vllm"}


def var(package: str) -> str:
    return package.upper().replace("-", "_")


@pytest.fixture(scope="module")
def legal(variant) -> dict[str, str]:
    output = variant("VLLM")
    names = [f"{var(p)}_{what}" for p in PACKAGES for what in ("LICENSE", "LICENSE_FILES")]
    names += [f"{var(p)}_REDISTRIBUTE" for p in PACKAGES]
    proc = output.make("printvars", f"VARS={' '.join(names)}")
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_states_its_licenses_and_their_files(legal, package):
    license = legal.get(f"{var(package)}_LICENSE", "")
    assert license.strip(), f"{package}: no _LICENSE"
    assert not re.search(r"\b(others|unknown)\b", license, re.I), license
    assert legal.get(f"{var(package)}_LICENSE_FILES", "").strip(), f"{package}: no files"


@pytest.mark.parametrize("package", PACKAGES)
def test_sources_are_republished_only_where_allowed(legal, package):
    redistribute = legal.get(f"{var(package)}_REDISTRIBUTE", "YES")
    assert redistribute == ("NO" if package in NOT_REDISTRIBUTED else "YES")


def test_the_repository_is_apache_2_0_everywhere_it_says_so():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    # The local packages' sources.
    for copy in ("agent/LICENSE", "generator/LICENSE", "package/cube-state/LICENSE"):
        assert (REPO / copy).read_text() == text, copy


@pytest.fixture
def agent_build_dir():
    """A leftover of a local pip build in agent/, as the tests themselves leave one."""
    build = REPO / "agent" / "build"
    created = not build.exists()
    (build / "lib").mkdir(parents=True, exist_ok=True)
    marker = build / "lib" / "stale.py"
    marker.write_text("stale = True\n")
    try:
        yield build
    finally:
        marker.unlink()
        if created:
            subprocess.run(["rm", "-rf", str(build)], check=True)


def test_local_packages_sync_their_source_and_license(variant, buildroot, agent_build_dir):
    output = variant("LLAMA_CPP")
    proc = output.make(*(f"{p}-rsync" for p in LOCAL), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dirs = {p: next((output.dir / "build").glob(f"{p}*/.stamp_rsynced")).parent for p in LOCAL}
    assert not (dirs["cube-agent"] / "build").exists(), "agent/build/ was synced"
    assert not list(dirs["cube-agent"].rglob("__pycache__"))
    assert (dirs["cube-agent"] / "pyproject.toml").is_file()
    for package, directory in dirs.items():
        hash_file = REPO / "package" / package / f"{package}.hash"
        assert "LICENSE" in sha256_lines(hash_file)
        check = subprocess.run(
            [buildroot / "support/download/check-hash", directory / "LICENSE", "LICENSE",
             hash_file], capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def test_license_files_of_downloaded_packages_have_hashes():
    """Every license file a package names is in its .hash file, or the .hash file says why
    not (legal-info accepts a missing hash, so the reason must be written down)."""
    for package in PACKAGES:
        hash_file = REPO / "package" / package / f"{package}.hash"
        mk = (REPO / "package" / package / f"{package}.mk").read_text().replace("\\\n", " ")
        found = re.search(rf"^{var(package)}_LICENSE_FILES = (.*)$", mk, re.M)
        assert found, package
        hashes = sha256_lines(hash_file)
        text = hash_file.read_text()
        for name in found[1].split():
            name = Path(name).name if "$(" in name else name
            assert any(f.endswith(name) for f in hashes) or f"{name}: no hash" in text, (
                f"{package}: {name} has no hash and no reason"
            )

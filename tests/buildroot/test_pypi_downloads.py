"""The tree's packages that come from PyPI, downloaded by Buildroot itself (`make
<pkg>-source`, which refuses a file whose sha256 is not in the .hash file), and the
license files their .hash files list, found with those hashes in the downloads.

PyPI is the one download site reachable here; the files are kept in
~/.cache/cube-hal/dl (BR2_DL_DIR), so only the first run downloads (about 1.5 MB)."""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from pathlib import Path

import pytest
from buildroot_support import REPO, sha256_lines

pytestmark = pytest.mark.buildroot

DL_DIR = Path.home() / ".cache/cube-hal/dl"
PYPI_PACKAGES = sorted(
    mk.parent.name
    for mk in REPO.glob("package/python-*/*.mk")
    if "files.pythonhosted.org" in mk.read_text()
)


@pytest.fixture(scope="module")
def downloaded(variant) -> dict[str, str]:
    """Every PyPI package of the tree downloaded by Buildroot (one make, for speed), with
    the guardrails stage on so that all are selected; -> printvars of their files."""
    output = variant("GUARDRAILS")
    sources = [f"{package}-source" for package in PYPI_PACKAGES]
    proc = output.make(f"BR2_DL_DIR={DL_DIR}", *sources, timeout=900)
    assert proc.returncode == 0, f"make {' '.join(sources)}:\n{proc.stdout}{proc.stderr}"
    names = [f"{var(p)}_{what}" for p in PYPI_PACKAGES for what in ("SOURCE", "LICENSE_FILES")]
    proc = output.make("printvars", f"VARS={' '.join(names)}")
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def var(package: str) -> str:
    return package.upper().replace("-", "_")


def member(archive: Path, name: str) -> bytes:
    """A file of the download as the package's extract step lays it out: a wheel
    unzipped as is, an sdist without its top directory."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as whl:
            return whl.read(name)
    with tarfile.open(archive) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        return sdist.extractfile(f"{top}/{name}").read()


def test_the_tree_has_its_pypi_packages():
    assert {"python-nemoguardrails", "python-dataclasses-json", "python-typer"} <= set(
        PYPI_PACKAGES
    )


@pytest.mark.parametrize("package", PYPI_PACKAGES)
def test_buildroot_downloads_it_and_the_license_hashes_match(package, downloaded):
    archive = DL_DIR / package / downloaded[f"{var(package)}_SOURCE"]
    assert archive.is_file()
    license_files = downloaded[f"{var(package)}_LICENSE_FILES"].split()
    assert license_files, f"{package} names no license file"
    hashes = sha256_lines(REPO / "package" / package / f"{package}.hash")
    for name in license_files:
        assert name in hashes, f"{package}: {name} has no sha256 line"
        assert hashlib.sha256(member(archive, name)).hexdigest() == hashes[name], name

"""`make sbom`: Buildroot's utils/generate-cyclonedx over show-info, through the top-level
Makefile, for a configured output directory.

generate-cyclonedx needs CycloneDX's SPDX license list, which it downloads from GitHub
once into BR2_DL_DIR/cyclonedx/. GitHub is not reachable here: the same list, as
CycloneDX's own Python library ships it, is read out of that library's wheel on PyPI
(range requests, no full download) and cached in ~/.cache/cube-hal/dl/cyclonedx/."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from buildroot_support import REPO
from support import missing
from support.wheel_stubs import RangeFile

pytestmark = pytest.mark.buildroot

DL_DIR = Path.home() / ".cache/cube-hal/dl"
SPDX_LIST = (
    "https://files.pythonhosted.org/packages/cf/f0/b2cb999244f2f4194df63ecff6939228178fa63a33"
    "be809c412684ca8db7/cyclonedx_python_lib-11.12.0-py3-none-any.whl",
    "cyclonedx/schema/_res/spdx.SNAPSHOT.schema.json",
)


@pytest.fixture(scope="module")
def sbom(variant, tmp_path_factory) -> dict:
    schema = DL_DIR / "cyclonedx" / "spdx-1.6.schema.json"
    if not schema.is_file():
        url, member = SPDX_LIST
        try:
            with zipfile.ZipFile(io.BufferedReader(RangeFile(url), 1 << 16)) as wheel:
                data = wheel.read(member)
        except OSError as error:
            missing(f"CycloneDX's SPDX list could not be fetched from PyPI: {error}")
        schema.parent.mkdir(parents=True, exist_ok=True)
        schema.write_bytes(data)
    output = variant("GUARDRAILS")
    proc = subprocess.run(
        ["make", "-s", "sbom", f"O={output.dir}", f"BUILDROOT_DIR={output.buildroot}"],
        cwd=REPO, env={**os.environ, "BR2_DL_DIR": str(DL_DIR)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((output.dir / "sbom.cdx.json").read_text())


def test_the_sbom_is_cyclonedx_for_the_project(sbom):
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    assert sbom["metadata"]["component"]["name"] == "cube-hal"


def test_every_package_of_the_image_is_a_component_with_its_license(sbom):
    components = {c["name"]: c for c in sbom["components"]}
    for name, version, license in (
        ("cube-agent", "0.1.0", "Apache-2.0"),
        ("ollama", "0.12.3", "MIT"),
        ("python-nemoguardrails", "0.24.1", "Apache-2.0"),
        ("python-prometheus-client", "0.26.0", "Apache-2.0"),
    ):
        component = components[name]
        assert component["version"] == version
        ids = [entry["license"].get("id") for entry in component["licenses"]]
        assert license in ids, (name, component["licenses"])
    assert "python3" in components and "linux" in components

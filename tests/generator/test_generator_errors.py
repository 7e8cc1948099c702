"""A .config the generator does not accept: exit 2, one line naming the symbol, no files."""

import subprocess
import sys

import pytest
from render_support import CUBE_CONFIG

AGENT_ON_OLLAMA = "BR2_INIT_SYSTEMD=y\nBR2_PACKAGE_OLLAMA=y\nBR2_PACKAGE_CUBE_AGENT=y\n"
VLLM = "BR2_INIT_SYSTEMD=y\nBR2_PACKAGE_VLLM=y\n"
CUSTOM = "BR2_PACKAGE_CUBE_AGENT=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_CUSTOM=y\n"

CASES = {
    # name: (config, symbol named, words in the message)
    "agent port 0": (
        AGENT_ON_OLLAMA + "BR2_PACKAGE_CUBE_AGENT_PORT=0\n",
        "BR2_PACKAGE_CUBE_AGENT_PORT",
        "between 1 and 65535",
    ),
    "agent port too big": (
        AGENT_ON_OLLAMA + "BR2_PACKAGE_CUBE_AGENT_PORT=70000\n",
        "BR2_PACKAGE_CUBE_AGENT_PORT",
        "between 1 and 65535",
    ),
    "agent port not a number": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_AGENT_PORT="http"\n',
        "BR2_PACKAGE_CUBE_AGENT_PORT",
        "not an integer",
    ),
    "origin without a scheme": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_AGENT_ORIGINS="chat.example.com"\n',
        "BR2_PACKAGE_CUBE_AGENT_ORIGINS",
        "must contain '*' or begin with http://",
    ),
    "origin with two wildcards": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_AGENT_ORIGINS="https://*.a.*"\n',
        "BR2_PACKAGE_CUBE_AGENT_ORIGINS",
        "only one *",
    ),
    "vllm port": (VLLM + "BR2_PACKAGE_VLLM_PORT=65536\n", "BR2_PACKAGE_VLLM_PORT", "65535"),
    "llama-server port": (
        "BR2_PACKAGE_CUBE_LLAMA_SERVER=y\nBR2_PACKAGE_CUBE_LLAMA_SERVER_PORT=-1\n",
        "BR2_PACKAGE_CUBE_LLAMA_SERVER_PORT",
        "between 1 and 65535",
    ),
    "two backends": (
        AGENT_ON_OLLAMA
        + "BR2_PACKAGE_VLLM=y\n"
        + "BR2_PACKAGE_CUBE_AGENT_BACKEND_OLLAMA=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM=y\n",
        "BR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM",
        "exactly one backend",
    ),
    "vllm backend without vllm": (
        AGENT_ON_OLLAMA + "BR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM=y\n",
        "BR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM",
        "needs BR2_PACKAGE_VLLM=y",
    ),
    "llama.cpp backend without llama-server": (
        AGENT_ON_OLLAMA + "BR2_PACKAGE_CUBE_AGENT_BACKEND_LLAMA_CPP=y\n",
        "BR2_PACKAGE_CUBE_AGENT_BACKEND_LLAMA_CPP",
        "needs BR2_PACKAGE_CUBE_LLAMA_SERVER=y",
    ),
    "default ollama backend without ollama": (
        "BR2_PACKAGE_CUBE_AGENT=y\n",
        "BR2_PACKAGE_CUBE_AGENT_BACKEND_OLLAMA",
        "needs BR2_PACKAGE_OLLAMA=y",
    ),
    "gpu util garbage": (
        VLLM + 'BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION="lots"\n',
        "BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION",
        "greater than 0 and at most 1",
    ),
    "gpu util zero": (
        VLLM + 'BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION="0"\n',
        "BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION",
        "greater than 0",
    ),
    "gpu util above one": (
        VLLM + 'BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION="1.5"\n',
        "BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION",
        "at most 1",
    ),
    "gpu util nan": (
        VLLM + 'BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION="nan"\n',
        "BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION",
        "at most 1",
    ),
    "max model len": (
        VLLM + "BR2_PACKAGE_VLLM_MAX_MODEL_LEN=0\n",
        "BR2_PACKAGE_VLLM_MAX_MODEL_LEN",
        "at least 1",
    ),
    "vllm model": (
        VLLM + 'BR2_PACKAGE_VLLM_MODEL="not a model"\n',
        "BR2_PACKAGE_VLLM_MODEL",
        "Hugging Face id",
    ),
    "unknown log level": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_AGENT_LOG_LEVEL="verbose"\n',
        "BR2_PACKAGE_CUBE_AGENT_LOG_LEVEL",
        "debug, info, warning, error",
    ),
    "agent host": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_AGENT_HOST="every where"\n',
        "BR2_PACKAGE_CUBE_AGENT_HOST",
        "not an IP address or host name",
    ),
    "relative key file": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_AGENT_KEY_FILE="keys.json"\n',
        "BR2_PACKAGE_CUBE_AGENT_KEY_FILE",
        "absolute path",
    ),
    "custom without url": (CUSTOM, "BR2_PACKAGE_CUBE_AGENT_TARGET_URL", "needs a URL"),
    "custom url scheme": (
        CUSTOM + 'BR2_PACKAGE_CUBE_AGENT_TARGET_URL="ftp://engine:21"\n',
        "BR2_PACKAGE_CUBE_AGENT_TARGET_URL",
        "http or https",
    ),
    "custom url port": (
        CUSTOM + 'BR2_PACKAGE_CUBE_AGENT_TARGET_URL="http://engine:99999"\n',
        "BR2_PACKAGE_CUBE_AGENT_TARGET_URL",
        "bad port",
    ),
    "custom url without host": (
        CUSTOM + 'BR2_PACKAGE_CUBE_AGENT_TARGET_URL="http://"\n',
        "BR2_PACKAGE_CUBE_AGENT_TARGET_URL",
        "not a URL",
    ),
    "ollama host scheme": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_OLLAMA_HOST="ftp://0.0.0.0:11434"\n',
        "BR2_PACKAGE_OLLAMA_HOST",
        "http or https",
    ),
    "ollama host port": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_OLLAMA_HOST="0.0.0.0:0"\n',
        "BR2_PACKAGE_OLLAMA_HOST",
        "between 1 and 65535",
    ),
    "relative models dir": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_OLLAMA_MODELS_DIR="models"\n',
        "BR2_PACKAGE_OLLAMA_MODELS_DIR",
        "absolute path",
    ),
    "model name": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_MODELS_LIST="llama3.2:3b -rm:latest"\n',
        "BR2_PACKAGE_CUBE_MODELS_LIST",
        "'-rm:latest'",
    ),
    "model name with two tags": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_MODELS_LIST="qwen:0.5b:q4"\n',
        "BR2_PACKAGE_CUBE_MODELS_LIST",
        "not an Ollama model name",
    ),
    "tab in the model list": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_MODELS_LIST="llama3.2:3b\tqwen:0.5b"\n',
        "BR2_PACKAGE_CUBE_MODELS_LIST",
        "control characters",
    ),
    "attempts zero": (
        AGENT_ON_OLLAMA + "BR2_PACKAGE_CUBE_MODELS_ATTEMPTS=0\n",
        "BR2_PACKAGE_CUBE_MODELS_ATTEMPTS",
        "at least 1",
    ),
    "interval not a number": (
        AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_MODELS_INTERVAL="5s"\n',
        "BR2_PACKAGE_CUBE_MODELS_INTERVAL",
        "not an integer",
    ),
    "models without ollama": (
        "BR2_PACKAGE_CUBE_MODELS=y\n",
        "BR2_PACKAGE_CUBE_MODELS",
        "needs BR2_PACKAGE_OLLAMA",
    ),
    "openrc": (
        "BR2_INIT_OPENRC=y\n" + AGENT_ON_OLLAMA.replace("BR2_INIT_SYSTEMD=y\n", ""),
        "BR2_INIT_OPENRC",
        "BR2_INIT_SYSTEMD or BR2_INIT_BUSYBOX",
    ),
    "no init": ("BR2_INIT_NONE=y\n", "BR2_INIT_NONE", "BR2_INIT_SYSTEMD or BR2_INIT_BUSYBOX"),
    "tristate value": ("BR2_PACKAGE_OLLAMA=m\n", "BR2_PACKAGE_OLLAMA", "expected y or n"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_config_is_refused_naming_the_symbol(render, case):
    config, symbol, words = CASES[case]
    result = render(config)
    assert result.status == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"cube-config: {symbol}: "), lines[0]
    assert words in lines[0]
    assert not result.out.exists()  # nothing written


def test_existing_output_is_left_untouched(render, tmp_path):
    good = render(AGENT_ON_OLLAMA)
    assert good.status == 0, good.stderr
    before = {p: p.read_bytes() for p in good.out.rglob("*") if p.is_file()}
    config = tmp_path / "bad"
    config.write_text(AGENT_ON_OLLAMA + "BR2_PACKAGE_CUBE_AGENT_PORT=0\n")
    proc = subprocess.run(
        [sys.executable, str(CUBE_CONFIG), "--config", str(config), "--out", str(good.out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert {p: p.read_bytes() for p in good.out.rglob("*") if p.is_file()} == before


def test_line_that_is_not_kconfig_names_file_and_line(render):
    result = render("BR2_INIT_SYSTEMD=y\nBR2_PACKAGE_OLLAMA y\n")
    assert result.status == 2
    assert result.stderr.startswith("cube-config: ")
    assert ":2: not a Kconfig line: 'BR2_PACKAGE_OLLAMA y'" in result.stderr
    assert not result.out.exists()


def test_missing_config_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(CUBE_CONFIG), "--config", str(tmp_path / "nope"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"cube-config: {tmp_path / 'nope'}: cannot read")
    assert len(proc.stderr.splitlines()) == 1


def test_kconfig_string_escapes_are_undone(render):
    # Buildroot writes a '"' as \" and a '\' as \\ inside the quotes.
    result = render(AGENT_ON_OLLAMA + 'BR2_PACKAGE_CUBE_AGENT_LOG_LEVEL="de\\"bug"\n')
    assert result.status == 2
    assert "got 'de\"bug'" in result.stderr

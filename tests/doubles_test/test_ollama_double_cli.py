"""The Ollama double's command line, its model store and its fault injection."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import ollama
import pytest
from support import Process, free_port
from support.engines import OLLAMA_DOUBLE, start_ollama_double


def cli(engine_or_host, *args, models_dir=None):
    host = getattr(engine_or_host, "hostport", engine_or_host)
    return subprocess.run(
        [sys.executable, OLLAMA_DOUBLE, *args],
        env={"OLLAMA_HOST": host, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_pull_list_rm(ollama_double):
    pulled = cli(ollama_double, "pull", "starcoder2:3b")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stderr.splitlines()[-1] == "success"

    listed = cli(ollama_double, "list")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert set(by_name) == {"llama3.2:3b", "nomic-embed-text:v1.5", "starcoder2:3b"}
    assert by_name["llama3.2:3b"][2:4] == ["2.0", "GB"]
    assert len(by_name["llama3.2:3b"][1]) == 12

    removed = cli(ollama_double, "rm", "starcoder2:3b")
    assert removed.returncode == 0
    assert "starcoder2:3b" not in cli(ollama_double, "ls").stdout

    again = cli(ollama_double, "rm", "starcoder2:3b")
    assert again.returncode == 1
    assert again.stderr.strip() == "Error: model 'starcoder2:3b' not found"


def test_run_prints_the_answer(ollama_double):
    ran = cli(ollama_double, "run", "llama3.2:3b", "hello", "there")
    assert ran.returncode == 0
    assert ran.stdout.strip() == "Echo: hello there"


def test_version_with_and_without_a_server(ollama_double):
    assert cli(ollama_double, "--version").stdout.strip() == "ollama version is 0.12.3"
    alone = cli(f"127.0.0.1:{free_port()}", "--version")
    assert alone.returncode == 0
    assert "could not connect to a running Ollama instance" in alone.stderr


@pytest.mark.parametrize("command", [["list"], ["pull", "llama3.2:3b"], ["rm", "x"]])
def test_client_commands_without_a_server_say_so(command):
    done = cli(f"127.0.0.1:{free_port()}", *command)
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: could not connect to ollama app, is it running?"


def test_pulled_models_survive_a_restart(tmp_path):
    first = start_ollama_double(tmp_path, pull=("llama3.2:3b",))
    first.stop()
    second = start_ollama_double(tmp_path)
    try:
        names = [m.model for m in ollama.Client(host=second.url).list().models]
        assert names == ["llama3.2:3b"]
        assert (tmp_path / "manifests/registry.ollama.ai/library/llama3.2/3b").is_file()
    finally:
        second.stop()


@pytest.mark.parametrize("form", [":{port}", "http://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_ollama_host_forms(tmp_path, form):
    port = free_port()
    host = form.format(port=port)
    with Process(
        [sys.executable, OLLAMA_DOUBLE, "serve"],
        env={"OLLAMA_HOST": host, "OLLAMA_MODELS": str(tmp_path)},
    ) as server:
        server.wait_for_url(f"http://127.0.0.1:{port}/api/version", timeout=15)
        listed = cli(host, "list")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split() == ["NAME", "ID", "SIZE", "MODIFIED"]


def test_port_in_use_is_a_clear_error(ollama_double, tmp_path):
    done = subprocess.run(
        [sys.executable, OLLAMA_DOUBLE, "serve"],
        env={"OLLAMA_HOST": ollama_double.hostport, "OLLAMA_MODELS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert done.returncode == 1
    assert "address already in use" in done.stderr


# -- fault injection


def chat_body(text="one two three four"):
    return {"model": "llama3.2:3b", "messages": [{"role": "user", "content": text}]}


def test_ready_after_refuses_connections_until_then(tmp_path):
    port = free_port()
    started = time.monotonic()
    with Process(
        [sys.executable, OLLAMA_DOUBLE, "serve", "--ready-after", "1.5"],
        env={"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(tmp_path)},
    ) as server:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/api/version")
        server.wait_for_url(f"http://127.0.0.1:{port}/api/version", timeout=15)
        assert time.monotonic() - started >= 1.5


def test_fail_pulls_fails_the_first_pulls_only(tmp_path):
    engine = start_ollama_double(tmp_path, env={"OLLAMA_DOUBLE_FAIL_PULLS": "1"})
    try:
        failed = cli(engine, "pull", "llama3.2:3b")
        assert failed.returncode == 1
        assert failed.stderr.splitlines()[-1].startswith("Error: pull model manifest")
        assert cli(engine, "pull", "llama3.2:3b").returncode == 0
    finally:
        engine.stop()


def test_chunk_delay_slows_each_chunk(tmp_path):
    engine = start_ollama_double(tmp_path, "--chunk-delay", "0.2", pull=("llama3.2:3b",))
    try:
        started = time.monotonic()
        parts = list(ollama.Client(host=engine.url).chat(**chat_body("a b"), stream=True))
        assert len(parts) == 4
        assert time.monotonic() - started >= 0.8
    finally:
        engine.stop()


def test_cut_after_drops_the_stream_mid_way(tmp_path):
    engine = start_ollama_double(tmp_path, "--cut-after", "2", pull=("llama3.2:3b",))
    try:
        received = []
        with (
            pytest.raises(httpx.HTTPError),
            httpx.stream("POST", engine.url + "/api/chat", json=chat_body()) as r,
        ):
            received.extend(r.iter_lines())
        assert len(received) == 2
    finally:
        engine.stop()


def test_malformed_sends_broken_json(tmp_path):
    engine = start_ollama_double(tmp_path, "--malformed", pull=("llama3.2:3b",))
    try:
        with pytest.raises(ValueError):
            list(ollama.Client(host=engine.url).chat(**chat_body(), stream=True))
        with pytest.raises(ValueError):
            httpx.post(engine.url + "/api/chat", json={**chat_body(), "stream": False}).json()
    finally:
        engine.stop()


def test_hang_after_stalls_the_answer(tmp_path):
    engine = start_ollama_double(tmp_path, "--hang-after", "1", pull=("llama3.2:3b",))
    try:
        received = []
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.stream("POST", engine.url + "/api/chat", json=chat_body(), timeout=1) as r,
        ):
            received.extend(r.iter_lines())
        assert len(received) == 1
        # Only generation hangs: the server still answers everything else.
        assert httpx.get(engine.url + "/api/tags", timeout=5).status_code == 200
    finally:
        engine.stop()

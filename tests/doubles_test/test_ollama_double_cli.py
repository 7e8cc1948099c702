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

NO_SERVER = (
    "Error: ollama server not responding - could not connect to ollama server, "
    "run 'ollama serve' to start it"
)


def cli(engine_or_host, *args, stdin=""):
    """The CLI as a script runs it: stdin not a terminal (so `run` reads it), output captured."""
    host = getattr(engine_or_host, "hostport", engine_or_host)
    return subprocess.run(
        [sys.executable, OLLAMA_DOUBLE, *args],
        env={"OLLAMA_HOST": host, "PATH": "/usr/bin:/bin"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_pull_list_rm(ollama_double):
    pulled = cli(ollama_double, "pull", "starcoder2:3b")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == ""  # progress goes to stderr
    assert pulled.stderr.splitlines()[0] == "pulling manifest"
    assert pulled.stderr.splitlines()[-1] == "success"

    listed = cli(ollama_double, "list")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    # tablewriter as cmd.go sets it up: columns 4 spaces apart, each cell padded
    assert header.startswith("NAME" + " " * (len("nomic-embed-text:v1.5") - 4 + 4) + "ID")
    assert all(row.endswith("    ") for row in rows)
    by_name = {row.split()[0]: row.split() for row in rows}
    assert set(by_name) == {"llama3.2:3b", "nomic-embed-text:v1.5", "starcoder2:3b"}
    assert len(by_name["llama3.2:3b"][1]) == 12
    assert by_name["llama3.2:3b"][3] in ("KB", "B")
    assert " ".join(by_name["llama3.2:3b"][4:]) in ("Less than a second ago", "1 second ago") or (
        by_name["llama3.2:3b"][5:] == ["seconds", "ago"]
    )

    removed = cli(ollama_double, "rm", "starcoder2:3b")
    assert (removed.returncode, removed.stdout) == (0, "deleted 'starcoder2:3b'\n")
    assert "starcoder2:3b" not in cli(ollama_double, "ls").stdout

    again = cli(ollama_double, "rm", "starcoder2:3b")
    assert again.returncode == 1
    assert again.stderr.strip() == "Error: model 'starcoder2:3b' not found"


def test_list_takes_a_prefix(ollama_double):
    listed = cli(ollama_double, "list", "NOMIC")
    assert [row.split()[0] for row in listed.stdout.splitlines()[1:]] == ["nomic-embed-text:v1.5"]
    assert cli(ollama_double, "ls", "zzz").stdout.splitlines()[1:] == []


def test_pull_of_an_unknown_name_fails(ollama_double):
    done = cli(ollama_double, "pull", "lama3.2:3b")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "Error: pull model manifest: file does not exist"
    bad = cli(ollama_double, "pull", "no such model!")
    assert (bad.returncode, bad.stderr.strip()) == (1, "Error: 400 Bad Request: invalid model name")


def test_run_prints_the_answer(ollama_double):
    ran = cli(ollama_double, "run", "llama3.2:3b", "hello", "there")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "Echo: hello there\n\n"
    piped = cli(ollama_double, "run", "llama3.2:3b", "and", stdin="from stdin")
    assert piped.stdout == "Echo: from stdin and\n\n"


def test_run_pulls_a_missing_model_and_shows_thinking(ollama_double):
    ran = cli(ollama_double, "run", "qwen3:0.6b", "why")
    assert ran.returncode == 0, ran.stderr
    assert "pulling manifest" in ran.stderr
    assert ran.stdout == "Thinking...\nthinking about: why\n...done thinking.\n\nEcho: why\n\n"
    hidden = cli(ollama_double, "run", "qwen3:0.6b", "--hidethinking", "why")
    assert hidden.stdout == "Echo: why\n\n"
    off = cli(ollama_double, "run", "--think=false", "qwen3:0.6b", "why")
    assert off.stdout == "Echo: why\n\n"
    refused = cli(ollama_double, "run", "--think", "llama3.2:3b", "why")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: 400 Bad Request: registry.ollama.ai/library/llama3.2:3b does not support thinking"
    )
    unknown = cli(ollama_double, "run", "nosuch:1b", "hi")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines()[-1] == "Error: pull model manifest: file does not exist"


def test_cp_ps_and_stop(ollama_double):
    assert (
        cli(ollama_double, "cp", "llama3.2:3b", "mine").stdout == "copied 'llama3.2:3b' to 'mine'\n"
    )
    cli(ollama_double, "run", "mine", "x")
    header, *rows = cli(ollama_double, "ps").stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    (row,) = rows
    assert row.split()[0] == "mine:latest" and "100% CPU" in row and "from now" in row
    assert cli(ollama_double, "stop", "mine").returncode == 0
    assert cli(ollama_double, "ps").stdout.splitlines()[1:] == []
    missing = cli(ollama_double, "stop", "nope")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        'Error: couldn\'t find model "nope" to stop',
    )


def test_argument_errors_are_cobras(ollama_double):
    for args, message in (
        (["pull"], "Error: accepts 1 arg(s), received 0"),
        (["rm"], "Error: requires at least 1 arg(s), only received 0"),
        (["cp", "a"], "Error: accepts 2 arg(s), received 1"),
        (["frobnicate"], 'Error: unknown command "frobnicate" for "ollama"'),
    ):
        done = cli(ollama_double, *args)
        assert (done.returncode, done.stderr.strip()) == (1, message), args


def test_version_with_and_without_a_server(ollama_double):
    with_server = cli(ollama_double, "--version")
    assert (with_server.returncode, with_server.stdout) == (0, "ollama version is 0.12.3\n")
    alone = cli(f"127.0.0.1:{free_port()}", "-v")
    assert alone.returncode == 0
    assert alone.stdout == (  # versionHandler prints its warnings with fmt.Println
        "Warning: could not connect to a running Ollama instance\n"
        "Warning: client version is 0.12.3\n"
    )
    assert alone.stderr == ""


@pytest.mark.parametrize(
    "command", [["list"], ["pull", "llama3.2:3b"], ["rm", "x"], ["run", "m", "hi"], ["ps"]]
)
def test_client_commands_without_a_server_say_so(command):
    done = cli(f"127.0.0.1:{free_port()}", *command)
    assert done.returncode == 1
    assert done.stderr.strip() == NO_SERVER


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

"""The agent on the image's Python: Buildroot's Python version and exactly the versions of
the Python packages Buildroot installs (tests/support/image_python.py), not the host's.

A package the agent imports but its Buildroot package forgets to select, or a version of
Buildroot's that the agent does not work with, fails here."""

from __future__ import annotations

import json

import ollama
import openai
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from support.agent import start_agent_process

pytestmark = pytest.mark.slow

DISTRIBUTIONS = """
import importlib.metadata as md, json, platform
print(json.dumps({
    "python": platform.python_version(),
    "distributions": [
        [d.metadata["Name"], d.version, d.metadata["Requires-Python"] or "", d.requires or []]
        for d in md.distributions()
    ],
}))
"""

# Requirements the image does not meet, each on purpose (see the packages' Config.in).
KNOWN_UNMET = {
    # Embeddings (dialog rails, knowledge bases) only; Buildroot packages neither.
    ("nemoguardrails", "fastembed"),
    ("nemoguardrails", "onnxruntime"),
    # Only the embeddings and the TensorRT-LLM provider import these.
    ("nemoguardrails", "numpy"),
    ("nemoguardrails", "protobuf"),
    # Declared <3.14; the input and output rails work on 3.14 (the guardrails suite runs
    # its end-to-end tests here too).
    ("nemoguardrails", "python"),
    # Declared <4; nemoguardrails never calls schema(), the one marshmallow-based path.
    ("dataclasses-json", "marshmallow"),
}


def unmet_requirements(report: dict) -> set[tuple[str, str]]:
    """(distribution, what it needs) for every requirement the installed set misses."""
    installed = {
        canonicalize_name(name): version for name, version, _, _ in report["distributions"]
    }
    python = report["python"]
    environment = {"python_version": python.rsplit(".", 1)[0], "python_full_version": python}
    unmet = set()
    for name, _, requires_python, requires in report["distributions"]:
        name = canonicalize_name(name)
        if requires_python and python not in SpecifierSet(requires_python):
            unmet.add((name, "python"))
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
                continue
            have = installed.get(canonicalize_name(requirement.name))
            if have is None or not requirement.specifier.contains(have, prereleases=True):
                unmet.add((name, canonicalize_name(requirement.name)))
    return unmet


def test_only_the_known_requirements_are_unmet(image_python):
    proc = image_python.run([image_python.python, "-c", DISTRIBUTIONS])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["python"].startswith(image_python.minor + ".")
    names = {canonicalize_name(d[0]) for d in report["distributions"]}
    assert {"cube-agent", "nemoguardrails", "fastapi", "uvicorn", "aiohttp", "orjson"} <= names
    assert unmet_requirements(report) == KNOWN_UNMET


def test_every_agent_module_imports(image_python):
    modules = "cube_agent.app, cube_agent.cli, cube_agent.guardrails, nemoguardrails"
    modules += ", uvloop, httptools"  # what uvicorn picks when they are there
    proc = image_python.run([image_python.python, "-c", f"import {modules}"])
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def agent(image_python, ollama_double):
    """The agent in the image's Python, with a key made by its own CLI there."""
    keys = "/tmp/keys.json"
    cli = image_python.python.replace("/python", "/cube-agent")
    proc = image_python.run([cli, "keys", "add", "--file", keys, "--name", "t", "--domain", "d1"])
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    url, process, _ = start_agent_process(
        ollama_double.url, command=image_python.agent_command(), key_file=keys
    )
    try:
        yield url, key
    finally:
        process.stop()
        (image_python.root / keys.lstrip("/")).unlink()


def test_ollama_and_openai_clients_through_the_agent(agent, ollama_double):
    url, key = agent
    headers = {"Authorization": f"Bearer {key}"}
    oll = ollama.Client(host=f"{url}/d1", headers=headers)
    hello = [{"role": "user", "content": "hi"}]
    parts = list(oll.chat(model=ollama_double.model, messages=hello, stream=True))
    assert len(parts) > 1 and parts[-1].done
    assert "".join(p.message.content for p in parts)

    oai = openai.OpenAI(base_url=f"{url}/d1/v1", api_key=key, max_retries=0)
    chunks = list(
        oai.chat.completions.create(model=ollama_double.model, messages=hello, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [m.id for m in oai.models.list()] == [m.model for m in oll.list().models]

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/d1/v1", api_key="wrong", max_retries=0).models.list()


def test_https_with_a_key_made_at_start_on_the_images_python(image_python, tmp_path):
    """The image's uvicorn and cryptography serve the agent's TLS, beside the plain
    loopback listener, as the image's env file configures them."""
    import ssl
    import time

    import httpx
    from support import Process, free_port, wait_for_url

    keys = "/tmp/tls-keys.json"
    cli = image_python.python.replace("/python", "/cube-agent")
    add = [cli, "keys", "add", "--file", keys, "--name", "t", "--domain", "d1"]
    assert image_python.run(add).returncode == 0
    port, plain = free_port(), free_port()
    env = {
        "UV_CUBE_AGENT_TARGET_URL": "http://127.0.0.1:9",
        "UV_CUBE_AGENT_HOST": "127.0.0.1",
        "UV_CUBE_AGENT_PORT": str(port),
        "UV_CUBE_AGENT_TLS": "on",
        "UV_CUBE_AGENT_PLAIN_PORT": str(plain),
        "UV_CUBE_AGENT_KEY_FILE": keys,
    }
    process = Process(image_python.agent_command(), env=env)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        wait_for_url(f"http://127.0.0.1:{plain}/health", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"https://127.0.0.1:{port}/health", verify=ctx, timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, process.output()
                time.sleep(0.2)
        assert answer.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        process.stop()
        (image_python.root / keys.lstrip("/")).unlink()


def test_ollama_api_translated_onto_an_openai_engine(image_python):
    """The translation (pydantic request models, tool-call assembly, CORS) on Buildroot's
    pydantic, Starlette and aiohttp: a streamed tool call and the tool loop's second turn."""
    from support.engines import TOOL_MODEL, start_tool_engine

    keys = "/tmp/translate-keys.json"
    cli = image_python.python.replace("/python", "/cube-agent")
    proc = image_python.run([cli, "keys", "add", "--file", keys, "--name", "t", "--domain", "d1"])
    assert proc.returncode == 0, proc.stderr
    engine = start_tool_engine()
    try:
        url, process, _ = start_agent_process(
            engine.url, command=image_python.agent_command(), key_file=keys
        )
        try:
            oll = ollama.Client(
                host=f"{url}/d1", headers={"Authorization": f"Bearer {proc.stdout.strip()}"}
            )
            tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ask = {"role": "user", "content": 'call f with {"a": 1}'}
            parts = list(oll.chat(TOOL_MODEL, [ask], tools=[tool], stream=True, think=False))
            calls = [c for p in parts for c in (p.message.tool_calls or [])]
            assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
                ("f", {"a": 1})
            ]
            answer = {"role": "assistant", "content": "", "tool_calls": calls}
            result = {"role": "tool", "content": "done", "tool_name": "f"}
            second = oll.chat(TOOL_MODEL, [ask, answer, result], tools=[tool], think=False)
            assert second.message.content == "tool said: done"
        finally:
            process.stop()
    finally:
        engine.stop()
        (image_python.root / keys.lstrip("/")).unlink()


def test_the_tree_is_pyc_only_as_buildroot_leaves_it(image_python):
    """BR2_PACKAGE_PYTHON3_PYC_ONLY (the defconfig's): the agent and the stdlib as .pyc
    only; nemoguardrails keeps the .py files it finds its rails by (KEEP_PY_FILES)."""
    lib = image_python.root / f"usr/lib/python{image_python.minor}"
    agent = lib / "site-packages/cube_agent"
    assert (agent / "__init__.pyc").is_file() and not list(agent.rglob("*.py"))
    assert not (lib / "json/__init__.py").exists() and (lib / "json/__init__.pyc").is_file()
    rails = lib / "site-packages/nemoguardrails"
    assert (rails / "library/self_check/input_check/rail.py").is_file()
    assert (rails / "actions/actions.py").is_file()
    assert not (rails / "rails/llm/llmrails.py").exists()

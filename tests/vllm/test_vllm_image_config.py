"""The image's vLLM configuration checked against vLLM 0.10.2 itself (the CPU build,
support/vllm.py), not against the double.

- The flags the generator renders for a vLLM variant of the defconfig (/etc/default/vllm,
  expanded into vllm.service's ExecStart as systemd does) are accepted by vLLM's own
  command-line parser and its pre-start checks.
- The chat template the image ships (/etc/vllm/chat-template.jinja) is what makes chat work
  on a model without one (DialoGPT, the default): a template-less tiny model started with the
  rendered flags chats, and the prompt it sees is the shipped template's rendering; the same
  model without the flag gets vLLM's 400, which the agent passes on to both client families.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import jinja2
import ollama
import openai
import pytest
from cube_agent.keys import KeyFile
from support import missing
from support.agent import start_agent_process
from support.buildroot import VARIANTS, Output, buildroot_dir, variant_defconfig
from support.vllm import (
    MODEL_NAME,
    MODELS,
    VENV,
    Overlay,
    launch_vllm_server,
    vllm_root,
    vllm_unavailable,
)

pytestmark = [pytest.mark.slow, pytest.mark.buildroot]

REPO = Path(__file__).resolve().parents[2]
NO_TEMPLATE_MODEL = f"{MODELS}/tiny-llama-no-template"
REFUSAL = "default chat template is no longer allowed"
CHAT = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "how are you"}]  # fmt: skip

# vLLM's own `vllm serve` entry point, with the serving replaced by reporting what the
# parser made of the command line (after vLLM's validate(): the template must exist). One
# process for every command line in argv[1] (JSON): importing vLLM takes a while.
PARSE = """
import contextlib, io, json, sys
import vllm.entrypoints.cli.serve as serve
from vllm.entrypoints.cli.main import main

def dump(args):
    keys = ("model_tag", "host", "port", "gpu_memory_utilization", "max_model_len",
            "chat_template")
    print(json.dumps({"parsed": {k: getattr(args, k) for k in keys}}))

serve.ServeSubcommand.cmd = staticmethod(dump)
for argv in json.loads(sys.argv[1]):
    sys.argv = ["vllm", *argv]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            main()
    except SystemExit as e:
        print(json.dumps({"exit": e.code, "error": errors.getvalue()}))
    except Exception as e:
        print(json.dumps({"exit": 1, "error": f"{type(e).__name__}: {e}"}))
"""


@pytest.fixture(scope="module")
def root() -> Path:
    reason = vllm_unavailable()
    if reason:
        missing(reason)
    return vllm_root()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The generator's files for the systemd defconfig with the vLLM backend, configured
    by the real Buildroot (so Kconfig's defaults and selects apply)."""
    buildroot = buildroot_dir()
    if not (buildroot / "Makefile").is_file():
        missing(f"no Buildroot at {buildroot} (make buildroot, or set BUILDROOT_DIR)")
    work = tmp_path_factory.mktemp("vllm-image")
    defconfig = variant_defconfig(work, "defconfig", VARIANTS["VLLM"])
    out = Output(buildroot, work / "output").configure(str(defconfig))
    assert out.config().get("BR2_PACKAGE_VLLM") == "y"
    target = work / "target"
    subprocess.run([sys.executable, REPO / "generator/cube-config", "--config",
                    out.dir / ".config", "--out", target], check=True, timeout=60)  # fmt: skip
    return target


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if re.match(r"[A-Z_]+=", line):
            key, raw = line.split("=", 1)
            values[key] = "".join(shlex.split(raw))
    return values


def exec_start(rendered: Path) -> list[str]:
    """vllm.service's ExecStart with /etc/default/vllm's values, expanded as systemd does:
    ${VAR} is one word, $VAR is split on whitespace."""
    env = env_file(rendered / "etc/default/vllm")
    unit = (rendered / "usr/lib/systemd/system/vllm.service").read_text().replace("\\\n", " ")
    (line,) = [li for li in unit.splitlines() if li.startswith("ExecStart=")]
    argv: list[str] = []
    for word in shlex.split(line.removeprefix("ExecStart=")):
        if whole := re.fullmatch(r"\$(\w+)", word):
            argv += env[whole[1]].split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], word))
    return argv


def template_file(rendered: Path) -> dict[str, str]:
    """The shipped template at its path in the image, for the server's root."""
    path = "/etc/vllm/chat-template.jinja"
    return {path: (rendered / path.lstrip("/")).read_text()}


@pytest.fixture(scope="module")
def parsed(root, rendered, tmp_path_factory) -> dict[str, dict]:
    """What vLLM's parser says to the rendered command line, and to two it must refuse."""
    argv = exec_start(rendered)
    assert argv[:2] == ["/usr/bin/vllm", "serve"]
    template = argv.index("--chat-template") + 1
    cases = {
        "rendered": argv,
        "bad number": [*argv, "--gpu-memory-utilization", "most"],
        "no template": [*argv[:template], "/etc/vllm/missing.jinja", *argv[template + 1 :]],
    }
    overlay = Overlay(root, tmp_path_factory.mktemp("vllm-parse"))
    for inside, text in template_file(rendered).items():
        overlay.add(inside, text)
    lines = json.dumps([a[1:] for a in cases.values()])
    done = overlay.run([f"{VENV}/bin/python", "-c", PARSE, lines], timeout=600)
    results = [json.loads(li) for li in done.stdout.splitlines() if li.startswith("{")]
    assert done.returncode == 0 and len(results) == len(cases), done.stdout + done.stderr
    return dict(zip(cases, results, strict=True))


def test_rendered_flags_pass_vllms_own_parser(parsed, rendered):
    env = env_file(rendered / "etc/default/vllm")
    assert parsed["rendered"] == {
        "parsed": {
            "model_tag": env["VLLM_MODEL"],
            "host": env["VLLM_HOST"],
            "port": int(env["VLLM_PORT"]),
            "gpu_memory_utilization": float(env["VLLM_GPU_MEMORY_UTILIZATION"]),
            "max_model_len": int(env["VLLM_MAX_MODEL_LEN"]),
            "chat_template": "/etc/vllm/chat-template.jinja",
        }
    }


def test_the_parser_check_can_fail(parsed):
    """The same check refuses what vLLM refuses: a bad number, a template that is not there."""
    assert parsed["bad number"]["exit"] == 2
    assert "gpu-memory-utilization" in parsed["bad number"]["error"]
    assert parsed["no template"]["exit"] == 1
    assert "appears path-like, but doesn't exist" in parsed["no template"]["error"]


@pytest.fixture(scope="module")
def servers(root, rendered, tmp_path_factory):
    """The template-less tiny model twice, started together: as the image starts vLLM
    (its rendered flags, model, host and port aside), and without --chat-template."""
    argv = exec_start(rendered)
    image_flags = argv[3:]
    for flag in ("--host", "--port"):
        i = image_flags.index(flag)
        del image_flags[i : i + 2]
    assert "--chat-template" in image_flags
    with_template = launch_vllm_server(
        tmp_path_factory.mktemp("vllm-image-flags"), model=NO_TEMPLATE_MODEL,
        args=image_flags, files=template_file(rendered), label="image's flags, no model template",
    )  # fmt: skip
    without = launch_vllm_server(
        tmp_path_factory.mktemp("vllm-no-template"), model=NO_TEMPLATE_MODEL,
        args=("--max-model-len", "512"), label="no template at all",
    )  # fmt: skip
    try:
        yield with_template.wait(), without.wait()
    finally:
        with_template.stop()
        without.stop()


def test_the_shipped_template_makes_a_template_less_model_chat(servers, rendered):
    image, _ = servers
    client = openai.OpenAI(base_url=image.url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=4)
    assert reply.choices[0].message.content and reply.usage.completion_tokens == 4
    streamed = list(client.chat.completions.create(model=MODEL_NAME, messages=CHAT,
                                                   max_tokens=4, stream=True))  # fmt: skip
    assert streamed[-1].choices[0].finish_reason == "length"
    # The prompt the model saw is the shipped template's rendering of the conversation.
    template = (rendered / "etc/vllm/chat-template.jinja").read_text()
    expected = jinja2.Template(template).render(messages=CHAT, eos_token="</s>",
                                                add_generation_prompt=True)  # fmt: skip
    assert expected.count("</s>") == len(CHAT)

    def tokens(body: dict) -> list[int]:
        resp = httpx.post(image.url + "/tokenize", json={"model": MODEL_NAME, **body})
        assert resp.status_code == 200, resp.text
        return resp.json()["tokens"]

    assert tokens({"messages": CHAT}) == tokens({"prompt": expected, "add_special_tokens": False})


def test_without_the_template_chat_is_refused_and_completions_work(servers):
    _, bare = servers
    resp = httpx.post(bare.url + "/v1/chat/completions",
                      json={"model": MODEL_NAME, "messages": CHAT, "max_tokens": 4})  # fmt: skip
    assert resp.status_code == 400 and REFUSAL in resp.json()["error"]["message"]
    done = httpx.post(bare.url + "/v1/completions",
                      json={"model": MODEL_NAME, "prompt": "hello", "max_tokens": 4})  # fmt: skip
    assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 4


@pytest.fixture
def agent(servers, tmp_path):
    """The agent in front of the template-less server: (url, key)."""
    keys = KeyFile(tmp_path / "keys.json")
    key = keys.add("app", ["default"])
    keys.save()
    url, process, _ = start_agent_process(servers[1].url, key_file=str(keys.path))
    try:
        yield url, key
    finally:
        process.stop()


def test_the_agent_passes_the_refusal_on_to_both_client_families(agent):
    url, key = agent
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError, match=REFUSAL):
        client.chat.completions.create(model=MODEL_NAME, messages=CHAT)
    ollama_client = ollama.Client(host=url, headers={"Authorization": f"Bearer {key}"})
    for stream in (False, True):  # streamed, the refusal comes before any answer
        with pytest.raises(ollama.ResponseError) as err:
            answer = ollama_client.chat(model=MODEL_NAME, messages=CHAT, stream=stream)
            list(answer) if stream else answer
        assert err.value.status_code == 400 and REFUSAL in err.value.error

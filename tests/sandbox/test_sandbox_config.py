"""`make config-ollama` / `make config-vllm`: they set the engine URL in .env and nothing
else, the .env comes from the image's generator, they work in a fresh clone with no venv,
and the Compose file carries the engines' images, flags (the image's chat template
included), profiles, volumes and healthchecks (parsed: no Docker Compose client here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import missing

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yml"
CONFIG_ENV = REPO / "scripts" / "sandbox" / "config-env.sh"


def make(target: str, env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", REPO, target],
        env={**os.environ, "ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def env_lines(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_creates_env_from_the_generator(tmp_path):
    env_file = tmp_path / ".env"
    done = make("config-ollama", env_file)
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout
    text = env_file.read_text()
    assert text.startswith("# Rendered by cube-config")
    values = env_lines(env_file)
    assert values["UV_CUBE_AGENT_TARGET_URL"] == '"http://ollama:11434"'
    assert values["UV_CUBE_AGENT_ENGINE"] == '"auto"'
    assert values["UV_CUBE_AGENT_PORT"] == '"7001"'


def test_switching_rewrites_only_the_target_url(tmp_path):
    env_file = tmp_path / ".env"
    assert make("config-ollama", env_file).returncode == 0
    # A developer's own edits and extra lines must survive.
    env_file.write_text(
        env_file.read_text().replace('LOG_LEVEL="info"', 'LOG_LEVEL="debug"') + "MY_VAR=1\n"
    )
    before = env_file.read_text().splitlines()

    done = make("config-vllm", env_file)
    assert done.returncode == 0, done.stderr
    assert '"http://ollama:11434" -> "http://vllm:8000"' in done.stdout
    after = env_file.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [
        (
            'UV_CUBE_AGENT_TARGET_URL="http://ollama:11434"',
            'UV_CUBE_AGENT_TARGET_URL="http://vllm:8000"',
        )
    ]


def test_config_is_idempotent(tmp_path):
    env_file = tmp_path / ".env"
    assert make("config-vllm", env_file).returncode == 0
    first = env_file.read_bytes()
    again = make("config-vllm", env_file)
    assert again.returncode == 0
    assert "unchanged" in again.stdout
    assert env_file.read_bytes() == first


def test_a_missing_line_is_added(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text('UV_CUBE_AGENT_LOG_LEVEL="info"\n')
    assert make("config-ollama", env_file).returncode == 0
    assert env_file.read_text() == (
        'UV_CUBE_AGENT_LOG_LEVEL="info"\nUV_CUBE_AGENT_TARGET_URL="http://ollama:11434"\n'
    )


@pytest.mark.parametrize("url", ["ollama:11434", "http://x y", 'http://a"b', ""])
def test_bad_urls_are_refused(tmp_path, url):
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\n")
    done = subprocess.run(
        [CONFIG_ENV, url],
        env={**os.environ, "ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("config-env.sh: ")
    assert env_file.read_text() == "A=1\n"


# -- a fresh clone: no .venv, no .env


def fresh_clone(where: Path) -> Path:
    """The files a clone of this tree has (tracked, and new ones not ignored): no .venv,
    no .env, no build output."""
    listed = subprocess.run(
        ["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a deleted, not yet committed file is still listed
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, where / name)
    return where


def without_venvs() -> dict[str, str]:
    """This environment minus any virtualenv: PATH without its bin/, no VIRTUAL_ENV."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "ENV_FILE")}
    venvs = {
        Path(sys.prefix) / "bin",
        *(Path(p) for p in os.environ.get("VIRTUAL_ENV", "").split(":") if p),
    }
    env["PATH"] = ":".join(
        p
        for p in env["PATH"].split(":")
        if not (Path(p) / "activate").exists() and Path(p) not in venvs
    )
    return env


def test_config_targets_work_in_a_fresh_clone_without_a_venv(tmp_path):
    env = without_venvs()
    host_python = shutil.which("python3", path=env["PATH"])
    if (
        host_python is None
        or subprocess.run(
            [host_python, "-c", "import jinja2"], capture_output=True, env=env, timeout=30
        ).returncode
    ):
        missing("the host's python3 has no Jinja2 (apt-get install python3-jinja2)")
    clone = fresh_clone(tmp_path / "clone")
    assert not (clone / ".venv").exists() and not (clone / ".env").exists()

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["make", "--no-print-directory", "-C", clone, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    assert "created" in run("config-vllm").stdout
    env_file = clone / ".env"
    as_vllm = env_file.read_text().splitlines()
    run("config-ollama")
    as_ollama = env_file.read_text().splitlines()
    changed = [(a, b) for a, b in zip(as_vllm, as_ollama, strict=True) if a != b]
    assert changed == [
        (
            'UV_CUBE_AGENT_TARGET_URL="http://vllm:8000"',
            'UV_CUBE_AGENT_TARGET_URL="http://ollama:11434"',
        )
    ]
    planned = run("-n", "up-vllm").stdout
    assert "config-env.sh http://vllm:8000" in planned
    assert "compose-up.sh vllm" in planned
    assert env_file.read_text().splitlines() == as_ollama  # -n ran nothing
    assert not (clone / ".venv").exists()


def test_rendering_without_jinja2_is_one_clear_line(tmp_path):
    # A Python without site-packages: the standard library only, no Jinja2.
    bare = tmp_path / "python3"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    bare.chmod(0o755)
    env_file = tmp_path / ".env"
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", REPO, "config-vllm", f"GENERATOR_PYTHON={bare}"],
        env={**os.environ, "ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("config-env.sh: ") and "jinja2" in lines[0], done.stderr
    assert "python3-jinja2" in lines[0]
    assert not [line for line in lines[1:] if not line.startswith("make")], done.stderr
    assert not env_file.exists()


# -- the Compose file


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_profiles_split_the_engines(compose):
    services = compose["services"]
    profiles = {name: s.get("profiles") for name, s in services.items()}
    assert profiles["ollama"] == ["ollama"]
    assert profiles["vllm"] == ["vllm"]
    assert profiles["agent-ollama"] == ["ollama"]
    assert profiles["agent-vllm"] == ["vllm"]
    for agent, engine in (("agent-ollama", "ollama"), ("agent-vllm", "vllm")):
        assert services[agent]["depends_on"][engine]["condition"] == "service_healthy"


def test_agent_is_built_from_the_repo_and_reads_env(compose):
    for name in ("agent-ollama", "agent-vllm"):
        agent = compose["services"][name]
        assert agent["env_file"] == "../.env"
        build = agent["build"]
        dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.is_file()
        assert "COPY agent " in dockerfile.read_text()
        assert "healthcheck" in agent
        assert "/health" in " ".join(agent["healthcheck"]["test"])


def test_ollama_and_its_model_sidecars(compose):
    services = compose["services"]
    assert services["ollama"]["image"].startswith("ollama/ollama")
    assert services["ollama"]["healthcheck"]["test"]
    pulled = {}
    for name, service in services.items():
        if service.get("entrypoint") == ["ollama", "pull"]:
            assert service["profiles"] == ["ollama"]
            assert service["restart"] == "no"
            assert service["depends_on"]["ollama"]["condition"] == "service_healthy"
            assert service["environment"]["OLLAMA_HOST"] == "ollama:11434"
            pulled[name] = service["command"][0]
    assert sorted(pulled.values()) == ["llama3.2:3b", "nomic-embed-text:v1.5", "starcoder2:3b"]


def test_vllm_image_model_flags_runtime_and_cache(compose):
    vllm = compose["services"]["vllm"]
    assert vllm["image"] == "vllm/vllm-openai:v0.10.2"
    assert vllm["runtime"] == "nvidia"
    assert vllm["environment"]["VLLM_MODEL"] == "microsoft/DialoGPT-medium"
    args = vllm["command"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--model"] == "microsoft/DialoGPT-medium"
    assert flags["--gpu-memory-utilization"] == "0.85"
    assert flags["--max-model-len"] == "1024"
    assert flags["--port"] == "8000"
    assert "vllm-cache:/root/.cache/huggingface" in vllm["volumes"]
    assert "vllm-cache" in compose["volumes"]
    assert "/health" in " ".join(vllm["healthcheck"]["test"])


def test_vllm_settings_match_what_the_image_renders(compose, tmp_path):
    """The engine flags in the Compose file are the Kconfig defaults the generator renders
    for the image's /etc/default/vllm."""
    config = tmp_path / "vllm.config"
    config.write_text("BR2_INIT_SYSTEMD=y\nBR2_PACKAGE_VLLM=y\n")
    subprocess.run(
        [
            sys.executable,
            REPO / "generator/cube-config",
            "--config",
            config,
            "--out",
            tmp_path / "out",
        ],
        check=True,
        timeout=60,
    )
    rendered = {k: v.strip('"') for k, v in env_lines(tmp_path / "out/etc/default/vllm").items()}
    args = compose["services"]["vllm"]["command"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--model"] == rendered["VLLM_MODEL"]
    assert flags["--gpu-memory-utilization"] == rendered["VLLM_GPU_MEMORY_UTILIZATION"]
    assert flags["--max-model-len"] == rendered["VLLM_MAX_MODEL_LEN"]
    assert flags["--port"] == rendered["VLLM_PORT"]
    # VLLM_ARGS: the chat template, at the path the image's vllm.service gives it
    assert rendered["VLLM_ARGS"] == f"--chat-template {flags['--chat-template']}"


def test_vllm_chats_with_the_template_the_image_ships(compose, tmp_path):
    """DialoGPT has no chat template: Compose's vLLM gets the image's, the file the
    generator installs as /etc/vllm/chat-template.jinja, mounted read-only where the
    --chat-template flag points."""
    config = tmp_path / "vllm.config"
    config.write_text("BR2_INIT_SYSTEMD=y\nBR2_PACKAGE_VLLM=y\n")
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, REPO / "generator/cube-config", "--config", config, "--out", out],
        check=True,
        timeout=60,
    )
    vllm = compose["services"]["vllm"]
    args = vllm["command"]
    template_path = args[args.index("--chat-template") + 1]
    mounts = [v.split(":") for v in vllm["volumes"] if v.split(":")[1:2] == [template_path]]
    assert len(mounts) == 1, vllm["volumes"]
    source, _, options = mounts[0]
    assert options == "ro"
    shipped = out / template_path.lstrip("/")
    assert (COMPOSE.parent / source).resolve().read_text() == shipped.read_text()
    assert "messages" in shipped.read_text()


def test_up_without_docker_engine_is_one_clear_line(tmp_path):
    """No Docker engine runs here: up-ollama / up-vllm must say so, not dump a trace."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("make", "sh", "dirname", "grep", "cat"):
        real = subprocess.run(
            ["sh", "-c", f"command -v {tool}"], capture_output=True, text=True
        ).stdout.strip()
        (fake_bin / tool).symlink_to(real)
    for profile in ("ollama", "vllm"):
        done = subprocess.run(
            [REPO / "scripts/sandbox/compose-up.sh", profile],
            env={"PATH": str(fake_bin)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1
        assert done.stderr.strip() == (
            f"up-{profile}: docker not found: install Docker Engine with the compose plugin, "
            "or use 'make up-sandbox' (no Docker)"
        )

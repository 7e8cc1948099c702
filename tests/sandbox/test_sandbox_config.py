"""`make config-ollama` / `make config-vllm`: they set the engine URL in .env and nothing
else, the .env comes from the image's generator, and the Compose file carries the engines'
images, flags, profiles, volumes and healthchecks (parsed: Docker may be absent here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yml"
CONFIG_ENV = REPO / "scripts" / "sandbox" / "config-env.sh"


def make(target: str, env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", REPO, target],
        env={**os.environ, "ENV_FILE": str(env_file), "PYTHON": sys.executable},
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

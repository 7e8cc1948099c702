"""cube-config renders every backend for both init systems, and the results are sound."""

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from render_support import (
    BUSYBOX,
    CUBE_CONFIG,
    read_env_with_sh,
    read_env_with_systemd,
    read_unit,
    require_tool,
    run_cube_config,
)

UNITS = "usr/lib/systemd/system"

BACKENDS = {
    "ollama": """
BR2_PACKAGE_OLLAMA=y
BR2_PACKAGE_CUBE_AGENT_BACKEND_OLLAMA=y
""",
    "vllm": """
BR2_PACKAGE_VLLM=y
BR2_PACKAGE_VLLM_PORT=8100
BR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM=y
""",
    "llama-cpp": """
BR2_PACKAGE_CUBE_LLAMA_SERVER=y
BR2_PACKAGE_CUBE_LLAMA_SERVER_PORT=8181
BR2_PACKAGE_CUBE_AGENT_BACKEND_LLAMA_CPP=y
""",
    "custom": """
# BR2_PACKAGE_CUBE_AGENT_BACKEND_OLLAMA is not set
BR2_PACKAGE_CUBE_AGENT_BACKEND_CUSTOM=y
BR2_PACKAGE_CUBE_AGENT_TARGET_URL="https://engine.example:8443/base"
""",
}
# What the agent is pointed at, and which unit it starts after.
TARGETS = {
    # The engine kind is always detected, so the URL alone switches engines.
    "ollama": ("http://127.0.0.1:11434", "auto", "ollama.service"),
    "vllm": ("http://127.0.0.1:8100", "auto", "vllm.service"),
    "llama-cpp": ("http://127.0.0.1:8181", "auto", "llama-server.service"),
    "custom": ("https://engine.example:8443/base", "auto", None),
}
FILES = {
    "ollama": {
        "etc/default/ollama",
        f"{UNITS}/ollama.service",
        "etc/init.d/S96ollama",
        "etc/default/pull-models",
        f"{UNITS}/pull-models.service",
        "etc/init.d/S97pull-models",
    },
    "vllm": {
        "etc/default/vllm",
        f"{UNITS}/vllm.service",
        "etc/init.d/S96vllm",
        "etc/vllm/chat-template.jinja",
    },
    "llama-cpp": {
        "etc/default/llama-server",
        f"{UNITS}/llama-server.service",
        "etc/init.d/S96llama-server",
    },
    "custom": set(),
}
AGENT_FILES = {"etc/default/cube-agent", f"{UNITS}/cube-agent.service", "etc/init.d/S98cube-agent"}
INITS = {"systemd": "BR2_INIT_SYSTEMD=y\n", "busybox": "BR2_INIT_BUSYBOX=y\n"}
USERS = {
    "ollama": "ollama",
    "vllm": "vllm",
    "llama-server": "llama-server",
    "pull-models": "cube-models",
    "cube-agent": "cube-agent",
}


def config_for(backend: str, init: str) -> str:
    return INITS[init] + "BR2_PACKAGE_CUBE_AGENT=y\n" + BACKENDS[backend]


@pytest.fixture(
    scope="module", params=[(b, i) for b in BACKENDS for i in INITS], ids=lambda p: "-".join(p)
)
def rendered(request, tmp_path_factory):
    """Rendered once per backend and init system; the tests only read it."""
    backend, init = request.param
    result = run_cube_config(
        config_for(backend, init), tmp_path_factory.mktemp("-".join(request.param))
    )
    assert result.status == 0, result.stderr
    assert result.stderr == ""
    return backend, result


def test_renders_the_files_of_every_enabled_package(rendered):
    backend, result = rendered
    assert result.files() == FILES[backend] | AGENT_FILES


def test_init_scripts_are_executable_and_the_rest_is_not(rendered):
    _, result = rendered
    for name in result.files():
        mode = stat.S_IMODE((result / name).stat().st_mode)
        assert mode == (0o755 if name.startswith("etc/init.d/") else 0o644), name


def test_agent_is_pointed_at_the_chosen_engine(rendered, tmp_path):
    backend, result = rendered
    url, engine, _ = TARGETS[backend]
    env = read_env_with_sh(result / "etc/default/cube-agent", ["sh"])
    assert env == {
        "UV_CUBE_AGENT_TARGET_URL": url,
        "UV_CUBE_AGENT_ENGINE": engine,
        "UV_CUBE_AGENT_HOST": "0.0.0.0",
        "UV_CUBE_AGENT_PORT": "7001",
        "UV_CUBE_AGENT_KEY_FILE": "/etc/cube/agent/keys.json",
        "UV_CUBE_AGENT_LOG_LEVEL": "info",
        "UV_CUBE_AGENT_AUTH": "on",
        "UV_CUBE_AGENT_GUARDRAILS_CONFIG": "",
        "UV_CUBE_AGENT_TLS": "on",
        "UV_CUBE_AGENT_TLS_CERT_FILE": "",
        "UV_CUBE_AGENT_TLS_KEY_FILE": "",
        "UV_CUBE_AGENT_PLAIN_PORT": "7002",
        "UV_CUBE_AGENT_INSECURE_PLAIN_HTTP": "off",
        "UV_CUBE_AGENT_MAX_HEAD_BYTES": "65536",
        "UV_CUBE_AGENT_HEADER_TIMEOUT": "10",
        "UV_CUBE_AGENT_KEEPALIVE_TIMEOUT": "5",
        "UV_CUBE_AGENT_MAX_CONNECTIONS": "1024",
        "UV_CUBE_AGENT_MAX_BODY_BYTES": "10485760",
        "UV_CUBE_AGENT_MAX_CONCURRENCY": "256",
        "UV_CUBE_AGENT_MAX_KEY_CONCURRENCY": "128",
        "UV_CUBE_AGENT_MAX_BUFFERED_BYTES": "67108864",
        "UV_CUBE_AGENT_MAX_ANSWER_BYTES": "33554432",
        "UV_CUBE_AGENT_ORIGINS": "",
    }


def test_sh_busybox_and_systemd_read_every_env_file_alike(rendered, tmp_path):
    _, result = rendered
    for path in (result / "etc/default").iterdir():
        by_sh = read_env_with_sh(path, ["sh"])
        assert by_sh, path
        assert read_env_with_sh(path, [BUSYBOX, "sh"]) == by_sh
        by_systemd = read_env_with_systemd(path, tmp_path)
        assert by_systemd == by_sh, path.name


def test_agent_unit_starts_after_its_engine(rendered):
    backend, result = rendered
    _, _, engine_unit = TARGETS[backend]
    agent = read_unit(result / f"{UNITS}/cube-agent.service")
    after = agent["Unit"]["After"].split()
    wants = agent["Unit"]["Wants"].split()
    if engine_unit:
        assert engine_unit in after
        assert engine_unit in wants
    assert not [u for u in after + wants if u not in ("network-online.target", engine_unit)]
    assert "pull-models" not in (result / f"{UNITS}/cube-agent.service").read_text()
    service = agent["Service"]
    assert service["ExecStartPre"].splitlines()[0] == "+/usr/bin/cube-agent keys init"
    assert service["ExecStart"] == "/usr/bin/cube-agent serve"


def test_units_run_as_their_own_user_sandboxed(rendered):
    _, result = rendered
    for path in (result / UNITS).iterdir():
        name = path.stem
        service = read_unit(path)["Service"]
        assert service["User"] == service["Group"] == USERS[name]
        assert service["EnvironmentFile"] == f"/etc/default/{name}"
        assert service["SyslogIdentifier"] == name
        assert service["StandardOutput"] == service["StandardError"] == "journal"
        assert service["NoNewPrivileges"] == "yes"
        assert service["ProtectSystem"] == "strict"
        assert service["ProtectHome"] == service["PrivateTmp"] == "yes"
        assert service["SystemCallFilter"] == "@system-service"
        assert service["CapabilityBoundingSet"] == ""
        assert service["RestrictAddressFamilies"].startswith("AF_UNIX AF_INET AF_INET6")
        # GPU engines keep the device nodes; everything else gets a private /dev.
        assert ("PrivateDevices" in service) == (name not in ("ollama", "vllm")), name
        if name != "pull-models":
            assert service["StateDirectory"] == name
            assert service["Restart"] == "on-failure"
            assert int(service["RestartSec"]) > 0
            assert int(read_unit(path)["Unit"]["StartLimitBurst"]) > 0


@pytest.mark.parametrize("init", INITS)
def test_pull_models_never_holds_up_boot(render, init):
    result = render(config_for("ollama", init))
    parsed = read_unit(result / f"{UNITS}/pull-models.service")
    section, service = parsed["Unit"], parsed["Service"]
    assert service["Type"] == "oneshot"
    assert service["RemainAfterExit"] == "yes"
    # Without this, multi-user.target is ordered after the oneshot and waits for the pulls.
    assert section["DefaultDependencies"] == "no"
    assert "ollama.service" in section["After"].split()
    assert "ollama.service" in section["Wants"].split()
    assert section["Before"].split() == ["shutdown.target"]
    assert re.fullmatch(r"[0-9]+(h|min|s)?", service["TimeoutStartSec"])
    assert service["ExecStart"] == "/usr/bin/pull-models.sh"


def test_vllm_command_line_comes_from_its_env_file(render):
    result = render(
        config_for("vllm", "systemd")
        + 'BR2_PACKAGE_VLLM_MODEL="Qwen/Qwen2.5-0.5B-Instruct"\n'
        + 'BR2_PACKAGE_VLLM_GPU_MEMORY_UTILIZATION="0.5"\n'
        + "BR2_PACKAGE_VLLM_MAX_MODEL_LEN=4096\n"
    )
    assert result.status == 0, result.stderr
    env = read_env_with_sh(result / "etc/default/vllm", ["sh"])
    assert env == {
        "VLLM_MODEL": "Qwen/Qwen2.5-0.5B-Instruct",
        "VLLM_HOST": "127.0.0.1",
        "VLLM_PORT": "8100",
        "VLLM_GPU_MEMORY_UTILIZATION": "0.5",
        "VLLM_MAX_MODEL_LEN": "4096",
        "VLLM_ARGS": "--chat-template /etc/vllm/chat-template.jinja",
        "HF_HOME": "/var/lib/vllm/huggingface",
    }
    exec_start = read_unit(result / f"{UNITS}/vllm.service")["Service"]["ExecStart"].split()
    assert exec_start == [
        "/usr/bin/vllm",
        "serve",
        "${VLLM_MODEL}",
        "--host",
        "${VLLM_HOST}",
        "--port",
        "${VLLM_PORT}",
        "--gpu-memory-utilization",
        "${VLLM_GPU_MEMORY_UTILIZATION}",
        "--max-model-len",
        "${VLLM_MAX_MODEL_LEN}",
        "--enforce-eager",  # Triton would compile C at start: the image has no compiler
        "$VLLM_ARGS",  # unbraced: systemd splits it into words, none when empty
    ]


def test_vllm_chat_template_can_be_left_to_the_model(render):
    result = render(config_for("vllm", "systemd") + 'BR2_PACKAGE_VLLM_CHAT_TEMPLATE=""\n')
    assert result.status == 0, result.stderr
    assert read_env_with_sh(result / "etc/default/vllm", ["sh"])["VLLM_ARGS"] == ""


def test_vllm_chat_template_must_be_an_absolute_path(render):
    result = render(config_for("vllm", "systemd") + 'BR2_PACKAGE_VLLM_CHAT_TEMPLATE="t.jinja"\n')
    assert result.status == 2
    assert "BR2_PACKAGE_VLLM_CHAT_TEMPLATE" in result.stderr


@pytest.mark.parametrize(
    ("ollama_host", "client", "url"),
    [
        ("127.0.0.1:11434", "127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("0.0.0.0:11500", "127.0.0.1:11500", "http://127.0.0.1:11500"),
        (":11600", "127.0.0.1:11600", "http://127.0.0.1:11600"),
        ("10.0.2.15", "10.0.2.15:11434", "http://10.0.2.15:11434"),
        ("http://0.0.0.0:8080", "127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("[::]:11434", "[::1]:11434", "http://[::1]:11434"),
    ],
)
def test_clients_reach_ollama_wherever_it_listens(render, ollama_host, client, url):
    result = render(config_for("ollama", "systemd") + f'BR2_PACKAGE_OLLAMA_HOST="{ollama_host}"\n')
    assert result.status == 0, result.stderr
    assert read_env_with_sh(result / "etc/default/ollama", ["sh"])["OLLAMA_HOST"] == ollama_host
    assert read_env_with_sh(result / "etc/default/pull-models", ["sh"])["OLLAMA_HOST"] == client
    agent = read_env_with_sh(result / "etc/default/cube-agent", ["sh"])
    assert agent["UV_CUBE_AGENT_TARGET_URL"] == url


def test_model_list_with_odd_spacing_is_one_value(render, tmp_path):
    result = render(
        config_for("ollama", "busybox")
        + 'BR2_PACKAGE_CUBE_MODELS_LIST="  llama3.2:3b   qwen2:0.5b   hf.co/org/m:Q4 "\n'
        + "BR2_PACKAGE_CUBE_MODELS_ATTEMPTS=3\n"
        + "BR2_PACKAGE_CUBE_MODELS_INTERVAL=7\n"
    )
    assert result.status == 0, result.stderr
    path = result / "etc/default/pull-models"
    expected = {
        "OLLAMA_HOST": "127.0.0.1:11434",
        "CUBE_MODELS": "llama3.2:3b qwen2:0.5b hf.co/org/m:Q4",
        "CUBE_PULL_ATTEMPTS": "3",
        "CUBE_PULL_INTERVAL": "7",
    }
    assert read_env_with_sh(path, ["sh"]) == expected
    assert read_env_with_sh(path, [BUSYBOX, "sh"]) == expected
    by_systemd = read_env_with_systemd(path, tmp_path)
    assert by_systemd == expected


def test_quotes_backslashes_and_dollars_stay_literal(render, tmp_path):
    key_file = '/etc/cube/my "keys" \\ `id` file.json'
    url = "https://engine.example/v1?a=$HOME&b=`id`"
    kconfig = key_file.replace("\\", "\\\\").replace('"', '\\"')
    result = render(
        "BR2_PACKAGE_CUBE_AGENT=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_CUSTOM=y\n"
        f'BR2_PACKAGE_CUBE_AGENT_TARGET_URL="{url}"\n'
        f'BR2_PACKAGE_CUBE_AGENT_KEY_FILE="{kconfig}"\n'
    )
    assert result.status == 0, result.stderr
    path = result / "etc/default/cube-agent"
    for shell in (["sh"], ["bash", "--posix"], [BUSYBOX, "sh"]):
        env = read_env_with_sh(path, shell)
        assert env["UV_CUBE_AGENT_KEY_FILE"] == key_file, shell
        assert env["UV_CUBE_AGENT_TARGET_URL"] == url, shell
    # systemd's parser (no $-expansion in the value checked: see read_env_with_systemd)
    assert read_env_with_systemd(path, tmp_path)["UV_CUBE_AGENT_KEY_FILE"] == key_file


def test_guardrails_and_low_port(render):
    result = render(
        config_for("ollama", "systemd")
        + "BR2_PACKAGE_CUBE_AGENT_GUARDRAILS=y\n"
        + "BR2_PACKAGE_CUBE_AGENT_PORT=443\n"
        + 'BR2_PACKAGE_CUBE_AGENT_LOG_LEVEL="debug"\n'
    )
    assert result.status == 0, result.stderr
    env = read_env_with_sh(result / "etc/default/cube-agent", ["sh"])
    assert env["UV_CUBE_AGENT_GUARDRAILS_CONFIG"] == "/etc/cube/guardrails"
    assert env["UV_CUBE_AGENT_PORT"] == "443"
    assert env["UV_CUBE_AGENT_LOG_LEVEL"] == "debug"
    # Binding below 1024 as a normal user needs exactly this capability.
    service = read_unit(result / f"{UNITS}/cube-agent.service")["Service"]
    assert service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"


def test_browser_origins(render):
    result = render(
        config_for("ollama", "systemd")
        + 'BR2_PACKAGE_CUBE_AGENT_ORIGINS="https://chat.example.com, https://*.corp.example"\n'
    )
    assert result.status == 0, result.stderr
    env = read_env_with_sh(result / "etc/default/cube-agent", ["sh"])
    assert env["UV_CUBE_AGENT_ORIGINS"] == "https://chat.example.com,https://*.corp.example"


def test_only_the_packages_enabled_are_rendered(render):
    result = render(
        "BR2_INIT_SYSTEMD=y\nBR2_PACKAGE_OLLAMA=y\n# BR2_PACKAGE_CUBE_MODELS is not set\n"
    )
    assert result.status == 0, result.stderr
    assert result.files() == {
        "etc/default/ollama",
        f"{UNITS}/ollama.service",
        "etc/init.d/S96ollama",
    }


@pytest.mark.parametrize("init", ["systemd", "busybox"])
def test_preloaded_models_default_to_the_read_only_root(render, tmp_path, init):
    """A preload directory without a models directory (Kconfig's defaults, as a hand-written
    .config takes them): the models are in the measured root, never pruned, never pulled."""
    result = render(config_for("ollama", init) + 'BR2_PACKAGE_OLLAMA_PRELOAD_DIR="/build/m"\n')
    assert result.status == 0, result.stderr
    path = result / "etc/default/ollama"
    expected = {
        "OLLAMA_HOST": "127.0.0.1:11434",
        "OLLAMA_MODELS": "/usr/share/ollama/models",
        "OLLAMA_NOPRUNE": "true",
    }
    assert read_env_with_sh(path, ["sh"]) == expected
    assert read_env_with_sh(path, [BUSYBOX, "sh"]) == expected
    assert read_env_with_systemd(path, tmp_path) == expected
    assert "etc/default/pull-models" not in result.files()  # cube-models defaults to off
    if init == "systemd":
        service = read_unit(result / f"{UNITS}/ollama.service")["Service"]
        assert "ReadWritePaths" not in service
        assert service["ProtectSystem"] == "strict"


def test_pulled_models_stay_on_the_state_disk(render):
    result = render(config_for("ollama", "systemd"))
    assert result.status == 0, result.stderr
    assert read_env_with_sh(result / "etc/default/ollama", ["sh"]) == {
        "OLLAMA_HOST": "127.0.0.1:11434",
        "OLLAMA_MODELS": "/var/lib/ollama/models",
    }
    assert "CUBE_MODELS_READ_ONLY" not in (result / "etc/default/pull-models").read_text()


@pytest.mark.parametrize(
    ("models_dir", "read_only", "writable_path"),
    [
        ("/srv/models", True, None),
        ("/var/lib/ollama/models", False, None),
        ("/var/models", False, "-/var/models"),
    ],
)
def test_pull_models_only_checks_a_read_only_models_directory(
    render, models_dir, read_only, writable_path
):
    result = render(
        config_for("ollama", "systemd")
        + f'BR2_PACKAGE_OLLAMA_MODELS_DIR="{models_dir}"\nBR2_PACKAGE_CUBE_MODELS=y\n'
    )
    assert result.status == 0, result.stderr
    env = read_env_with_sh(result / "etc/default/ollama", ["sh"])
    assert env["OLLAMA_MODELS"] == models_dir
    assert ("OLLAMA_NOPRUNE" in env) == read_only
    models = read_env_with_sh(result / "etc/default/pull-models", ["sh"])
    assert models.get("CUBE_MODELS_READ_ONLY") == ("yes" if read_only else None)
    service = read_unit(result / f"{UNITS}/ollama.service")["Service"]
    assert service.get("ReadWritePaths") == writable_path


def test_check_validates_without_writing(tmp_path):
    config = tmp_path / "config"
    config.write_text(config_for("ollama", "systemd"))
    proc = subprocess.run(
        [sys.executable, str(CUBE_CONFIG), "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]


# --- the init scripts and units, checked by the tools that run them ---------------------


def test_init_scripts_parse_under_dash_and_busybox(rendered):
    _, result = rendered
    for script in (result / "etc/init.d").iterdir():
        for shell in (["sh"], [BUSYBOX, "sh"]):
            proc = subprocess.run([*shell, "-n", str(script)], capture_output=True, text=True)
            assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
        assert script.read_text().startswith("#!/bin/sh\n")


def test_init_scripts_are_shellcheck_clean(rendered):
    shellcheck = require_tool("shellcheck")
    _, result = rendered
    scripts = sorted(str(p) for p in (result / "etc/init.d").iterdir())
    proc = subprocess.run(
        [shellcheck, "--shell=sh", *scripts], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout


def test_units_pass_systemd_analyze_verify(rendered, tmp_path):
    """systemd-analyze verify on a root holding the units, stubs for every Exec*= program
    and the host's targets (it needs sysinit.target and friends to build start jobs)."""
    analyze = require_tool("systemd-analyze")
    _, result = rendered
    root = tmp_path / "root"
    shutil.copytree(result.out, root)
    for target in Path("/usr/lib/systemd/system").glob("*.target"):
        shutil.copy(target, root / UNITS)
    units = sorted(p.name for p in (result / UNITS).iterdir())
    for name in units:
        text = (result / UNITS / name).read_text().replace("\\\n", " ")
        for program in re.findall(r"^Exec\w+=[-+!@:]*(\S+)", text, re.MULTILINE):
            stub = root / program.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    proc = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # verify exits 0 on unknown keys and bad values: any message is a finding.
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr + proc.stdout


def test_agent_limits_come_from_kconfig_and_size_the_descriptor_limit(render, tmp_path):
    """One source of configuration: the agent's resource limits (issue 14) are Kconfig
    symbols, rendered into its env file; the unit's LimitNOFILE and the SysV script's
    ulimit -n follow the connection cap, so the cap is reached before EMFILE."""
    from cube_agent.config import Settings

    for init in INITS:
        result = render(config_for("ollama", init))
        assert result.status == 0, result.stderr
        env = read_env_with_sh(result / "etc/default/cube-agent", ["sh"])
        # the Kconfig defaults are the agent's own
        defaults = Settings()
        for name in ("max_head_bytes", "max_connections", "max_concurrency", "max_body_bytes"):
            assert int(env[f"UV_CUBE_AGENT_{name.upper()}"]) == getattr(defaults, name)
        assert float(env["UV_CUBE_AGENT_HEADER_TIMEOUT"]) == defaults.header_timeout
    result = render(
        config_for("ollama", "systemd")
        + "BR2_PACKAGE_CUBE_AGENT_MAX_CONNECTIONS=4000\n"
        + "BR2_PACKAGE_CUBE_AGENT_MAX_KEY_CONCURRENCY=16\n"
    )
    env = read_env_with_sh(result / "etc/default/cube-agent", ["sh"])
    assert (env["UV_CUBE_AGENT_MAX_CONNECTIONS"], env["UV_CUBE_AGENT_MAX_KEY_CONCURRENCY"]) == (
        "4000",
        "16",
    )
    service = read_unit(result / f"{UNITS}/cube-agent.service")["Service"]
    assert service["LimitNOFILE"] == str(2 * 4000 + 1024)
    sysv = render(config_for("ollama", "busybox") + "BR2_PACKAGE_CUBE_AGENT_MAX_CONNECTIONS=4000\n")
    script = (sysv / "etc/init.d/S98cube-agent").read_text()
    assert script.index('ulimit -n "9024"') < script.index("start-stop-daemon --start")
    bad = render(
        config_for("ollama", "systemd")
        + "BR2_PACKAGE_CUBE_AGENT_MAX_CONCURRENCY=8\n"
        + "BR2_PACKAGE_CUBE_AGENT_MAX_KEY_CONCURRENCY=9\n"
    )
    assert bad.status == 2 and "BR2_PACKAGE_CUBE_AGENT_MAX_KEY_CONCURRENCY" in bad.stderr

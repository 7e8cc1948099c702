"""The rendered services run hardened, for every backend and both init systems: their own
non-root user, systemd's sandbox (and an exposure score from `systemd-analyze security`),
restart limits, no extra privilege but the agent's first-boot `keys init`; SysV scripts
drop to the same users."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import missing

ROOT = Path(__file__).resolve().parents[2]
CUBE_CONFIG = ROOT / "generator/cube-config"
UNITS = "usr/lib/systemd/system"
BACKENDS = {
    "ollama": "BR2_PACKAGE_OLLAMA=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_OLLAMA=y\n",
    "vllm": "BR2_PACKAGE_VLLM=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM=y\n",
    "llama-cpp": "BR2_PACKAGE_CUBE_LLAMA_SERVER=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_LLAMA_CPP=y\n",
}
# service -> (user, state directory): docs/architecture.md, "Users and ports"
SERVICES = {
    "ollama": ("ollama", "ollama"),
    "vllm": ("vllm", "vllm"),
    "llama-server": ("llama-server", "llama-server"),
    "pull-models": ("cube-models", None),
    "cube-agent": ("cube-agent", "cube-agent"),
}
# Writable paths beyond the state directory: the agent writes configfs-tsm report entries
# (POST /attestation).
EXTRA_WRITABLE = {"cube-agent": {"/sys/kernel/config/tsm/report"}}
# Commands allowed to run with full privileges ("+" or "!" prefix): the agent's first-boot
# key file creation (root-owned, so the agent cannot change it), and handing the agent the
# configfs-tsm report directory for attestation.
PRIVILEGED_OK = {
    "/usr/bin/cube-agent keys init",
    "/bin/chown cube-agent:cube-agent /sys/kernel/config/tsm/report",
}
# `systemd-analyze security` exposure (0 safest .. 10): the bound for the agent; the
# others are held to the same bound (measured 1.9 to 2.3).
MAX_EXPOSURE = 2.5
SCORES: dict[str, float] = {}


def render(backend: str, init: str, out: Path) -> Path:
    config = out.with_suffix(".config")
    init_line = "BR2_INIT_SYSTEMD=y\n" if init == "systemd" else "BR2_INIT_BUSYBOX=y\n"
    config.write_text(init_line + "BR2_PACKAGE_CUBE_AGENT=y\n" + BACKENDS[backend])
    subprocess.run(
        [sys.executable, CUBE_CONFIG, "--config", config, "--out", out],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[tuple[str, str], Path]:
    base = tmp_path_factory.mktemp("rendered")
    return {
        (backend, init): render(backend, init, base / f"{backend}-{init}")
        for backend in BACKENDS
        for init in ("systemd", "sysv")
    }


def units(rendered) -> list[Path]:
    found = sorted(
        {
            p
            for (_, init), out in rendered.items()
            if init == "systemd"
            for p in (out / UNITS).glob("*.service")
        }
    )
    assert {p.stem for p in found} == set(SERVICES), found
    return found


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    assert len(values) == 1, f"{key}= given {len(values)} times: {values}"
    return values[0]


def test_every_unit_runs_as_its_own_user_in_a_sandbox(rendered):
    for path in units(rendered):
        unit = read_unit(path)
        service = unit["Service"]
        user, state = SERVICES[path.stem]
        where = path.name
        assert one(service, "User") == user, where
        assert one(service, "Group") == user, where
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "ProtectKernelModules": "yes",
            "ProtectKernelTunables": "yes",
            "ProtectControlGroups": "yes",
            "RestrictSUIDSGID": "yes",
        }.items():
            assert one(service, key) == value, f"{where}: {key}"
        assert one(service, "CapabilityBoundingSet") == "", f"{where}: keeps capabilities"
        assert "DynamicUser" not in service
        # writable: only its own state directory (ProtectSystem=strict makes the rest read-only)
        assert service.get("StateDirectory", []) == ([state] if state else []), where
        for paths in service.get("ReadWritePaths", []):
            for p in paths.split():
                p = p.lstrip("-")
                own = state is not None and (p + "/").startswith(f"/var/lib/{state}/")
                assert own or p in EXTRA_WRITABLE.get(path.stem, ()), f"{where}: writes {p}"
        # full privileges only for the agent's first-boot key file
        for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop"):
            for command in service.get(key, []):
                prefixes = command[: len(command) - len(command.lstrip("+!-@:|"))]
                if "+" in prefixes or "!" in prefixes:
                    assert command.lstrip("+!-@:|") in PRIVILEGED_OK, f"{where}: {key}={command}"
        if one(service, "Type") != "oneshot":
            assert one(service, "Restart") in ("on-failure", "on-abnormal", "always"), where
            start_limits = unit["Unit"]
            assert int(one(start_limits, "StartLimitBurst")) > 0, where
            assert int(one(start_limits, "StartLimitIntervalSec").rstrip("s")) > 0, where


def test_systemd_analyze_security_exposure(rendered):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed (Debian: systemd)")
    for path in units(rendered):
        proc = subprocess.run(
            [analyze, "security", "--offline=yes", "--no-pager", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
        assert found, proc.stdout + proc.stderr
        score = float(found[1])
        SCORES[f"{path.parent.parent.parent.parent.parent.name}/{path.name}"] = score
        print(f"systemd-analyze security: {path.name} ({path.parents[4].name}): {score}")
        assert score <= MAX_EXPOSURE, f"{path}: exposure {score} > {MAX_EXPOSURE}\n{proc.stdout}"
    assert SCORES


def test_sysv_scripts_drop_privileges(rendered):
    scripts = {
        p
        for (_, init), out in rendered.items()
        if init == "sysv"
        for p in (out / "etc/init.d").glob("S*")
    }
    services = {re.sub(r"^S\d+", "", p.name) for p in scripts}
    assert services == set(SERVICES), services
    for script in scripts:
        user, _ = SERVICES[re.sub(r"^S\d+", "", script.name)]
        text = script.read_text().replace("\\\n", " ")
        assert re.search(rf'^DAEMON_USER="{re.escape(user)}"$', text, re.M), script.name
        # every daemon start goes through start-stop-daemon --chuid (or -c) to that user
        starts = re.findall(r"start-stop-daemon --start.*", text)
        assert starts, f"{script.name}: no start-stop-daemon --start"
        for start in starts:
            assert re.search(r'(--chuid|-c) "?\$DAEMON_USER"?', start), f"{script.name}: {start}"

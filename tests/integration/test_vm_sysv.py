"""The busybox-init image, booted once for the module: the S9x scripts as rcS runs them.

Busybox init runs Buildroot's rcS, which starts S96ollama, S96vllm, S97pull-models and
S98cube-agent; the tests then drive those scripts the way an operator would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.guest import AGENT_KEY_FILE, Guest, boot
from integration.verity import check_verified_root, var_mount

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]

DAEMONS = {"ollama": "ollama", "vllm": "vllm", "cube-agent": "cube-agent"}
SCRIPTS = {"ollama": "S96ollama", "vllm": "S96vllm", "cube-agent": "S98cube-agent"}
# How to tell from inside the guest that each one answers.
PROBES = {
    "ollama": "curl -sf http://127.0.0.1:11434/api/version",
    "vllm": "curl -sf http://127.0.0.1:8000/v1/models",
}


@pytest.fixture(scope="module")
def guest(console_logs: Path) -> Iterator[Guest]:
    yield from boot("sysv", console_logs)


def script(guest: Guest, name: str, action: str) -> tuple[str, int]:
    return guest.console.run(f"/etc/init.d/{SCRIPTS[name]} {action}", timeout=60)


def test_busybox_init_is_pid_1(guest: Guest) -> None:
    assert guest.console.check("readlink /proc/1/exe").endswith("/busybox")


def test_the_scripts_shell_is_busybox(guest: Guest) -> None:
    """rcS and the S scripts run under /bin/sh: on Buildroot that is busybox's ash."""
    assert guest.console.check("readlink -f /bin/sh").endswith("/busybox")
    assert guest.console.check("/bin/sh --help 2>&1 | head -n 1").startswith("BusyBox")


def test_the_root_is_the_verified_image_read_only(guest: Guest) -> None:
    check_verified_root(guest)


def test_s01cube_state_put_var_and_the_keys_on_the_state_disk(guest: Guest) -> None:
    assert var_mount(guest) == "/dev/vdb ext4"
    guest.admin_key()
    assert guest.console.check(f"df {AGENT_KEY_FILE} | awk 'NR == 2 {{print $1}}'") == "/dev/vdb"


@pytest.mark.parametrize("name", sorted(DAEMONS))
def test_rcs_started_each_daemon_as_its_own_user(guest: Guest, name: str) -> None:
    output, status = script(guest, name, "status")
    assert (status, output) == (0, f"{name} is running")
    pid = guest.console.check(f"cat /var/run/{name}.pid")
    assert guest.console.check(f"ps -o user= -p {pid}").strip() == DAEMONS[name]


def test_pull_models_ran_in_the_background_as_its_own_user(guest: Guest) -> None:
    guest.console.wait_for("grep -q 'all models present' /var/log/pull-models.log", timeout=180)
    assert guest.console.check("stat -c %U /var/log/pull-models.log") == "cube-models"
    output, status = guest.console.run("/etc/init.d/S97pull-models status")
    assert status == 3, "it finished: nothing runs"
    assert output.endswith("pull-models is not running")
    listed = guest.console.check("OLLAMA_HOST=127.0.0.1:11434 ollama list")
    for model in guest.configured_models():
        assert model in listed


def test_agent_serves_the_pulled_models_to_the_host(guest: Guest) -> None:
    guest.wait_for_agent()
    assert sorted(m.id for m in guest.openai().models.list()) == guest.configured_models()


@pytest.mark.parametrize("name", sorted(PROBES))
def test_engine_script_stops_starts_restarts_and_reports_status(guest: Guest, name: str) -> None:
    try:
        check_stop_start_restart(guest, name)
    finally:
        script(guest, name, "start")
        guest.console.wait_for(PROBES[name], timeout=60)


def check_stop_start_restart(guest: Guest, name: str) -> None:
    console = guest.console
    output, status = script(guest, name, "stop")
    assert (status, output) == (0, f"Stopping {name}: OK")
    output, status = script(guest, name, "status")
    assert (status, output) == (3, f"{name} is not running")
    assert console.run(PROBES[name])[1] != 0
    # Stopping what is not running is a failure, said so.
    output, status = script(guest, name, "stop")
    assert status != 0
    assert output == f"Stopping {name}: FAIL"

    output, status = script(guest, name, "start")
    assert (status, output) == (0, f"Starting {name}: OK")
    console.wait_for(PROBES[name], timeout=60)
    output, status = script(guest, name, "start")
    assert (status, output) == (0, f"Starting {name}: already running")
    first = console.check(f"cat /var/run/{name}.pid")

    output, status = script(guest, name, "restart")
    assert status == 0
    assert output.splitlines() == [f"Stopping {name}: OK", f"Starting {name}: OK"]
    console.wait_for(PROBES[name], timeout=60)
    assert console.check(f"cat /var/run/{name}.pid") != first
    assert script(guest, name, "status") == (f"{name} is running", 0)


def test_agent_script_restart_serves_again(guest: Guest) -> None:
    first = guest.console.check("cat /var/run/cube-agent.pid")
    output, status = script(guest, "cube-agent", "restart")
    assert status == 0, output
    guest.wait_for_agent()
    assert guest.console.check("cat /var/run/cube-agent.pid") != first
    assert sorted(m.id for m in guest.openai().models.list()) == guest.configured_models()

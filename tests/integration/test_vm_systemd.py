"""The systemd image, booted once for the whole module: services, models, agent, relaunch.

The tests run in file order on one VM and some change its state (they say so); the relaunches
come last. In the offline test image the engines are the doubles from tests/doubles/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from integration.emulator import scaled
from integration.guest import AGENT_KEY_FILE, Guest, boot
from integration.verity import check_verified_root, var_mount

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1500)]

SERVICES = {
    "ollama": "ollama",
    "cube-agent": "cube-agent",
    "vllm": "vllm",
    "llama-server": "llama-server",
}
VLLM_URL = "http://127.0.0.1:8000"
# A restart under TCG: up to 10 s for open TLS connections to close, then `keys init` and
# the agent's start-up (a new TLS key), all in Python on an emulated CPU.
RESTART_S = 120
LLAMA_SERVER_URL = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def guest(console_logs: Path) -> Iterator[Guest]:
    yield from boot("systemd", console_logs)


def show(guest: Guest, unit: str, prop: str) -> str:
    return guest.console.check(f"systemctl show -p {prop} --value {unit}").strip()


def wait_for_pull_models(guest: Guest, timeout: float = 180) -> None:
    guest.console.wait_for("systemctl is-active pull-models", timeout=timeout, interval=2)


def test_the_root_is_the_verified_image_read_only(guest: Guest) -> None:
    check_verified_root(guest)


def test_the_llama_cpp_model_is_in_the_measured_root(guest: Guest) -> None:
    model = guest.console.check(". /etc/default/llama-server && echo $LLAMA_SERVER_MODEL")
    assert guest.console.check(f"stat -c %d {model}") == guest.console.check("stat -c %d /")


def test_state_lives_on_the_state_disk(guest: Guest) -> None:
    """First boot: the blank state disk was formatted and holds /var, the agent's keys
    included; the journal says so."""
    assert var_mount(guest) == "/dev/vdb ext4"
    assert guest.console.check("readlink /etc/cube/agent") == "/var/lib/cube/agent"
    guest.admin_key()  # made by the agent's first start, on the state disk
    assert guest.console.check(f"findmnt -n -o SOURCE -T {AGENT_KEY_FILE}") == "/dev/vdb"
    log = guest.console.check("journalctl -b -o cat -u cube-state")
    assert "/dev/vdb is blank: formatting it (first boot)" in log


def test_boot_reaches_a_root_shell(guest: Guest) -> None:
    assert guest.console.check("id -u") == "0"
    guest.console.wait_for("systemctl is-active multi-user.target", timeout=180, interval=2)
    failed = guest.console.check("systemctl list-units --failed --plain --no-legend")
    for unit in ("ollama", "vllm", "pull-models", "cube-agent"):
        assert unit not in failed


@pytest.mark.parametrize("unit", sorted(SERVICES))
def test_engine_and_agent_run_as_their_own_user(guest: Guest, unit: str) -> None:
    guest.console.wait_for(f"systemctl is-active {unit}", timeout=120, interval=2)
    pid = show(guest, unit, "MainPID")
    assert pid != "0"
    user = guest.console.check(f"ps -o user= -p {pid}").strip()
    assert user == SERVICES[unit]
    assert guest.console.check(f"id -u {user}") != "0"


def test_pull_models_ran_as_its_own_user_and_pulled_every_model(guest: Guest) -> None:
    wait_for_pull_models(guest)
    assert show(guest, "pull-models", "Result") == "success"
    uid = guest.console.check("id -u cube-models")
    assert uid != "0"
    # Journal lines carry the uid of the process that wrote them.
    log = guest.console.check(f"journalctl -o cat _SYSTEMD_UNIT=pull-models.service _UID={uid}")
    assert "all models present" in log
    listed = guest.console.check("OLLAMA_HOST=127.0.0.1:11434 ollama list")
    for model in guest.configured_models():
        assert model in listed


# systemd-analyze security's exposure, 0 (locked down) to 10; issue 8 keeps the agent at 2.5.
EXPOSURE_LIMITS = {"cube-agent": 2.5, "pull-models": 2.5, "ollama": 3.0, "vllm": 3.0}


@pytest.mark.parametrize("unit", sorted(EXPOSURE_LIMITS))
def test_units_are_sandboxed_as_measured_in_the_vm(guest: Guest, unit: str) -> None:
    # Its last line: "→ Overall exposure level for cube-agent.service: 1.9 OK" (+ an emoji).
    out = guest.console.check(
        f"systemd-analyze security --no-pager {unit}.service"
        " | sed -n 's/.*Overall exposure level for [^:]*: \\([0-9.]*\\).*/\\1/p'"
    )
    score = float(out.strip())
    print(f"systemd-analyze security {unit}.service: {score}")
    assert score <= EXPOSURE_LIMITS[unit]


def test_models_show_through_the_agent_from_the_host(guest: Guest) -> None:
    guest.wait_for_agent()
    models = guest.configured_models()

    assert sorted(m.model for m in guest.ollama().list().models) == models
    assert sorted(m.id for m in guest.openai().models.list()) == models

    answer = guest.openai().chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "hello there"}]
    )
    assert "hello there" in answer.choices[0].message.content


def test_cube_verify_from_the_host_then_openai_through_the_verified_client(guest: Guest) -> None:
    """What a relying party does: one command, then the unmodified client."""
    guest.wait_for_agent()
    assert guest.attested, "the offline image carries the test TSM"
    done = subprocess.run(
        [sys.executable, "-m", "cube_verify", guest.agent_url, "--measurement",
         str(guest.measurement), "--certs", str(guest.trust_root)],
        capture_output=True, text=True, timeout=scaled(120), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["measurement"] == json.loads(guest.measurement.read_text())["measurement"]
    verified = guest.verify()
    assert verified.spki_sha256 == summary["tls_spki_sha256"]  # the agent's one key
    client = openai.OpenAI(
        base_url=f"{verified.url}/v1", api_key=guest.admin_key(), http_client=verified.client()
    )
    model = guest.configured_models()[0]
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "attested in the vm"}]
    )
    assert "attested in the vm" in answer.choices[0].message.content


def test_plain_http_from_the_host_is_refused(guest: Guest) -> None:
    guest.wait_for_agent()
    with pytest.raises(httpx.HTTPError):
        httpx.get(guest.agent_url.replace("https://", "http://") + "/health", timeout=10)
    # Plain HTTP exists only on the guest's loopback, for programs inside it.
    assert guest.console.check("curl -sf http://127.0.0.1:7002/health") == '{"status":"ok"}'
    listening = guest.console.check("ss -Hltn 'sport = :7002'")
    assert listening.split()[3] == "127.0.0.1:7002", listening


def test_agent_refuses_requests_without_a_key(guest: Guest) -> None:
    guest.wait_for_agent()
    with pytest.raises(openai.AuthenticationError):
        guest.openai(api_key="not-a-key").models.list()


def test_pull_models_retries_until_the_engine_is_up(guest: Guest) -> None:
    """Changes the VM: models are removed and pulled again, interval set to 1 s."""
    console = guest.console
    console.check("systemctl stop ollama && systemctl mask --runtime ollama")
    console.check("rm -rf /var/lib/ollama/models/manifests")
    guest.override("/etc/default/pull-models", 's/^CUBE_PULL_INTERVAL=.*/CUBE_PULL_INTERVAL="1"/')
    console.check("systemctl restart --no-block pull-models")
    invocation = "_SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value pull-models)"
    # At least three failed attempts while the engine is down, and it keeps going.
    console.wait_for(
        f"test $(journalctl -o cat {invocation} | grep -c 'engine not answering') -ge 3",
        timeout=90,
    )
    assert show(guest, "pull-models", "ActiveState") == "activating"

    console.check("systemctl unmask --runtime ollama && systemctl start ollama")
    wait_for_pull_models(guest, timeout=120)
    assert show(guest, "pull-models", "Result") == "success"
    log = console.check(f"journalctl -o cat {invocation}")
    assert "all models present" in log
    for model in guest.configured_models():
        assert f"pulled {model}" in log or f"pulled {model.removesuffix(':latest')}" in log

    guest.wait_for_agent()
    listed = sorted(m.id for m in guest.openai().models.list())
    assert listed == guest.configured_models()


def test_switching_the_target_url_moves_traffic_to_vllm(guest: Guest) -> None:
    """Changes the VM for the duration of the test, then puts the ollama backend back."""
    console = guest.console
    env = "/etc/default/cube-agent"
    vllm_model = console.check(". /etc/default/vllm && echo $VLLM_MODEL")
    question = [{"role": "user", "content": "which engine"}]
    try:
        console.wait_for(f"curl -sf {VLLM_URL}/v1/models", timeout=60)
        # One variable, as the seed promises: the agent detects the engine's kind.
        guest.override(
            env, f's|^UV_CUBE_AGENT_TARGET_URL=.*|UV_CUBE_AGENT_TARGET_URL="{VLLM_URL}"|'
        )
        console.check("systemctl restart cube-agent", timeout=RESTART_S)
        guest.wait_for_agent()  # verifies the new key the restart made
        client = guest.openai()
        assert [m.id for m in client.models.list()] == [vllm_model]
        answer = client.chat.completions.create(model=vllm_model, messages=question)
        assert answer.model == vllm_model
        assert "which engine" in answer.choices[0].message.content
    finally:
        guest.restore(env)
        console.check("systemctl restart cube-agent", timeout=RESTART_S)
    guest.wait_for_agent()
    assert vllm_model not in [m.id for m in guest.openai().models.list()]


def test_switching_to_llama_cpps_real_server_keeps_both_apis_working(guest: Guest) -> None:
    """llama.cpp's real llama-server (a tiny model: gibberish, real protocol) behind the
    agent: OpenAI calls pass through, Ollama calls are translated. Restores the backend."""
    console = guest.console
    env = "/etc/default/cube-agent"
    try:
        console.wait_for(f"curl -sf {LLAMA_SERVER_URL}/health", timeout=120, interval=2)
        guest.override(
            env, f's|^UV_CUBE_AGENT_TARGET_URL=.*|UV_CUBE_AGENT_TARGET_URL="{LLAMA_SERVER_URL}"|'
        )
        console.check("systemctl restart cube-agent", timeout=RESTART_S)
        guest.wait_for_agent()
        client = guest.openai()
        model = client.models.list().data[0].id
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
        assert answer.choices[0].finish_reason in ("stop", "length")
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=8,
                stream=True,
            )
        )
        assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
        stream = guest.ollama().chat(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        last = list(stream)[-1]
        assert last.done
    finally:
        guest.restore(env)
        console.check("systemctl restart cube-agent", timeout=RESTART_S)
    guest.wait_for_agent()


def test_a_killed_engine_is_restarted_by_systemd(guest: Guest) -> None:
    console = guest.console
    before = show(guest, "ollama", "MainPID")
    console.check(f"kill -9 {before}")
    console.wait_for(
        f'test "$(systemctl show -p MainPID --value ollama)" -ne 0 -a '
        f'"$(systemctl show -p MainPID --value ollama)" -ne {before}',
        timeout=60,
    )
    console.wait_for("OLLAMA_HOST=127.0.0.1:11434 ollama list", timeout=60)
    assert show(guest, "ollama", "NRestarts") != "0"


def monotonic_us(guest: Guest, unit: str, prop: str) -> int:
    return int(show(guest, unit, f"{prop}Monotonic"))


def test_an_unreachable_engine_does_not_hold_up_boot(guest: Guest) -> None:
    """Changes the VM: a launch with Ollama masked on the kernel command line (the root is
    read-only), so pull-models finds no engine and retries. multi-user.target must be
    reached while pull-models is still at it: a pull that held up boot would end first."""
    guest.relaunch(kernel_args="systemd.mask=ollama.service")
    console = guest.console
    console.wait_for("systemctl is-active multi-user.target", timeout=180, interval=2)
    assert show(guest, "ollama", "LoadState") == "masked"
    reached = monotonic_us(guest, "multi-user.target", "ActiveEnterTimestamp")
    started = monotonic_us(guest, "pull-models", "ExecMainStartTimestamp")
    assert 0 < started < reached, "pull-models had not started when boot finished"
    ended = monotonic_us(guest, "pull-models", "ExecMainExitTimestamp")  # 0: still running
    assert ended == 0 or ended > reached, "boot waited for pull-models"
    log = console.check("journalctl -b -o cat -u pull-models")
    assert "engine not answering" in log


def test_a_relaunch_keeps_the_state_disk(guest: Guest) -> None:
    """Pulled models and the agent's keys live on the state disk: powering the VM off and
    launching it again (a confidential VM's reboot) keeps them."""
    models = guest.configured_models()
    key = guest.admin_key()
    boot_id = guest.console.check("cat /proc/sys/kernel/random/boot_id")
    guest.relaunch()
    assert guest.console.check("cat /proc/sys/kernel/random/boot_id") != boot_id
    assert guest.console.check(f"cat {AGENT_KEY_FILE}") == key
    assert "formatting" not in guest.console.check("journalctl -b -o cat -u cube-state")
    wait_for_pull_models(guest)
    # Nothing was pulled again on this boot: every model was already there.
    log = guest.console.check("journalctl -b -o cat -u pull-models")
    assert "pulling" not in log
    guest.wait_for_agent()
    assert sorted(m.id for m in guest.openai().models.list()) == models

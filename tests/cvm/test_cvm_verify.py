"""cube-verify against the real agent over TLS, with a signed fake TSM: the genuine case,
and each attack or misconfiguration rejected with its own error.

The root of trust is made in the test (support/snp_chain.py: ARK and ASK RSA-PSS, VCEK
ECDSA P-384 with AMD's extensions); the measurement is what scripts/measure predicts for
the test images, so `make measure` and the verifier are checked to agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import cube_verify
import httpx
import ollama
import openai
import pytest
from attested import Mitm, port_answers_plain_http, start_agent
from cube_verify import snp
from cvm_support import MEASURE, script_env
from support.snp_chain import CHIP_ID, TCB, Chain, make_chain, tcb_value

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="session")
def chain() -> Chain:
    return make_chain()


@pytest.fixture(scope="session")
def other_chain() -> Chain:
    """Same names and shape, another root: what a forger would bring."""
    return make_chain()


@pytest.fixture
def files(tmp_path: Path, chain: Chain) -> dict[str, Path]:
    return chain.write(tmp_path / "chain")


@pytest.fixture
def trust(tmp_path: Path, chain: Chain) -> Path:
    return chain.trust_dir(tmp_path / "trusted")


@pytest.fixture
def measurement(images: Path, tmp_path: Path) -> Path:
    """measurement.json exactly as `make measure` writes it for the test images."""
    out = tmp_path / "measurement.json"
    proc = subprocess.run(
        [sys.executable, str(MEASURE), "--output", str(out)],
        env=script_env(images),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def measured(measurement: Path) -> str:
    return json.loads(measurement.read_text())["measurement"]


@pytest.fixture
def tsm(fake_tsm: Callable[..., Path], files: dict[str, Path], measurement: Path):
    """`tsm(*extra_args)`: a fake TSM that signs as the chain's VCEK, the launch digest
    scripts/measure predicted, the chain as its certificate table."""

    def mount(*extra: str) -> Path:
        args = ["--measurement", measured(measurement), "--vcek-key", str(files["vcek_key"])]
        args += ["--certs", str(files["table"]), "--chip-id", CHIP_ID.hex()]
        args += ["--tcb", hex(tcb_value(TCB)), *extra]
        return fake_tsm(*args)

    return mount


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., object]]:
    started = []

    def start(tsm_root: Path, **settings: str):
        agent = start_agent(tmp_path / f"agent{len(started)}", tsm_root, **settings)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def mitms() -> Iterator[Callable[..., Mitm]]:
    started: list[Mitm] = []

    def start(upstream: str, mode: str = "forward") -> Mitm:
        started.append(Mitm(upstream, mode))
        return started[-1]

    yield start
    for mitm in started:
        mitm.stop()


def test_genuine_agent_verifies_and_the_unmodified_clients_talk_through_it(
    tsm, agents, trust: Path, measurement: Path, openai_double
) -> None:
    agent = agents(tsm(), target_url=openai_double.url)
    verified = cube_verify.verify(agent.url, measurement, trust)
    assert verified.provider == "sev_guest"
    assert verified.measurement == measured(measurement)
    assert any("TLS key" in c for c in verified.checks)

    chat = openai.OpenAI(
        base_url=f"{verified.url}/v1", api_key=agent.key, http_client=verified.client()
    )
    answer = chat.chat.completions.create(
        model=openai_double.model, messages=[{"role": "user", "content": "attested hello"}]
    )
    assert "attested hello" in answer.choices[0].message.content

    native = ollama.Client(
        host=verified.url,
        verify=verified.ssl_context(),
        headers={"Authorization": f"Bearer {agent.key}"},
    )
    assert [m.model for m in native.list().models] == [openai_double.model]


def test_cli_passes_on_the_genuine_agent_and_names_the_failed_check(
    tsm, agents, trust: Path, measurement: Path, tmp_path: Path, mitms
) -> None:
    agent = agents(tsm())
    cli = [sys.executable, "-m", "cube_verify", "--measurement", str(measurement)]
    ok = subprocess.run(
        [*cli, agent.url, "--certs", str(trust), "--pin-out", str(tmp_path / "pin.pem")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["measurement"] == measured(measurement)
    assert (tmp_path / "pin.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")

    mitm = mitms(agent.url)
    bad = subprocess.run(
        [*cli, mitm.url, "--certs", str(trust)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("cube-verify: tls-key: swapped TLS key")


def test_a_tls_proxy_with_its_own_certificate_is_caught(
    tsm, agents, trust: Path, measurement: Path, mitms
) -> None:
    agent = agents(tsm())
    mitm = mitms(agent.url)
    with pytest.raises(cube_verify.KeyBindingError, match="swapped TLS key"):
        cube_verify.verify(mitm.url, measurement, trust)
    # The proxy relayed a genuine report (signature, measurement, nonce all fine): only
    # the key binding tells. And no API key was ever sent to it.
    assert mitm.recorded is not None
    assert not any("authorization" in h for h in mitm.seen_headers)


def test_the_pinned_client_refuses_a_proxy_later(
    tsm, agents, trust: Path, measurement: Path, mitms
) -> None:
    agent = agents(tsm())
    verified = cube_verify.verify(agent.url, measurement, trust)
    mitm = mitms(agent.url)
    with verified.client() as client:
        assert client.get("/health").status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(f"{mitm.url}/health")
    assert mitm.seen_headers == []


def test_wrong_nonce(tsm, agents, trust: Path, measurement: Path, mitms) -> None:
    agent = agents(tsm())
    mitm = mitms(agent.url, "rewrite-nonce")
    with pytest.raises(cube_verify.NonceError, match="wrong nonce"):
        cube_verify.verify(mitm.url, measurement, trust)


def test_replayed_report(tsm, agents, trust: Path, measurement: Path, mitms) -> None:
    agent = agents(tsm())
    mitm = mitms(agent.url, "replay")
    with pytest.raises(cube_verify.KeyBindingError):
        cube_verify.verify(mitm.url, measurement, trust)  # records this genuine answer
    with pytest.raises(cube_verify.ReplayError, match="replayed report"):
        cube_verify.verify(mitm.url, measurement, trust)


def test_measurement_mismatch(tsm, agents, trust: Path, measurement: Path, images, tmp_path):
    agent = agents(tsm())
    # A prediction for another image: one more byte of kernel.
    kernel = images / "bzImage"
    kernel.write_bytes(kernel.read_bytes() + b"\0")
    other = tmp_path / "other.json"
    subprocess.run(
        [sys.executable, str(MEASURE), "--output", str(other)],
        env=script_env(images),
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert measured(other) != measured(measurement)
    with pytest.raises(cube_verify.MeasurementError, match="measurement mismatch"):
        cube_verify.verify(agent.url, other, trust)


def test_debug_policy(tsm, agents, trust: Path, measurement: Path) -> None:
    agent = agents(tsm("--policy", hex(0x30000 | snp.POLICY_DEBUG)))
    with pytest.raises(cube_verify.PolicyError, match="debug policy"):
        cube_verify.verify(agent.url, measurement, trust)


def test_bad_signature(fake_tsm, files, agents, trust: Path, measurement: Path, other_chain):
    """Signed by a P-384 key that is not the VCEK in the certificate table."""
    forged = other_chain.write(files["table"].parent.parent / "forged")
    root = fake_tsm(
        "--measurement", measured(measurement), "--vcek-key", str(forged["vcek_key"]),
        "--certs", str(files["table"]), "--chip-id", CHIP_ID.hex(),
        "--tcb", hex(tcb_value(TCB)),
    )  # fmt: skip
    agent = agents(root)
    with pytest.raises(cube_verify.SignatureError, match="bad signature"):
        cube_verify.verify(agent.url, measurement, trust)


def test_untrusted_chain(tsm, agents, measurement: Path, other_chain: Chain, tmp_path) -> None:
    """A whole chain that holds together, under a root the relying party does not trust."""
    agent = agents(tsm())
    with pytest.raises(cube_verify.ChainError, match="untrusted chain"):
        cube_verify.verify(agent.url, measurement, other_chain.trust_dir(tmp_path / "t"))


def test_chain_from_the_evidence_must_end_in_the_trusted_root(
    fake_tsm, agents, files, measurement: Path, other_chain: Chain, trust: Path, tmp_path
) -> None:
    """The host hands out a forged table (forged ARK, ASK, VCEK) and signs with it."""
    forged = other_chain.write(tmp_path / "forged")
    root = fake_tsm(
        "--measurement", measured(measurement), "--vcek-key", str(forged["vcek_key"]),
        "--certs", str(forged["table"]), "--chip-id", CHIP_ID.hex(),
        "--tcb", hex(tcb_value(TCB)),
    )  # fmt: skip
    agent = agents(root)
    with pytest.raises(cube_verify.ChainError, match="not the trusted AMD root"):
        cube_verify.verify(agent.url, measurement, trust)


def test_minimum_tcb(tsm, agents, trust: Path, measurement: Path) -> None:
    agent = agents(tsm())
    assert cube_verify.verify(agent.url, measurement, trust, min_tcb="snp=23,microcode=72")
    with pytest.raises(cube_verify.TcbError, match="below the minimum"):
        cube_verify.verify(agent.url, measurement, trust, min_tcb="snp=24")


def test_vcek_for_another_tcb(tsm, agents, trust: Path, measurement: Path) -> None:
    newer = dict(TCB, snp=TCB["snp"] + 1)
    agent = agents(tsm("--tcb", hex(tcb_value(newer))))
    with pytest.raises(cube_verify.TcbError, match="VCEK is for snp=23"):
        cube_verify.verify(agent.url, measurement, trust)


def test_no_trusted_root_is_an_error(tsm, agents, measurement: Path) -> None:
    agent = agents(tsm())
    with pytest.raises(cube_verify.ChainError, match="no trusted AMD root"):
        cube_verify.verify(agent.url, measurement)


def test_chain_from_a_directory_when_the_host_gives_no_table(
    tsm, agents, files: dict[str, Path], measurement: Path, trust: Path
) -> None:
    agent = agents(tsm("--no-aux"))
    with pytest.raises(cube_verify.ChainError, match="no ASK and VCEK"):
        cube_verify.verify(agent.url, measurement, trust)  # the root only
    # ark.pem, ask.pem, vcek.pem as snpguest fetch writes them
    assert cube_verify.verify(agent.url, measurement, files["ark"].parent)


def test_plain_http_is_not_served_on_the_tls_port(tsm, agents) -> None:
    agent = agents(tsm())
    port = int(agent.url.rsplit(":", 1)[1])
    assert not port_answers_plain_http("127.0.0.1", port)
    with pytest.raises(cube_verify.VerifyError, match="https:// only"):
        cube_verify.verify(agent.url.replace("https", "http"), {"measurement": "00"})


def test_plain_loopback_listener_beside_tls(tsm, agents, trust: Path, measurement: Path) -> None:
    from support import free_port, wait_for_url

    plain = free_port()
    agent = agents(tsm(), plain_port=str(plain))
    wait_for_url(f"http://127.0.0.1:{plain}/health", timeout=30)
    # Both listeners are one agent: the plain one's evidence binds the TLS key too.
    verified = cube_verify.verify(agent.url, measurement, trust)
    body = httpx.post(
        f"http://127.0.0.1:{plain}/attestation", json={"nonce": "cd" * 32}, timeout=30
    ).json()
    assert body["tls_spki_sha256"] == verified.spki_sha256


def test_curl_pinned_to_the_attested_key(tsm, agents, trust: Path, measurement: Path, mitms):
    """The summary's curl_pin: `curl -k --pinnedpubkey PIN` reaches only the attested key."""
    agent = agents(tsm())
    pin = cube_verify.verify(agent.url, measurement, trust).curl_pin
    mitm = mitms(agent.url)

    def curl(url: str) -> int:
        return subprocess.run(
            ["curl", "-sfk", "--pinnedpubkey", pin, f"{url}/health"],
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode

    assert curl(agent.url) == 0
    assert curl(mitm.url) == 90  # curl: "SSL: public key does not match pinned public key"

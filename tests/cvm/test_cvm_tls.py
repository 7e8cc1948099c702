"""The agent's listeners: HTTPS off the loopback with a key made at start-up, plain HTTP
only on the loopback unless a sandbox says otherwise, a user's certificate when given."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cube_agent import tls
from cube_agent.keys import KeyFile
from support import Process, free_port, wait_for_url

AGENT = [sys.executable, "-m", "cube_agent", "serve"]


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def served_cert(port: int) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        insecure().wrap_socket(raw) as conn,
    ):
        return conn.getpeercert(binary_form=True)


def spki_sha256(cert_der: bytes) -> str:
    key = x509.load_der_x509_certificate(cert_der).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        AGENT, env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=False
    )


def start(tmp_path: Path, **settings: str) -> tuple[Process, int]:
    keys = KeyFile(tmp_path / "keys" / "keys.json")
    keys.add("admin", ["*"], admin=True)
    keys.path.parent.mkdir(exist_ok=True)
    keys.save()
    port = free_port()
    env = {
        "UV_CUBE_AGENT_TARGET_URL": "http://127.0.0.1:9",
        "UV_CUBE_AGENT_PORT": str(port),
        "UV_CUBE_AGENT_KEY_FILE": str(keys.path),
        "UV_CUBE_AGENT_TSM_ROOT": str(tmp_path / "no-tsm"),
        **{f"UV_CUBE_AGENT_{k.upper()}": v for k, v in settings.items()},
    }
    process = Process(AGENT, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if not process.alive() or time.monotonic() > deadline:
                process.stop()
                raise RuntimeError(f"the agent did not listen:\n{process.output()}") from None
            time.sleep(0.1)
    return process, port


def https_health(port: int) -> int:
    return httpx.get(f"https://127.0.0.1:{port}/health", verify=insecure(), timeout=10).status_code


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"UV_CUBE_AGENT_HOST": "0.0.0.0", "UV_CUBE_AGENT_TLS": "off"},
            "cube-agent: UV_CUBE_AGENT_TLS: off would serve plain HTTP on 0.0.0.0, off the "
            "loopback: turn TLS on, or set UV_CUBE_AGENT_INSECURE_PLAIN_HTTP=on (sandbox only)",
        ),
        (
            {"UV_CUBE_AGENT_TLS": "on", "UV_CUBE_AGENT_PLAIN_PORT": "7002",
             "UV_CUBE_AGENT_PLAIN_HOST": "10.0.2.15"},
            "cube-agent: UV_CUBE_AGENT_PLAIN_HOST: 10.0.2.15 is not a loopback address; plain "
            "HTTP stays inside the guest (UV_CUBE_AGENT_INSECURE_PLAIN_HTTP=on: sandbox only)",
        ),
        (
            {"UV_CUBE_AGENT_PLAIN_PORT": "7002"},
            "cube-agent: UV_CUBE_AGENT_PLAIN_PORT: the main listener is plain HTTP already "
            "(TLS off)",
        ),
        (
            {"UV_CUBE_AGENT_TLS": "on", "UV_CUBE_AGENT_TLS_CERT_FILE": "/etc/hostname"},
            "cube-agent: UV_CUBE_AGENT_TLS_CERT_FILE: give both UV_CUBE_AGENT_TLS_CERT_FILE "
            "and _KEY_FILE",
        ),
        ({"UV_CUBE_AGENT_TLS": "maybe"}, "cube-agent: UV_CUBE_AGENT_TLS=maybe: "),
    ],
)  # fmt: skip
def test_unsafe_or_bad_listener_settings_stop_the_agent(env: dict[str, str], line: str) -> None:
    done = run(env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), done.stderr


def test_off_the_loopback_it_serves_https_by_default(tmp_path: Path) -> None:
    process, port = start(tmp_path, host="0.0.0.0")
    try:
        assert https_health(port) == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        process.stop()


def test_a_sandbox_may_serve_plain_http_off_the_loopback_with_a_warning(tmp_path: Path) -> None:
    process, port = start(tmp_path, host="0.0.0.0", tls="off", insecure_plain_http="on")
    try:
        wait_for_url(f"http://127.0.0.1:{port}/health", timeout=30)
    finally:
        process.stop()
    assert "plain HTTP off the loopback" in process.output()


def test_each_start_makes_a_new_key_that_is_never_written(tmp_path: Path) -> None:
    seen = []
    for i in range(2):
        work = tmp_path / f"run{i}"
        work.mkdir()
        process, port = start(work, tls="on", plain_port=str(free_port()))
        try:
            cert = served_cert(port)
            seen.append(spki_sha256(cert))
            # No file the agent holds open, and none it left, has a private key in it.
            for fd in Path(f"/proc/{process.pid}/fd").iterdir():
                try:
                    target = Path(os.readlink(fd))
                except FileNotFoundError:  # closed meanwhile
                    continue
                if target.is_file():
                    assert b"PRIVATE KEY" not in target.read_bytes()[: 1 << 20], target
        finally:
            process.stop()
        left = [p for p in work.rglob("*") if p.is_file() and p.name != "keys.json"]
        assert left == []
    assert seen[0] != seen[1]


@pytest.mark.parametrize("given", [False, True])
def test_the_serving_agent_keeps_no_cryptography_loaded(tmp_path: Path, given: bool) -> None:
    """Keys and certificates are handled in a child process: cryptography is 10 MB of RSS
    for the whole life of a process that imports it once (the idle RSS target)."""
    settings = {"tls": "on"}
    if given:
        identity = tls.generate()
        (tmp_path / "cert.pem").write_bytes(identity.cert_pem)
        (tmp_path / "key.pem").write_bytes(identity.key_pem)
        settings |= {"tls_cert_file": str(tmp_path / "cert.pem"),
                     "tls_key_file": str(tmp_path / "key.pem")}  # fmt: skip
    process, port = start(tmp_path, **settings)
    try:
        https_health(port)
        maps = Path(f"/proc/{process.pid}/maps").read_text()
    finally:
        process.stop()
    assert "/cryptography/" not in maps


@pytest.mark.parametrize("sends", [b"", b"\x16\x03\x01\x02\x00\x01"])
def test_a_tls_handshake_that_never_ends_is_dropped_at_the_header_timeout(
    tmp_path: Path, sends: bytes
) -> None:
    """Silence, or the first bytes of a ClientHello and no more: the event loop would wait
    60 s for the rest, and such a connection was not yet under the connection cap."""
    process, port = start(tmp_path, tls="on", header_timeout="2")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(sends)
            started = time.monotonic()
            try:
                while conn.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            waited = time.monotonic() - started
        assert https_health(port) == 200
    finally:
        process.stop()
    assert 1.5 < waited < 8, f"closed after {waited:.1f} s"


def test_a_user_supplied_certificate_is_served_and_bound(tmp_path: Path, fake_tsm) -> None:
    given = tls.generate(["cvm.example"])
    (tmp_path / "cert.pem").write_bytes(given.cert_pem)
    (tmp_path / "key.pem").write_bytes(given.key_pem)
    root = fake_tsm()
    process, port = start(
        tmp_path,
        tls="on",
        tls_cert_file=str(tmp_path / "cert.pem"),
        tls_key_file=str(tmp_path / "key.pem"),
        tsm_root=str(root),
    )
    try:
        cert = served_cert(port)
        body = httpx.post(
            f"https://127.0.0.1:{port}/attestation",
            json={"nonce": "00" * 32},
            verify=insecure(),
            timeout=30,
        ).json()
    finally:
        process.stop()
    assert spki_sha256(cert) == given.spki_sha256 == body["tls_spki_sha256"]


def test_a_key_that_is_not_the_certificates_stops_the_agent(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_bytes(tls.generate().cert_pem)
    (tmp_path / "key.pem").write_bytes(tls.generate().key_pem)
    done = run(
        {
            "UV_CUBE_AGENT_TLS": "on",
            "UV_CUBE_AGENT_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
            "UV_CUBE_AGENT_TLS_KEY_FILE": str(tmp_path / "key.pem"),
        }
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"cube-agent: {tmp_path / 'key.pem'} is not the key of the certificate in "
        f"{tmp_path / 'cert.pem'}"
    )


def test_every_worker_serves_and_binds_the_same_key(tmp_path: Path, fake_tsm) -> None:
    root = fake_tsm()
    process, port = start(tmp_path, tls="on", workers="2", tsm_root=str(root))
    try:
        deadline = time.monotonic() + 60
        while True:  # both workers up: the supervisor starts them one after the other
            try:
                https_health(port)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, process.output()
                time.sleep(0.2)
        served, bound = set(), set()
        for _ in range(12):  # new connections land on either worker
            served.add(spki_sha256(served_cert(port)))
            with httpx.Client(verify=insecure(), timeout=30) as client:
                answer = client.post(
                    f"https://127.0.0.1:{port}/attestation", json={"nonce": "11" * 32}
                ).json()
            bound.add(answer["tls_spki_sha256"])
    finally:
        process.stop()
    assert len(served) == 1 and served == bound


@pytest.mark.parametrize("which", ["main", "plain"])
def test_a_listener_that_cannot_bind_stops_the_agent(tmp_path: Path, which: str) -> None:
    """Both listeners or none: a port taken by someone else is a failed start, not an
    agent serving half of what it was configured for."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        keys = KeyFile(tmp_path / "keys.json")
        keys.add("admin", ["*"], admin=True)
        keys.save()
        env = {
            "UV_CUBE_AGENT_KEY_FILE": str(keys.path),
            "UV_CUBE_AGENT_TLS": "on",
            "UV_CUBE_AGENT_PORT": busy if which == "main" else str(free_port()),
            "UV_CUBE_AGENT_PLAIN_PORT": busy if which == "plain" else str(free_port()),
        }
        done = run(env)
    assert done.returncode != 0, done.stderr
    assert "address already in use" in done.stderr.lower()

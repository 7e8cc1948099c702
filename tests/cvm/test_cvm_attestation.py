"""POST /attestation through the agent's app, against fake_tsm.py's configfs-tsm mount.

REPORT_DATA is SHA-256(prefix || TLS SPKI) || nonce (cube_agent.tls); the app is given the
SPKI of a key made here, as the CLI gives it the key its HTTPS listener serves."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import fake_tsm
import httpx
import pytest
from cube_agent import tls
from cube_agent.app import create_app
from cube_agent.attestation import MAX_BODY_BYTES
from cube_agent.config import Settings
from cube_agent.keys import KeyFile

MEASUREMENT = bytes(range(48))
IDENTITY = tls.generate()
SPKI = IDENTITY.spki_der

pytestmark = pytest.mark.anyio  # anyio's pytest plugin comes with httpx


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def key(tmp_path: Path) -> str:
    """A plain (non-admin) key for one domain: any valid key may ask for evidence."""
    keys = KeyFile(tmp_path / "keys.json")
    plaintext = keys.add("tenant", ["default"])
    keys.add("admin", ["*"], admin=True)
    keys.save()
    return plaintext


def agent(tmp_path: Path, tsm_root: Path, spki: bytes | None = SPKI) -> httpx.AsyncClient:
    settings = Settings(key_file=tmp_path / "keys.json", tsm_root=tsm_root)
    transport = httpx.ASGITransport(app=create_app(settings, tls_spki=spki))
    return httpx.AsyncClient(transport=transport, base_url="http://agent")


@pytest.fixture
async def attest(
    tmp_path: Path, key: str, fake_tsm: Callable[..., Path]
) -> AsyncIterator[Callable[..., object]]:
    """`await attest(body, *fake_tsm_args)` -> (response, tsm root)."""
    clients: list[httpx.AsyncClient] = []

    async def call(body: object, *args: str, headers: dict | None = None):
        root = fake_tsm("--measurement", MEASUREMENT.hex(), *args)
        client = agent(tmp_path, root)
        clients.append(client)
        auth = {"authorization": f"Bearer {key}"} if headers is None else headers
        return await client.post("/attestation", json=body, headers=auth), root

    yield call
    for client in clients:
        await client.aclose()


def nonce() -> str:
    return secrets.token_hex(32)


def bound(sent: str, spki: bytes | None = SPKI) -> bytes:
    """REPORT_DATA as docs/attestation.md specifies it, computed here by hand."""
    if spki is None:
        return bytes(32) + bytes.fromhex(sent)
    return hashlib.sha256(b"cube-hal attested-tls v1\0" + spki).digest() + bytes.fromhex(sent)


async def test_report_binds_the_tls_key_and_the_nonce(attest) -> None:
    sent = nonce()
    response, root = await attest({"nonce": sent})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "sev_guest" and body["nonce"] == sent
    report = base64.b64decode(body["report"], validate=True)
    assert len(report) == fake_tsm.REPORT_SIZE
    # REPORT_DATA: the key's hash then the caller's nonce; MEASUREMENT is the launch digest
    assert report[0x50:0x90] == bound(sent) == bytes.fromhex(body["report_data"])
    assert body["tls_spki_sha256"] == hashlib.sha256(SPKI).hexdigest()
    assert report[0x90:0xC0] == MEASUREMENT
    assert base64.b64decode(body["aux"]) == b"fake certificate table\0"
    assert os.listdir(root) == []  # the entry is gone


async def test_uppercase_hex_is_accepted(attest) -> None:
    sent = nonce().upper()
    response, _ = await attest({"nonce": sent})
    assert response.status_code == 200
    report = base64.b64decode(response.json()["report"])
    assert report[0x50:0x90] == bound(sent.lower())


async def test_without_a_tls_key_the_key_half_is_zero(tmp_path, key, fake_tsm) -> None:
    sent = nonce()
    async with agent(tmp_path, fake_tsm(), spki=None) as client:
        response = await client.post("/attestation", json={"nonce": sent})
    assert response.status_code == 200
    assert response.json()["tls_spki_sha256"] is None
    assert base64.b64decode(response.json()["report"])[0x50:0x90] == bound(sent, None)


async def test_no_auxblob_is_null(attest) -> None:
    response, _ = await attest({"nonce": nonce()}, "--no-aux")
    assert response.status_code == 200 and response.json()["aux"] is None


async def test_each_request_gets_its_own_entry(tmp_path: Path, key: str, fake_tsm) -> None:
    root = fake_tsm("--measurement", MEASUREMENT.hex())
    sent = [nonce() for _ in range(6)]
    async with agent(tmp_path, root) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/attestation", json={"nonce": n}, headers={"authorization": f"Bearer {key}"}
                )
                for n in sent
            )
        )
    for n, response in zip(sent, responses, strict=True):
        assert response.status_code == 200, response.text
        assert base64.b64decode(response.json()["report"])[0x50:0x90] == bound(n)
    assert os.listdir(root) == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"nonce": "ab" * 16}, "32 bytes"),  # 16 bytes: too short
        ({"nonce": "ab" * 33}, "32 bytes"),
        # 64 bytes, the old raw REPORT_DATA: choosing it would let anyone bind any key
        ({"nonce": "ab" * 64}, "32 bytes"),
        ({"nonce": "zz" * 32}, "hexadecimal"),
        ({"nonce": "0x" + "ab" * 31}, "hexadecimal"),
        # bytes.fromhex skips whitespace: these were taken as 1 byte of nonce (issue 14)
        ({"nonce": "ff" + " " * 62}, "hexadecimal"),
        ({"nonce": "ff" + " " * 126}, "hexadecimal"),
        ({"nonce": " " + "ab" * 31 + "a"}, "hexadecimal"),
        ({"nonce": "ab" * 31 + "a\n"}, "hexadecimal"),
        ({"nonce": 12}, "nonce"),
        ({"nonse": nonce()}, "nonce"),
        ([], "nonce"),
        ("not an object", "nonce"),
    ],
)
async def test_bad_nonce_is_400_and_touches_nothing(attest, body: object, words: str) -> None:
    response, root = await attest(body)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert words in message
    assert os.listdir(root) == []


async def test_body_that_is_not_json_is_400(tmp_path: Path, key: str, fake_tsm) -> None:
    async with agent(tmp_path, fake_tsm()) as client:
        response = await client.post(
            "/attestation", content=b"{nonce", headers={"authorization": f"Bearer {key}"}
        )
    assert response.status_code == 400 and response.json()["error"]["message"]


async def test_no_tee_is_501(tmp_path: Path, key: str) -> None:
    async with agent(tmp_path, tmp_path / "no" / "tsm" / "report") as client:
        response = await client.post(
            "/attestation", json={"nonce": nonce()}, headers={"authorization": f"Bearer {key}"}
        )
    assert response.status_code == 501
    assert "no TEE" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer cube_not-a-key"}, {"authorization": "Basic x"}]
)
async def test_no_key_is_needed(attest, headers: dict) -> None:
    """A relying party verifies BEFORE it sends its API key anywhere."""
    response, root = await attest({"nonce": nonce()}, headers=headers)
    assert response.status_code == 200
    assert os.listdir(root) == []


class CountingBody:
    """A request body that counts what the server pulled from it."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self):
        while self.sent < self.total:
            self.sent += self.chunk
            yield b" " * self.chunk


@pytest.mark.parametrize("declare_length", [True, False])
async def test_a_huge_body_is_refused_before_it_is_read(
    tmp_path: Path, key: str, fake_tsm, declare_length: bool
) -> None:
    """300 MB at /attestation, with and without Content-Length: 413 after at most
    MAX_BODY_BYTES read (plus one chunk in flight), the TSM never touched."""
    root = fake_tsm()
    body = CountingBody(300 * 1024 * 1024)
    headers = {"content-type": "application/json"}
    if declare_length:
        headers["content-length"] = str(body.total)
    async with agent(tmp_path, root) as client:
        response = await client.post("/attestation", content=body, headers=headers)
    assert response.status_code == 413
    assert str(MAX_BODY_BYTES) in response.json()["error"]["message"]
    assert body.sent <= (0 if declare_length else MAX_BODY_BYTES + body.chunk) + body.chunk
    assert os.listdir(root) == []


async def test_a_huge_body_over_a_real_socket(tmp_path: Path, key: str, fake_tsm) -> None:
    """The same through uvicorn: the answer comes while the client still has 300 MB to send."""
    import asyncio as aio

    import uvicorn
    from support import free_port

    settings = Settings(key_file=tmp_path / "keys.json", tsm_root=fake_tsm())
    port = free_port()
    config = uvicorn.Config(create_app(settings, tls_spki=SPKI), port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = aio.create_task(server.serve())
    while not server.started:
        await aio.sleep(0.02)
    try:
        reader, writer = await aio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /attestation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 314572800\r\n\r\n" + b" " * 4096
        )
        await writer.drain()
        status = await aio.wait_for(reader.readline(), 10)
        writer.close()
    finally:
        server.should_exit = True
        await task
    assert status.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (("--race",), 409, "changed while in use"),
        (("--fail-errno", str(errno.EIO)), 500, "attestation report failed"),
        (("--fail-errno", str(errno.EBUSY)), 503, "busy"),
    ],
)
async def test_tee_failures_still_remove_the_entry(attest, args, status: int, words: str) -> None:
    response, root = await attest({"nonce": nonce()}, *args)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]
    assert os.listdir(root) == []


async def test_request_schema_is_documented(tmp_path: Path, key: str) -> None:
    async with agent(tmp_path, tmp_path) as client:
        schema = (await client.get("/openapi.json")).json()
    post = schema["paths"]["/attestation"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert "nonce" in body["properties"]


async def test_too_many_waiting_is_503_and_touches_nothing(tmp_path: Path, key, fake_tsm) -> None:
    """Anyone may ask (no key), so reports queue one at a time with a bounded line."""
    from cube_agent.attestation import MAX_WAITING, _Gate

    root = fake_tsm()
    settings = Settings(key_file=tmp_path / "keys.json", tsm_root=root)
    app = create_app(settings, tls_spki=SPKI)
    gate = _Gate()
    gate.waiting = MAX_WAITING  # as if that many were queued already
    app.state.attestation_gate = gate
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        response = await client.post("/attestation", json={"nonce": nonce()})
        assert response.status_code == 503 and "too many" in response.json()["error"]["message"]
        gate.waiting = 0
        assert (await client.post("/attestation", json={"nonce": nonce()})).status_code == 200
    assert os.listdir(root) == []

"""POST /attestation through the agent's app, against fake_tsm.py's configfs-tsm mount."""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import fake_tsm
import httpx
import pytest
from cube_agent.app import create_app
from cube_agent.config import Settings
from cube_agent.keys import KeyFile

MEASUREMENT = bytes(range(48))

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


def agent(tmp_path: Path, tsm_root: Path) -> httpx.AsyncClient:
    settings = Settings(key_file=tmp_path / "keys.json", tsm_root=tsm_root)
    transport = httpx.ASGITransport(app=create_app(settings))
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
    return secrets.token_hex(64)


async def test_nonce_in_report_out(attest) -> None:
    sent = nonce()
    response, root = await attest({"nonce": sent})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "sev_guest" and body["nonce"] == sent
    report = base64.b64decode(body["report"], validate=True)
    assert len(report) == fake_tsm.REPORT_SIZE
    # REPORT_DATA is the caller's nonce, byte for byte; MEASUREMENT is the launch digest
    assert report[0x50:0x90] == bytes.fromhex(sent)
    assert report[0x90:0xC0] == MEASUREMENT
    assert base64.b64decode(body["aux"]) == b"fake certificate table\0"
    assert os.listdir(root) == []  # the entry is gone


async def test_uppercase_hex_is_accepted(attest) -> None:
    sent = nonce().upper()
    response, _ = await attest({"nonce": sent})
    assert response.status_code == 200
    report = base64.b64decode(response.json()["report"])
    assert report[0x50:0x90] == bytes.fromhex(sent)


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
        assert base64.b64decode(response.json()["report"])[0x50:0x90] == bytes.fromhex(n)
    assert os.listdir(root) == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"nonce": "ab" * 32}, "64 bytes"),  # 32 bytes: too short
        ({"nonce": "ab" * 65}, "64 bytes"),
        ({"nonce": "zz" * 64}, "hexadecimal"),
        ({"nonce": "0x" + "ab" * 63}, "hexadecimal"),
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
async def test_unauthenticated_is_401(attest, headers: dict) -> None:
    response, root = await attest({"nonce": nonce()}, headers=headers)
    assert response.status_code == 401
    assert os.listdir(root) == []


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

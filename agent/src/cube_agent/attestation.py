"""`POST /attestation`: a TEE report bound to this agent's TLS key and the caller's nonce.

The report comes from the kernel's configfs-tsm interface (Linux 6.7+,
`CONFIG_TSM_REPORTS`; Documentation/ABI/testing/configfs-tsm), the same for AMD SEV-SNP
(`provider` "sev_guest") and Intel TDX ("tdx_guest"). Each request gets its own entry:

    mkdir <root>/<entry>            the kernel fills in the attributes
    read generation                 counts writes to the entry
    write inblob                    REPORT_DATA: TLS key hash || nonce, signed with the report
    read provider, outblob, auxblob reading outblob generates the report
    read generation                 must be exactly one write later, or someone raced us
    rmdir <root>/<entry>            always, also on errors

REPORT_DATA is not the caller's to choose: the agent writes SHA-256 of its TLS key
(with a domain prefix) and the caller's 32-byte nonce (tls.py has the layout). Were any
64 bytes accepted, a man in the middle could ask the genuine agent for a report binding
its own key. The endpoint needs no API key (a client verifies before it sends one), so
the body is bounded before it is read and one report is made at a time.
How a relying party checks the report: docs/attestation.md, `cube-verify`.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import re
import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from .errors import AgentError
from .tls import NONCE_BYTES, report_data

ENTRY_PREFIX = "cube-agent-"
# {"nonce": "<64 hex digits>"} is 77 bytes; room for whitespace, not for a payload.
MAX_BODY_BYTES = 1024
HEX_NONCE = re.compile(f"[0-9a-fA-F]{{{2 * NONCE_BYTES}}}")
# Reports queued at once beyond the one being made; more callers get 503.
MAX_WAITING = 8


class AttestationRequest(BaseModel):
    nonce: str = Field(
        description=f"{NONCE_BYTES} random bytes as {2 * NONCE_BYTES} hex digits",
        examples=["00" * NONCE_BYTES],
    )


class AttestationResponse(BaseModel):
    provider: str = Field(description='the report format: "sev_guest" or "tdx_guest"')
    report: str = Field(description="the report (outblob), base64")
    aux: str | None = Field(description="auxiliary data (auxblob, e.g. SNP certificates), base64")
    nonce: str = Field(description="the nonce, as sent")
    report_data: str = Field(
        description="REPORT_DATA as written: SHA-256(prefix || TLS SPKI) || nonce, hex"
    )
    tls_spki_sha256: str | None = Field(
        description="SHA-256 of the TLS key's SubjectPublicKeyInfo (null: no TLS key)"
    )


router = APIRouter(tags=["attestation"])


@router.post(
    "/attestation",
    response_model=AttestationResponse,
    summary="Attestation report bound to this agent's TLS key and a nonce",
    # The body is parsed by hand so that bad input is a 400 like every other agent error;
    # this keeps its schema in the OpenAPI document.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": AttestationRequest.model_json_schema()}},
        }
    },
)
async def attestation(request: Request) -> AttestationResponse:
    nonce = parse_nonce(await bounded_body(request))
    spki: bytes | None = request.app.state.tls_spki
    data = report_data(spki, nonce)
    root = Path(request.app.state.settings.tsm_root)
    gate = _gate(request)
    if gate.waiting >= MAX_WAITING:
        raise AgentError(503, "too many attestation requests at once; try again", "tsm_busy")
    gate.waiting += 1
    try:
        async with gate.lock:
            provider, report, aux = await run_in_threadpool(tsm_report, root, data)
    finally:
        gate.waiting -= 1
    return AttestationResponse(
        provider=provider,
        report=base64.b64encode(report).decode(),
        aux=base64.b64encode(aux).decode() if aux else None,
        nonce=nonce.hex(),
        report_data=data.hex(),
        tls_spki_sha256=hashlib.sha256(spki).hexdigest() if spki is not None else None,
    )


class _Gate:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0


def _gate(request: Request) -> _Gate:
    state = request.app.state
    if getattr(state, "attestation_gate", None) is None:
        state.attestation_gate = _Gate()
    return state.attestation_gate


async def bounded_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed MAX_BODY_BYTES: from
    Content-Length before any byte is read, else while it streams in."""
    too_large = AgentError(
        413, f"an attestation request is at most {MAX_BODY_BYTES} bytes", "request_too_large"
    )
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def parse_nonce(body: bytes) -> bytes:
    try:
        nonce = AttestationRequest.model_validate_json(body).nonce
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise AgentError(
            400, f'expected {{"nonce": "<hex>"}}: {where}: {err["msg"]}', "invalid_request"
        ) from None
    # Not bytes.fromhex: it skips whitespace, so 2 hex digits and 126 spaces would pass.
    if not HEX_NONCE.fullmatch(nonce):
        raise AgentError(
            400,
            f"nonce must be {NONCE_BYTES} bytes as exactly {2 * NONCE_BYTES} hexadecimal "
            f"digits (0-9, a-f), got {len(nonce)} characters",
            "invalid_nonce",
        )
    return bytes.fromhex(nonce)


def tsm_report(root: Path, data: bytes) -> tuple[str, bytes, bytes | None]:
    """Run one configfs-tsm report cycle (blocking: call it from a thread)."""
    if not root.is_dir():
        raise AgentError(
            501,
            f"no TEE attestation here: {root} does not exist (not a confidential VM, "
            "a kernel without CONFIG_TSM_REPORTS, or configfs not mounted)",
            "no_tee",
        )
    entry = root / f"{ENTRY_PREFIX}{uuid.uuid4().hex}"
    try:
        entry.mkdir()
    except OSError as exc:
        raise AgentError(
            500, f"cannot create a report entry in {root}: {exc.strerror}", "tsm_error"
        ) from None
    try:
        before = _generation(entry)
        (entry / "inblob").write_bytes(data)
        provider = (entry / "provider").read_text().strip()
        report = (entry / "outblob").read_bytes()
        aux_file = entry / "auxblob"  # only some providers have it
        aux = aux_file.read_bytes() if aux_file.exists() else None
        if _generation(entry) != before + 1:
            raise AgentError(
                409, "the report entry was changed while in use; try again", "tsm_conflict"
            )
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.EAGAIN):
            raise AgentError(503, "the TEE is busy; try again", "tsm_busy") from None
        raise AgentError(
            500, f"attestation report failed: {exc.strerror or exc}", "tsm_error"
        ) from None
    finally:
        entry.rmdir()
    if not report:
        raise AgentError(500, "the TEE returned an empty report", "tsm_error")
    return provider, report, aux


def _generation(entry: Path) -> int:
    return int((entry / "generation").read_text())

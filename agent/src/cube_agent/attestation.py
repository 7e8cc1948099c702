"""`POST /attestation`: a TEE attestation report bound to the caller's nonce.

The report comes from the kernel's configfs-tsm interface (Linux 6.7+,
`CONFIG_TSM_REPORTS`; Documentation/ABI/testing/configfs-tsm), the same for AMD SEV-SNP
(`provider` "sev_guest") and Intel TDX ("tdx_guest"). Each request gets its own entry:

    mkdir <root>/<entry>            the kernel fills in the attributes
    read generation                 counts writes to the entry
    write inblob                    the nonce: REPORTDATA in the signed report
    read provider, outblob, auxblob reading outblob generates the report
    read generation                 must be exactly one write later, or someone raced us
    rmdir <root>/<entry>            always, also on errors

The nonce is exactly 64 bytes (128 hex digits), the size of REPORTDATA on both SNP and
TDX, so the report carries the caller's nonce verbatim and nothing is padded behind their
back. How a relying party checks the report: docs/attestation.md.
"""

from __future__ import annotations

import base64
import errno
import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from .errors import AgentError

NONCE_BYTES = 64
ENTRY_PREFIX = "cube-agent-"


class AttestationRequest(BaseModel):
    nonce: str = Field(
        description=f"{NONCE_BYTES} bytes as {2 * NONCE_BYTES} hex digits; becomes REPORTDATA",
        examples=["00" * NONCE_BYTES],
    )


class AttestationResponse(BaseModel):
    provider: str = Field(description='the report format: "sev_guest" or "tdx_guest"')
    report: str = Field(description="the report (outblob), base64")
    aux: str | None = Field(description="auxiliary data (auxblob, e.g. SNP certificates), base64")
    nonce: str = Field(description="the nonce, as sent")


router = APIRouter(tags=["attestation"])


@router.post(
    "/attestation",
    response_model=AttestationResponse,
    summary="Attestation report bound to a nonce",
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
    nonce = parse_nonce(await request.body())
    root = Path(request.app.state.settings.tsm_root)
    provider, report, aux = await run_in_threadpool(tsm_report, root, nonce)
    return AttestationResponse(
        provider=provider,
        report=base64.b64encode(report).decode(),
        aux=base64.b64encode(aux).decode() if aux else None,
        nonce=nonce.hex(),
    )


def parse_nonce(body: bytes) -> bytes:
    try:
        nonce = AttestationRequest.model_validate_json(body).nonce
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise AgentError(
            400, f'expected {{"nonce": "<hex>"}}: {where}: {err["msg"]}', "invalid_request"
        ) from None
    if len(nonce) != 2 * NONCE_BYTES:
        raise AgentError(
            400,
            f"nonce must be {NONCE_BYTES} bytes ({2 * NONCE_BYTES} hex digits), "
            f"got {len(nonce)} characters",
            "invalid_nonce",
        )
    try:
        return bytes.fromhex(nonce)
    except ValueError:
        raise AgentError(400, "nonce must be hexadecimal (0-9, a-f)", "invalid_nonce") from None


def tsm_report(root: Path, nonce: bytes) -> tuple[str, bytes, bytes | None]:
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
        (entry / "inblob").write_bytes(nonce)
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

"""Intel TDX: the TD Quote (version 4) as configfs-tsm returns it, and what is checked.

Layout from Intel's TDX DCAP Quote Generation Library and Quote Verification Library
specification: a 48-byte header, then the 584-byte TD report body (TDREPORT's TDINFO and
the TEE TCB), then the signature data. Checked here: TD_ATTRIBUTES (DEBUG bit 0), MRTD and
RTMR[0..3] against the prediction, REPORTDATA against this connection.

The quote's signature (ECDSA P-256 by the Quoting Enclave's attestation key, certified by
the platform's PCK certificate up to Intel's SGX root) is verified with the `dcap-qvl`
library when it is installed (`pip install cube-verify[tdx]`) and the caller provides
collateral (a JSON file from PCCS/Intel PCS); otherwise it is NOT verified, and the
verifier refuses unless the caller explicitly accepts that.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from .errors import EvidenceError, PolicyError, SignatureError, UnverifiedError

HEADER_SIZE = 48
BODY_SIZE = 584
TEE_TYPE_TDX = 0x81
TD_ATTRIBUTES_DEBUG = 1


@dataclass(frozen=True)
class Quote:
    raw: bytes
    version: int
    td_attributes: int
    mrtd: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes & TD_ATTRIBUTES_DEBUG)


def parse_quote(raw: bytes) -> Quote:
    if len(raw) < HEADER_SIZE + BODY_SIZE:
        raise EvidenceError(f"a TDX quote is at least {HEADER_SIZE + BODY_SIZE} bytes")
    version, _key_type, tee_type = struct.unpack_from("<HHI", raw, 0)
    if version not in (4, 5) or tee_type != TEE_TYPE_TDX:
        raise EvidenceError(f"not a TDX quote: version {version}, TEE type {tee_type:#x}")
    body = HEADER_SIZE if version == 4 else HEADER_SIZE + 6  # v5: type and size first
    (td_attributes,) = struct.unpack_from("<Q", raw, body + 120)
    rtmr = [raw[body + 328 + 48 * i : body + 376 + 48 * i] for i in range(4)]
    return Quote(
        raw=raw,
        version=version,
        td_attributes=td_attributes,
        mrtd=raw[body + 136 : body + 184],
        rtmrs=(rtmr[0], rtmr[1], rtmr[2], rtmr[3]),
        report_data=raw[body + 520 : body + 584],
    )


def check_policy(quote: Quote, allow_debug: bool = False) -> None:
    if quote.debug and not allow_debug:
        raise PolicyError(
            f"debug policy: TD_ATTRIBUTES {quote.td_attributes:#x} has DEBUG (bit 0) set"
        )


def verify_signature(quote: Quote, collateral_json: str | None, skip: bool) -> str:
    """'verified by dcap-qvl (status)' or 'NOT verified'; raises unless one holds."""
    if collateral_json is not None:
        try:
            import dcap_qvl
        except ImportError:
            raise UnverifiedError(
                "TDX collateral given but dcap-qvl is not installed (pip install cube-verify[tdx])"
            ) from None
        try:
            collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
        except ValueError as exc:
            raise UnverifiedError(f"the TDX collateral is not dcap-qvl's JSON: {exc}") from None
        try:
            report = dcap_qvl.verify(quote.raw, collateral, int(time.time()))
        except (ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0]
            raise SignatureError(
                f"bad signature: dcap-qvl rejects the TDX quote: {reason}"
            ) from None
        return f"verified by dcap-qvl ({report.status})"
    if skip:
        return "NOT verified (the quote's signature was not checked: --insecure-skip-tdx-signature)"
    raise UnverifiedError(
        "the TDX quote's signature is not verified: give --tdx-collateral (with dcap-qvl "
        "installed), or accept unverified evidence with --insecure-skip-tdx-signature"
    )

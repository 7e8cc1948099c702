"""cube_verify's parts on their own: the certificate table, TCB and policy parsing, and
TDX (no TDX hardware or Intel-signed quote exists here: synthetic quotes in the v4 layout,
and what is and is not verified about them)."""

from __future__ import annotations

import base64
import hashlib
import struct

import cube_verify
import pytest
from cube_agent import tls
from cube_verify import binding, snp, tdx
from cube_verify.verify import Policy, check_evidence

NONCE = bytes(range(32))
SPKI = tls.generate().spki_der
MRTD = bytes([0x11]) * 48
RTMRS = [bytes([0x20 + i]) * 48 for i in range(4)]


def quote(report_data: bytes, td_attributes: int = 0, mrtd: bytes = MRTD) -> bytes:
    """A TD Quote v4: header (version 4, ECDSA-256 key, TEE type TDX) and TD report body;
    the signature section is empty: nobody here can sign as Intel's Quoting Enclave."""
    header = struct.pack("<HHI", 4, 2, tdx.TEE_TYPE_TDX) + bytes(40)
    body = bytearray(tdx.BODY_SIZE)
    struct.pack_into("<Q", body, 120, td_attributes)
    body[136:184] = mrtd
    for i, rtmr in enumerate(RTMRS):
        body[328 + 48 * i : 376 + 48 * i] = rtmr
    body[520:584] = report_data
    return header + bytes(body) + struct.pack("<I", 0)


def evidence(raw: bytes) -> dict:
    return {"provider": "tdx_guest", "report": base64.b64encode(raw).decode(), "aux": None,
            "nonce": NONCE.hex()}  # fmt: skip


PREDICTION = {"mode": "tdx", "mrtd": MRTD.hex(), "rtmr": [r.hex() for r in RTMRS[:3]] + [None]}


def test_tdx_quote_fields_are_read_from_their_offsets() -> None:
    data = binding.expected_report_data(SPKI, NONCE)
    parsed = tdx.parse_quote(quote(data, td_attributes=1))
    assert (parsed.version, parsed.mrtd, parsed.report_data) == (4, MRTD, data)
    assert list(parsed.rtmrs) == RTMRS and parsed.debug


def test_tdx_signature_is_not_verified_unless_waived_and_then_says_so() -> None:
    raw = quote(binding.expected_report_data(SPKI, NONCE))
    with pytest.raises(cube_verify.UnverifiedError, match="signature is not verified"):
        check_evidence(evidence(raw), NONCE, SPKI, Policy(PREDICTION))
    waived = Policy(PREDICTION, insecure_skip_tdx_signature=True)
    provider, measured, checks = check_evidence(evidence(raw), NONCE, SPKI, waived)
    assert (provider, measured) == ("tdx_guest", MRTD.hex())
    assert "NOT verified" in checks[0]


def test_tdx_checks_name_what_failed() -> None:
    waived = {"insecure_skip_tdx_signature": True}
    good = binding.expected_report_data(SPKI, NONCE)
    with pytest.raises(cube_verify.MeasurementError, match="MRTD"):
        check_evidence(evidence(quote(good, mrtd=bytes(48))), NONCE, SPKI,
                       Policy(PREDICTION, **waived))  # fmt: skip
    other_rtmr = dict(PREDICTION, rtmr=[RTMRS[0].hex(), "00" * 48])
    with pytest.raises(cube_verify.MeasurementError, match=r"RTMR\[1\]"):
        check_evidence(evidence(quote(good)), NONCE, SPKI, Policy(other_rtmr, **waived))
    with pytest.raises(cube_verify.PolicyError, match="debug policy"):
        check_evidence(evidence(quote(good, td_attributes=1)), NONCE, SPKI,
                       Policy(PREDICTION, **waived))  # fmt: skip
    other_key = tls.generate().spki_der
    with pytest.raises(cube_verify.KeyBindingError, match="swapped TLS key"):
        check_evidence(evidence(quote(good)), NONCE, other_key, Policy(PREDICTION, **waived))
    with pytest.raises(cube_verify.MeasurementError, match="predicts a snp guest"):
        check_evidence(evidence(quote(good)), NONCE, SPKI,
                       Policy({"mode": "snp", "measurement": "00"}, **waived))  # fmt: skip


def test_dcap_qvl_rejects_a_quote_no_quoting_enclave_signed() -> None:
    try:
        import dcap_qvl
    except ImportError:
        from support import missing

        missing("dcap-qvl is not installed (requirements-dev.txt)")
    collateral = dcap_qvl.QuoteCollateralV3("", b"", b"", "", "{}", b"", "", "{}", b"")
    raw = quote(binding.expected_report_data(SPKI, NONCE))
    policy = Policy(PREDICTION, tdx_collateral=collateral.to_json())
    with pytest.raises(cube_verify.SignatureError, match="dcap-qvl rejects"):
        check_evidence(evidence(raw), NONCE, SPKI, policy)


def test_certificate_table_round_trip_and_both_guid_byte_orders() -> None:
    certs = {"vcek": b"0\x03\x02\x01\x00", "ask": b"ask"}
    table = snp.build_cert_table(certs)
    assert len(table) == 24 * 3 + len(b"0\x03\x02\x01\x00") + 3
    # the entries point at the bodies
    for i, (name, der) in enumerate(certs.items()):
        guid, offset, length = (
            table[24 * i : 24 * i + 16],
            *struct.unpack_from("<II", table, 24 * i + 16),
        )
        assert guid == snp.GUID_OF[name].bytes and table[offset : offset + length] == der
    mixed = bytearray(table)
    mixed[0:16] = snp.GUID_OF["vcek"].bytes_le  # some hosts write the GUID mixed-endian
    with pytest.raises(cube_verify.EvidenceError, match="vcek is not a certificate"):
        snp.parse_cert_table(bytes(mixed))
    with pytest.raises(cube_verify.EvidenceError, match="no terminating entry"):
        snp.parse_cert_table(b"\x01" * 16 + struct.pack("<II", 0, 0))  # unknown, no end
    with pytest.raises(cube_verify.EvidenceError, match="outside the table"):
        snp.parse_cert_table(table[:16] + struct.pack("<II", 10_000, 5) + table[24:])


@pytest.mark.parametrize("text", ["snp=300", "snp=-1", "gpu=1", "snp"])
def test_min_tcb_is_parsed_strictly(text: str) -> None:
    with pytest.raises(ValueError, match=r"NAME=0\.\.255"):
        snp.parse_min_tcb(text)


def test_min_tcb_cli_error_is_exit_2(capsys) -> None:
    from cube_verify.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["https://127.0.0.1:1", "--measurement", "m.json", "--min-tcb", "snp=x"])
    assert exit_.value.code == 2
    assert "--min-tcb" in capsys.readouterr().err


def test_report_data_layout_is_the_agents() -> None:
    """The verifier and the agent share no code: the layout is stated twice, checked here."""
    assert binding.DOMAIN == tls.DOMAIN == b"cube-hal attested-tls v1\0"
    assert binding.expected_report_data(SPKI, NONCE) == tls.report_data(SPKI, NONCE)
    assert tls.report_data(SPKI, NONCE)[:32] == hashlib.sha256(tls.DOMAIN + SPKI).digest()


def test_a_short_or_unknown_report_is_an_evidence_error() -> None:
    good = {"provider": "sev_guest", "report": base64.b64encode(bytes(100)).decode(),
            "nonce": NONCE.hex()}  # fmt: skip
    with pytest.raises(cube_verify.EvidenceError, match="0x4a0 bytes"):
        check_evidence(good, NONCE, SPKI, Policy({"measurement": "00"}))
    with pytest.raises(cube_verify.EvidenceError, match="provider"):
        check_evidence(dict(good, provider="sgx"), NONCE, SPKI, Policy({}))
    with pytest.raises(cube_verify.EvidenceError, match="not base64"):
        check_evidence(dict(good, report="%%%"), NONCE, SPKI, Policy({}))

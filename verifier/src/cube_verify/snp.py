"""AMD SEV-SNP: the ATTESTATION_REPORT, its VCEK <- ASK <- ARK chain, policy and TCB.

Layout from the SEV-SNP Firmware ABI specification (table "ATTESTATION_REPORT
Structure"): 0x4A0 bytes, little-endian; the signature at 0x2A0 is ECDSA P-384 with
SHA-384 over bytes 0x000-0x29F, r and s each 72 bytes little-endian. The VCEK certificate
carries AMD's extensions (hwID = CHIP_ID, the SPLs of the TCB it was derived for); ARK and
ASK sign with RSASSA-PSS (SHA-384), as AMD's KDS certificates do.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .errors import ChainError, EvidenceError, PolicyError, SignatureError, TcbError

REPORT_SIZE = 0x4A0
SIGNED_BYTES = 0x2A0
SIG_ALGO_ECDSA_P384_SHA384 = 1

POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19

# GHCB specification, extended guest request: the certificate table's GUIDs.
CERT_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}
GUID_OF = {name: guid for guid, name in CERT_GUIDS.items()}

# AMD's VCEK certificate extensions (KDS specification, "VCEK Certificate Extensions").
OID_BL_SPL = "1.3.6.1.4.1.3704.1.3.1"
OID_TEE_SPL = "1.3.6.1.4.1.3704.1.3.2"
OID_SNP_SPL = "1.3.6.1.4.1.3704.1.3.3"
OID_UCODE_SPL = "1.3.6.1.4.1.3704.1.3.8"
OID_FMC_SPL = "1.3.6.1.4.1.3704.1.3.9"
OID_HWID = "1.3.6.1.4.1.3704.1.4"
SPL_OIDS = {
    "bootloader": OID_BL_SPL,
    "tee": OID_TEE_SPL,
    "snp": OID_SNP_SPL,
    "microcode": OID_UCODE_SPL,
    "fmc": OID_FMC_SPL,
}
TCB_FIELDS = ("bootloader", "tee", "snp", "microcode")
# Byte of each SPL in the 64-bit TCB_VERSION: Milan and Genoa, and Turin (family 0x1A).
TCB_LAYOUT = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
TCB_LAYOUT_TURIN = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7}


@dataclass(frozen=True)
class Report:
    raw: bytes
    version: int
    guest_svn: int
    policy: int
    vmpl: int
    signature_algo: int
    flags: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    report_id: bytes
    reported_tcb: dict[str, int]
    chip_id: bytes
    signature_r: int
    signature_s: int

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG)

    @property
    def signing_key(self) -> str:
        return {0: "vcek", 1: "vlek"}.get((self.flags >> 2) & 0b111, "none")


def parse_tcb(value: int, turin: bool) -> dict[str, int]:
    layout = TCB_LAYOUT_TURIN if turin else TCB_LAYOUT
    return {name: (value >> (8 * byte)) & 0xFF for name, byte in layout.items()}


def parse_report(raw: bytes) -> Report:
    if len(raw) < REPORT_SIZE:
        raise EvidenceError(f"an SEV-SNP report is {REPORT_SIZE:#x} bytes, this one {len(raw):#x}")
    raw = raw[:REPORT_SIZE]
    version, guest_svn, policy = struct.unpack_from("<IIQ", raw, 0)
    if version < 2:
        raise EvidenceError(f"SEV-SNP report version {version}: at least 2 expected")
    vmpl, sig_algo = struct.unpack_from("<II", raw, 0x30)
    (flags,) = struct.unpack_from("<I", raw, 0x48)
    (reported_tcb,) = struct.unpack_from("<Q", raw, 0x180)
    family = raw[0x188] if version >= 3 else 0
    return Report(
        raw=raw,
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        vmpl=vmpl,
        signature_algo=sig_algo,
        flags=flags,
        report_data=raw[0x50:0x90],
        measurement=raw[0x90:0xC0],
        host_data=raw[0xC0:0xE0],
        report_id=raw[0x140:0x160],
        reported_tcb=parse_tcb(reported_tcb, turin=family == 0x1A),
        chip_id=raw[0x1A0:0x1E0],
        signature_r=int.from_bytes(raw[0x2A0:0x2E8], "little"),
        signature_s=int.from_bytes(raw[0x2E8:0x330], "little"),
    )


# --- certificates ------------------------------------------------------------------------


@dataclass
class Certs:
    """What the chain is built from; `ark` is the trust anchor only when it came from the
    relying party (a directory or a pinned file), never from the evidence."""

    ark: x509.Certificate | None = None
    ask: x509.Certificate | None = None
    vcek: x509.Certificate | None = None
    sources: dict[str, str] = field(default_factory=dict)


def load_cert(data: bytes) -> x509.Certificate:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def load_cert_dir(directory: Path) -> Certs:
    """ark.pem, ask.pem, vcek.pem (or .der/.crt), or cert_chain.pem as AMD's KDS serves
    it (ASK then ARK); what is missing may come from the evidence."""
    certs = Certs()
    if not directory.is_dir():
        raise ChainError(f"{directory}: no such certificate directory")
    chain = directory / "cert_chain.pem"
    if chain.is_file():
        ask, ark = x509.load_pem_x509_certificates(chain.read_bytes())[:2]
        certs.ask, certs.ark = ask, ark
        certs.sources.update(ask=str(chain), ark=str(chain))
    for name in ("ark", "ask", "vcek"):
        for suffix in (".pem", ".der", ".crt", ".cert"):
            path = directory / f"{name}{suffix}"
            if path.is_file():
                try:
                    setattr(certs, name, load_cert(path.read_bytes()))
                except ValueError as exc:
                    raise ChainError(f"{path}: not a certificate ({exc})") from None
                certs.sources[name] = str(path)
                break
    return certs


def parse_cert_table(blob: bytes) -> dict[str, x509.Certificate]:
    """The GHCB certificate table (configfs-tsm auxblob): 24-byte entries {GUID, offset,
    length} up to an all-zero one, offsets from the start of the table."""
    found: dict[str, x509.Certificate] = {}
    for at in range(0, len(blob) - 23, 24):
        guid, offset, length = blob[at : at + 16], *struct.unpack_from("<II", blob, at + 16)
        if guid == bytes(16):
            return found
        name = CERT_GUIDS.get(uuid.UUID(bytes=guid)) or CERT_GUIDS.get(uuid.UUID(bytes_le=guid))
        if name is None:
            continue
        if offset + length > len(blob) or length == 0:
            raise EvidenceError(f"certificate table: {name} entry points outside the table")
        try:
            found[name] = load_cert(blob[offset : offset + length])
        except ValueError as exc:
            raise EvidenceError(f"certificate table: {name} is not a certificate ({exc})") from None
    raise EvidenceError("certificate table: no terminating entry")


def build_cert_table(certs: dict[str, bytes]) -> bytes:
    """The inverse of parse_cert_table (DER certificates by name): for tests and tools."""
    header = 24 * (len(certs) + 1)
    entries, body = b"", b""
    for name, der in certs.items():
        entries += GUID_OF[name].bytes + struct.pack("<II", header + len(body), len(der))
        body += der
    return entries + bytes(24) + body


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    digest = cert.signature_hash_algorithm
    if digest is None:
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            pad = cert.signature_algorithm_parameters
            if not isinstance(pad, padding.PSS | padding.PKCS1v15):
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, pad, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(digest))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def verify_chain(
    trusted_ark: x509.Certificate,
    ask: x509.Certificate,
    vcek: x509.Certificate,
    evidence_ark: x509.Certificate | None = None,
) -> None:
    """ARK self-signed and the one trusted; ASK signed by it; VCEK signed by the ASK."""
    if evidence_ark is not None and _spki(evidence_ark) != _spki(trusted_ark):
        raise ChainError(
            "untrusted chain: the evidence's ARK is not the trusted AMD root "
            f"(evidence: {evidence_ark.subject.rfc4514_string()})"
        )
    if not _signed_by(trusted_ark, trusted_ark):
        raise ChainError("untrusted chain: the trusted ARK is not a self-signed root")
    if not _signed_by(ask, trusted_ark):
        raise ChainError(
            "untrusted chain: the ASK is not signed by the trusted ARK "
            f"({trusted_ark.subject.rfc4514_string()})"
        )
    if not _signed_by(vcek, ask):
        raise ChainError("untrusted chain: the VCEK is not signed by the ASK")


def verify_report_signature(report: Report, vcek: x509.Certificate) -> None:
    if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise SignatureError(
            f"report signature algorithm {report.signature_algo}: expected 1 (ECDSA P-384)"
        )
    key = vcek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise SignatureError("the VCEK's key is not ECDSA P-384")
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.raw[:SIGNED_BYTES], ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise SignatureError(
            "bad signature: the report is not signed by this VCEK (altered, or another chip)"
        ) from None


def _extension_int(cert: x509.Certificate, oid: str) -> int | None:
    try:
        value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
    except x509.ExtensionNotFound:
        return None
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(raw) >= 3 and raw[0] == 0x02 and raw[1] == len(raw) - 2:  # DER INTEGER
        return int.from_bytes(raw[2:], "big")
    return None


def vcek_matches_report(report: Report, vcek: x509.Certificate) -> None:
    """The VCEK is derived for one chip and one TCB: both must be the report's."""
    try:
        hwid = vcek.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_HWID)).value
    except x509.ExtensionNotFound:
        hwid = None
    if isinstance(hwid, x509.UnrecognizedExtension) and any(report.chip_id):
        raw = hwid.value
        if len(raw) == 66 and raw[:2] == b"\x04\x40":  # wrapped in an OCTET STRING
            raw = raw[2:]
        if raw != report.chip_id:
            raise ChainError("untrusted chain: the VCEK is for another chip than CHIP_ID")
    for name, value in report.reported_tcb.items():
        in_cert = _extension_int(vcek, SPL_OIDS[name])
        if in_cert is not None and in_cert != value:
            raise TcbError(f"REPORTED_TCB {name}={value} but the VCEK is for {name}={in_cert}")


def check_policy(
    report: Report,
    allow_debug: bool = False,
    allow_migration_agent: bool = False,
    max_vmpl: int = 0,
) -> None:
    if report.debug and not allow_debug:
        raise PolicyError(
            f"debug policy: POLICY {report.policy:#x} has DEBUG (bit 19) set, so the host "
            "can read and change the guest's memory"
        )
    if report.policy & POLICY_MIGRATE_MA and not allow_migration_agent:
        raise PolicyError(f"POLICY {report.policy:#x} allows a migration agent (bit 18)")
    if report.vmpl > max_vmpl:
        raise PolicyError(f"VMPL {report.vmpl}: the report was asked for at VMPL > {max_vmpl}")


def check_min_tcb(report: Report, minimum: dict[str, int]) -> None:
    for name, least in minimum.items():
        have = report.reported_tcb.get(name)
        if have is None:
            raise TcbError(f"minimum TCB names {name!r}, which this report's TCB has not")
        if have < least:
            raise TcbError(f"REPORTED_TCB {name}={have} is below the minimum {least}")


def parse_min_tcb(text: str) -> dict[str, int]:
    """`bootloader=3,tee=0,snp=8,microcode=115` (any subset; also fmc on Turin)."""
    minimum: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in SPL_OIDS or not value.isdigit() or int(value) > 255:
            raise ValueError(f"{part!r}: expected NAME=0..255, NAME one of {', '.join(SPL_OIDS)}")
        minimum[name] = int(value)
    return minimum

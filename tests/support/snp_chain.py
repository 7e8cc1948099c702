"""A test root of trust shaped like AMD's: ARK -> ASK -> VCEK, made fresh in the test.

ARK (self-signed) and ASK are RSA 4096 keys signing with RSASSA-PSS/SHA-384 (MGF1
SHA-384, salt 48), as AMD's KDS certificates do; the VCEK is an ECDSA P-384 key carrying
AMD's VCEK extensions (hwID = the chip's CHIP_ID, the SPLs of its TCB). The fake
configfs-tsm (tests/cvm/fake_tsm.py) signs reports with the VCEK's private key and hands
out the GHCB certificate table, so the verifier's whole path runs, signature included.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from cube_verify import snp

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
CHIP_ID = bytes(range(64))
TCB = {"bootloader": 9, "tee": 0, "snp": 23, "microcode": 72}


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cube HAL test root (not AMD)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _der_int(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8 or 1, "big")
    return bytes([0x02, len(body)]) + body


def _builder(subject: str, issuer: str, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
    )


@dataclass
class Chain:
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey

    def der(self, name: str) -> bytes:
        return getattr(self, name).public_bytes(serialization.Encoding.DER)

    def cert_table(self) -> bytes:
        return snp.build_cert_table({n: self.der(n) for n in ("vcek", "ask", "ark")})

    def write(self, directory: Path) -> dict[str, Path]:
        """ark.pem/ask.pem/vcek.pem, vcek.key (for the fake TSM), certs.bin (the table)."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("ark", "ask", "vcek"):
            paths[name] = directory / f"{name}.pem"
            paths[name].write_bytes(getattr(self, name).public_bytes(serialization.Encoding.PEM))
        paths["vcek_key"] = directory / "vcek.key"
        paths["vcek_key"].write_bytes(
            self.vcek_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths["table"] = directory / "certs.bin"
        paths["table"].write_bytes(self.cert_table())
        return paths

    def trust_dir(self, directory: Path) -> Path:
        """What a relying party holds: only the root it trusts."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ark.pem").write_bytes(self.ark.public_bytes(serialization.Encoding.PEM))
        return directory


def make_chain(
    product: str = "Genoa", chip_id: bytes = CHIP_ID, tcb: dict[str, int] | None = None
) -> Chain:
    tcb = tcb or TCB
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ca = x509.BasicConstraints(ca=True, path_length=None)
    ark = (
        _builder(f"ARK-{product}", f"ARK-{product}", ark_key.public_key())
        .add_extension(ca, critical=True)
        .sign(ark_key, hashes.SHA384(), rsa_padding=PSS)
    )
    ask = (
        _builder(f"SEV-{product}", f"ARK-{product}", ask_key.public_key())
        .add_extension(ca, critical=True)
        .sign(ark_key, hashes.SHA384(), rsa_padding=PSS)
    )
    builder = _builder("SEV-VCEK", f"SEV-{product}", vcek_key.public_key())
    for name, value in tcb.items():
        oid = x509.ObjectIdentifier(snp.SPL_OIDS[name])
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, _der_int(value)), False)
    builder = builder.add_extension(
        x509.UnrecognizedExtension(x509.ObjectIdentifier(snp.OID_HWID), chip_id), False
    )
    vcek = builder.sign(ask_key, hashes.SHA384(), rsa_padding=PSS)
    return Chain(ark, ask, vcek, vcek_key)


def tcb_value(tcb: dict[str, int]) -> int:
    """REPORTED_TCB as the report stores it (Milan/Genoa layout)."""
    return sum(v << (8 * snp.TCB_LAYOUT[k]) for k, v in tcb.items())

"""REPORT_DATA as the Cube agent writes it (agent/src/cube_agent/tls.py; docs/attestation.md).

REPORT_DATA[0:32]  = SHA-256(DOMAIN || SubjectPublicKeyInfo of the agent's TLS key, DER)
REPORT_DATA[32:64] = the relying party's 32-byte nonce
"""

from __future__ import annotations

import hashlib

DOMAIN = b"cube-hal attested-tls v1\0"
NONCE_BYTES = 32


def spki_digest(spki_der: bytes) -> bytes:
    return hashlib.sha256(DOMAIN + spki_der).digest()


def expected_report_data(spki_der: bytes, nonce: bytes) -> bytes:
    return spki_digest(spki_der) + nonce

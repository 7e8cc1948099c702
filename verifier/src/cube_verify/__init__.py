"""cube-verify: check a Cube agent's attestation and talk to it over the attested key.

from cube_verify import verify
verified = verify("https://cvm:7001", "measurement.json", certs="amd-certs/")
openai.OpenAI(base_url=verified.url + "/v1", api_key=KEY, http_client=verified.client())
"""

from .errors import (
    ChainError,
    EvidenceError,
    KeyBindingError,
    MeasurementError,
    NonceError,
    PolicyError,
    ReplayError,
    SignatureError,
    TcbError,
    UnverifiedError,
    VerifyError,
)
from .verify import Policy, Verified, check_evidence, connect, verify

__all__ = [
    "ChainError",
    "EvidenceError",
    "KeyBindingError",
    "MeasurementError",
    "NonceError",
    "Policy",
    "PolicyError",
    "ReplayError",
    "SignatureError",
    "TcbError",
    "UnverifiedError",
    "Verified",
    "VerifyError",
    "check_evidence",
    "connect",
    "verify",
]

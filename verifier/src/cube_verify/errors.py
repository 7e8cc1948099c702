"""One exception per check, so a caller (and the CLI's exit message) says what failed."""

from __future__ import annotations


class VerifyError(Exception):
    """The agent is not what it must be; never use the connection. `check` names the check."""

    check = "evidence"


class EvidenceError(VerifyError):
    """The answer is not well-formed evidence (wrong size, unknown provider, bad base64)."""

    check = "evidence"


class SignatureError(VerifyError):
    """The report is not signed by the VCEK it comes with."""

    check = "signature"


class ChainError(VerifyError):
    """VCEK <- ASK <- ARK does not hold, or does not end in the trusted AMD root."""

    check = "chain"


class PolicyError(VerifyError):
    """The guest policy allows what must not be (debugging, migration agent, SMT...)."""

    check = "policy"


class TcbError(VerifyError):
    """The reported TCB is older than the minimum asked for, or disagrees with the VCEK."""

    check = "tcb"


class MeasurementError(VerifyError):
    """MEASUREMENT (SNP) or MRTD/RTMRs (TDX) differ from measurement.json."""

    check = "measurement"


class NonceError(VerifyError):
    """The agent answered for another nonce than the one sent."""

    check = "nonce"


class ReplayError(VerifyError):
    """REPORT_DATA does not carry this request's nonce: an old or another request's report."""

    check = "replay"


class KeyBindingError(VerifyError):
    """The report binds another TLS key than the one this connection presented."""

    check = "tls-key"


class UnverifiedError(VerifyError):
    """A check this verifier cannot do (TDX quote signature) and the caller did not waive."""

    check = "unverified"

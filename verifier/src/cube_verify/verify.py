"""Verify a Cube agent and return clients pinned to its attested TLS key.

    verified = verify("https://cvm:7001", measurement="measurement.json", certs="amd/")
    client = openai.OpenAI(base_url=verified.url + "/v1", api_key=KEY,
                           http_client=verified.client())

One TLS connection carries `POST /attestation` with a fresh nonce; the certificate that
connection presented is the one whose key the report must bind. Only after every check
passed is anything else sent, and then only over TLS pinned to that certificate: no API
key ever goes to an unverified peer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import snp, tdx
from .binding import NONCE_BYTES, expected_report_data, spki_digest
from .errors import (
    ChainError,
    EvidenceError,
    KeyBindingError,
    MeasurementError,
    NonceError,
    ReplayError,
    VerifyError,
)


@dataclass
class Policy:
    """What the relying party accepts. `measurement` is measurement.json's content."""

    measurement: Mapping[str, Any]
    certs: snp.Certs = field(default_factory=snp.Certs)
    min_tcb: dict[str, int] = field(default_factory=dict)
    allow_debug: bool = False
    tdx_collateral: str | None = None
    insecure_skip_tdx_signature: bool = False


@dataclass(frozen=True)
class Verified:
    """A verified agent: its URL, the attested certificate, and what was checked."""

    url: str
    cert_der: bytes
    provider: str
    measurement: str
    checks: tuple[str, ...]

    @property
    def spki_sha256(self) -> str:
        return hashlib.sha256(_spki(self.cert_der)).hexdigest()

    def ssl_context(self) -> ssl.SSLContext:
        """TLS that accepts exactly the attested certificate (no CA, no host name: the
        attestation is what names this peer)."""
        ctx = ssl.create_default_context(cadata=self.cert_der)
        ctx.check_hostname = False
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("base_url", self.url)
        return httpx.Client(verify=self.ssl_context(), **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("base_url", self.url)
        return httpx.AsyncClient(verify=self.ssl_context(), **kwargs)

    @property
    def curl_pin(self) -> str:
        """For `curl -k --pinnedpubkey PIN`: TLS to exactly the attested key."""
        digest = hashlib.sha256(_spki(self.cert_der)).digest()
        return "sha256//" + base64.b64encode(digest).decode()

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "provider": self.provider,
            "measurement": self.measurement,
            "tls_spki_sha256": self.spki_sha256,
            "curl_pin": self.curl_pin,
            "checks": list(self.checks),
        }


def load_measurement(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MeasurementError(f"{path}: cannot read measurement.json: {exc}") from None
    if not isinstance(doc, dict):
        raise MeasurementError(f"{path}: expected a JSON object")
    return doc


def verify(
    url: str,
    measurement: str | os.PathLike[str] | Mapping[str, Any],
    certs: str | os.PathLike[str] | snp.Certs | None = None,
    *,
    min_tcb: dict[str, int] | str | None = None,
    allow_debug: bool = False,
    tdx_collateral: str | os.PathLike[str] | None = None,
    insecure_skip_tdx_signature: bool = False,
    timeout: float = 30,
) -> Verified:
    """Fetch and check the agent's evidence; raise a VerifyError subclass on any failure."""
    if not url.startswith("https://"):
        raise VerifyError(f"{url}: an agent is verified over https:// only")
    doc = measurement if isinstance(measurement, Mapping) else load_measurement(measurement)
    if isinstance(certs, snp.Certs):
        cert_set = certs
    elif certs is not None:
        cert_set = snp.load_cert_dir(Path(certs))
    else:
        cert_set = snp.Certs()
    policy = Policy(
        measurement=doc,
        certs=cert_set,
        min_tcb=snp.parse_min_tcb(min_tcb) if isinstance(min_tcb, str) else dict(min_tcb or {}),
        allow_debug=allow_debug,
        tdx_collateral=Path(tdx_collateral).read_text() if tdx_collateral else None,
        insecure_skip_tdx_signature=insecure_skip_tdx_signature,
    )
    nonce = secrets.token_bytes(NONCE_BYTES)
    evidence, cert_der = fetch_evidence(url.rstrip("/"), nonce, timeout)
    provider, measured, checks = check_evidence(evidence, nonce, _spki(cert_der), policy)
    return Verified(url.rstrip("/"), cert_der, provider, measured, tuple(checks))


def connect(url: str, measurement: Any, certs: Any = None, **kwargs: Any) -> httpx.Client:
    """verify(...) then its pinned client: the one line for `http_client=`."""
    client_kwargs = kwargs.pop("client_kwargs", {})
    return verify(url, measurement, certs, **kwargs).client(**client_kwargs)


def fetch_evidence(url: str, nonce: bytes, timeout: float) -> tuple[dict[str, Any], bytes]:
    """POST /attestation over one TLS connection; its answer and that connection's
    certificate (DER). No certificate checks here: the attestation is the check."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            httpx.Client(verify=ctx, timeout=timeout) as client,
            client.stream("POST", f"{url}/attestation", json={"nonce": nonce.hex()}) as response,
        ):
            stream = response.extensions.get("network_stream")
            ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
            cert_der = ssl_object.getpeercert(True) if ssl_object else None
            body = response.read()
    except httpx.HTTPError as exc:
        raise EvidenceError(f"{url}/attestation: {exc}") from None
    if not cert_der:
        raise EvidenceError(f"{url}: the TLS connection presented no certificate")
    if response.status_code != 200:
        text = body[:300].decode(errors="replace")
        raise EvidenceError(f"{url}/attestation answered {response.status_code}: {text}")
    try:
        evidence = json.loads(body)
    except ValueError:
        raise EvidenceError(f"{url}/attestation: the answer is not JSON") from None
    if not isinstance(evidence, dict):
        raise EvidenceError(f"{url}/attestation: the answer is not a JSON object")
    return evidence, cert_der


def check_evidence(
    evidence: Mapping[str, Any], nonce: bytes, spki_der: bytes, policy: Policy
) -> tuple[str, str, list[str]]:
    """Every check, in an order where each failure names its own cause: is it genuine
    (chain, signature), is it acceptable (policy, TCB, measurement), is it for us (nonce,
    freshness, TLS key). Returns (provider, measurement hex, checks passed)."""
    provider = evidence.get("provider")
    raw = _b64(evidence.get("report"), "report")
    aux = _b64(evidence.get("aux"), "aux") if evidence.get("aux") else None
    if provider == "sev_guest":
        report_data, measured, checks = _check_snp(raw, aux, policy)
    elif provider == "tdx_guest":
        report_data, measured, checks = _check_tdx(raw, policy)
    else:
        raise EvidenceError(f"unknown attestation provider {provider!r}")

    echoed = evidence.get("nonce")
    if not isinstance(echoed, str) or echoed.lower() != nonce.hex():
        raise NonceError(
            f"wrong nonce: the agent answered for nonce {str(echoed)[:64]!r}, not for the one "
            "sent (something between us and the agent changed the request)"
        )
    if report_data[32:] != nonce:
        raise ReplayError(
            "replayed report: REPORT_DATA carries another nonce than this request's, so the "
            "report was made earlier or for someone else"
        )
    checks.append("REPORT_DATA carries this request's nonce")
    if report_data != expected_report_data(spki_der, nonce):
        bound = report_data[:32]
        why = (
            "the agent serves no TLS key"
            if bound == bytes(32)
            else "another TLS key: a TLS proxy (man in the middle) is in between"
        )
        raise KeyBindingError(
            f"swapped TLS key: the report binds {bound.hex()[:16]}…, this connection's key "
            f"is {spki_digest(spki_der).hex()[:16]}… ({why})"
        )
    checks.append("REPORT_DATA binds this connection's TLS key")
    return provider, measured, checks


def _check_snp(raw: bytes, aux: bytes | None, policy: Policy) -> tuple[bytes, str, list[str]]:
    report = snp.parse_report(raw)
    table = snp.parse_cert_table(aux) if aux else {}
    certs = policy.certs
    if certs.ark is None:
        raise ChainError(
            "untrusted chain: no trusted AMD root (ARK) given: pass a certificate directory "
            "with ark.pem (AMD KDS: /vcek/v1/<product>/cert_chain)"
        )
    ask = certs.ask or table.get("ask")
    vcek = certs.vcek or table.get("vcek")
    if report.signing_key != "vcek":
        raise ChainError(f"the report is signed with a {report.signing_key.upper()}: VCEK only")
    if ask is None or vcek is None:
        missing = " and ".join(n for n, c in (("ASK", ask), ("VCEK", vcek)) if c is None)
        raise ChainError(
            f"untrusted chain: no {missing}: the host provided no certificate table; put "
            "them in the certificate directory (snpguest fetch vcek)"
        )
    snp.verify_chain(certs.ark, ask, vcek, evidence_ark=table.get("ark"))
    snp.verify_report_signature(report, vcek)
    snp.vcek_matches_report(report, vcek)
    checks = ["VCEK <- ASK <- ARK (trusted root)", "report signed by the VCEK"]
    snp.check_policy(report, allow_debug=policy.allow_debug)
    checks.append(f"policy {report.policy:#x}: no debug, no migration agent, VMPL 0")
    snp.check_min_tcb(report, policy.min_tcb)
    checks.append(f"REPORTED_TCB {report.reported_tcb} >= {policy.min_tcb or 'any'}")
    measured = report.measurement.hex()
    expected = _expected(policy.measurement, "snp", "measurement")
    if measured != expected:
        raise MeasurementError(
            f"measurement mismatch: MEASUREMENT {measured} is not measurement.json's {expected}"
        )
    checks.append("MEASUREMENT equals measurement.json")
    return report.report_data, measured, checks


def _check_tdx(raw: bytes, policy: Policy) -> tuple[bytes, str, list[str]]:
    quote = tdx.parse_quote(raw)
    signature = tdx.verify_signature(
        quote, policy.tdx_collateral, policy.insecure_skip_tdx_signature
    )
    checks = [f"TDX quote signature {signature}"]
    tdx.check_policy(quote, allow_debug=policy.allow_debug)
    checks.append("TD_ATTRIBUTES: no debug")
    expected = _expected(policy.measurement, "tdx", "mrtd")
    if quote.mrtd.hex() != expected:
        raise MeasurementError(f"measurement mismatch: MRTD {quote.mrtd.hex()} is not {expected}")
    for i, want in enumerate(policy.measurement.get("rtmr") or []):
        if want is not None and quote.rtmrs[i].hex() != str(want).lower():
            raise MeasurementError(f"measurement mismatch: RTMR[{i}] {quote.rtmrs[i].hex()}")
    checks.append("MRTD and RTMRs equal measurement.json")
    return quote.report_data, quote.mrtd.hex(), checks


def _expected(doc: Mapping[str, Any], mode: str, key: str) -> str:
    if doc.get("mode", mode) != mode:
        raise MeasurementError(
            f"measurement mismatch: measurement.json predicts a {doc.get('mode')} guest, "
            f"the agent runs {mode}"
        )
    value = doc.get(key)
    if not isinstance(value, str):
        raise MeasurementError(f"measurement.json has no {key!r}")
    return value.lower()


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(f"the evidence has no {name}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError(f"the evidence's {name} is not base64") from None


def _spki(cert_der: bytes) -> bytes:
    return (
        x509.load_der_x509_certificate(cert_der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

"""The agent's TLS: a key pair made in memory at start-up, and what the evidence binds.

The key is generated inside the guest each time the agent starts and never written to a
file system: Python's ssl module (and uvicorn, in every version the image may have) loads
certificates only from a path, so the PEM lives in an anonymous memory file (memfd) that
the agent keeps open while it serves; uvicorn loads `/proc/<agent pid>/fd/<n>`, worker
processes included.

What `POST /attestation` puts into REPORT_DATA (64 bytes; docs/attestation.md):

    REPORT_DATA[0:32]  = SHA-256(DOMAIN || SubjectPublicKeyInfo of the TLS key, DER)
    REPORT_DATA[32:64] = the caller's 32-byte nonce, verbatim

A relying party reads the SPKI from the certificate its own TLS connection received, so a
report that matches proves that the key on the other end of that connection belongs to the
attested guest. The verifier (verifier/src/cube_verify/binding.py) has the same layout.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError

# cryptography is imported where a key or certificate is handled, and the serving agent
# handles them in a short-lived child process (identity_for): loaded once, cryptography
# stays in a process for good (10 MB of the agent's idle RSS, measured).

DOMAIN = b"cube-hal attested-tls v1\0"
NONCE_BYTES = 32
# A self-signed certificate's dates carry no trust here (the key is pinned after
# attestation); long enough that no clock in a VM makes it expire under a client.
VALIDITY = datetime.timedelta(days=3650)
# Set by the CLI for worker processes (each builds its app from the environment): the
# serving key's SubjectPublicKeyInfo (DER, hex), so /attestation binds the listener's key.
SPKI_ENV = "CUBE_AGENT_TLS_SPKI"


class TlsError(ConfigError):
    """A user-supplied certificate or key that cannot be used; one line."""


def spki_digest(spki_der: bytes | None) -> bytes:
    """The REPORT_DATA half that names the TLS key; 32 zero bytes when there is none."""
    if spki_der is None:
        return bytes(32)
    return hashlib.sha256(DOMAIN + spki_der).digest()


def report_data(spki_der: bytes | None, nonce: bytes) -> bytes:
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    return spki_digest(spki_der) + nonce


@dataclass
class TlsIdentity:
    """A certificate chain and its private key, both PEM, held in memory, and the
    certificate's SubjectPublicKeyInfo (DER): what attestation binds."""

    cert_pem: bytes
    key_pem: bytes
    spki_der: bytes
    _fd: int | None = field(default=None, repr=False, compare=False)

    @property
    def spki_sha256(self) -> str:
        return hashlib.sha256(self.spki_der).hexdigest()

    def serve_path(self) -> str:
        """The chain and key in one PEM "file" in memory, for uvicorn's ssl_certfile."""
        if self._fd is None:
            self._fd = os.memfd_create("cube-agent-tls", os.MFD_CLOEXEC)
            os.write(self._fd, self.cert_pem + b"\n" + self.key_pem)
        return f"/proc/{os.getpid()}/fd/{self._fd}"

    def ssl_context(self) -> ssl.SSLContext:
        """What uvicorn will build from serve_path(); loading it here fails early."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(self.serve_path())
        except ssl.SSLError as exc:
            raise TlsError(f"the certificate and key do not load: {exc.reason or exc}") from None
        return ctx

    def __repr__(self) -> str:  # never print the key
        return f"TlsIdentity(spki_sha256={self.spki_sha256})"


def generate(names: list[str] | None = None) -> TlsIdentity:
    """A fresh ECDSA P-256 key and a self-signed certificate for it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cube-agent")])
    sans: list[x509.GeneralName] = []
    for name in names or []:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TlsIdentity(cert.public_bytes(serialization.Encoding.PEM), key_pem, spki)


def load(cert_file: Path, key_file: Path) -> TlsIdentity:
    """A user-supplied certificate (chain, leaf first) and its key, e.g. for browsers."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert_pem, key_pem = cert_file.read_bytes(), key_file.read_bytes()
    except OSError as exc:
        raise TlsError(f"{exc.filename}: {exc.strerror}") from None
    try:
        leaf = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(f"{cert_file} / {key_file}: not a PEM certificate and key: {exc}") from None
    der, public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    spki = leaf.public_key().public_bytes(der, public)
    if spki != key.public_key().public_bytes(der, public):
        raise TlsError(f"{key_file} is not the key of the certificate in {cert_file}")
    identity = TlsIdentity(cert_pem, key_pem, spki)
    identity.ssl_context()  # fail at start-up, not on the first connection
    return identity


def from_environment() -> bytes | None:
    """The serving key's SPKI as the CLI passed it to worker processes."""
    with contextlib.suppress(ValueError):
        return bytes.fromhex(os.environ.get(SPKI_ENV, "")) or None
    return None


# uvicorn's exit status for a server that did not start (uvicorn.main; not exported by 0.40)
STARTUP_FAILURE = 3


def identity_for(settings: Any) -> TlsIdentity | None:
    """The identity the main listener serves, or None for plain HTTP (loopback/sandbox)."""
    if not settings.serves_tls:
        return None
    if settings.tls_cert_file is not None:
        request = {"load": [str(settings.tls_cert_file), str(settings.tls_key_file)]}
    else:
        request = {"generate": [] if settings.host in ("0.0.0.0", "::", "") else [settings.host]}
    return _in_child(request)


def _in_child(request: dict[str, list[str]]) -> TlsIdentity:
    """generate() or load() in a child process (see the note on cryptography above); the
    key comes back over a pipe, never through a file."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", __name__],
        input=json.dumps(request).encode(),
        capture_output=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TlsError(why[-1] if why else f"the TLS helper exited {proc.returncode}")
    answer = json.loads(proc.stdout)
    return TlsIdentity(
        answer["cert_pem"].encode(), answer["key_pem"].encode(), bytes.fromhex(answer["spki"])
    )


def _child() -> int:
    """The child's side of _in_child: one JSON request on stdin, the identity on stdout."""
    import json
    import sys

    request = json.load(sys.stdin)
    try:
        if "load" in request:
            identity = load(*(Path(p) for p in request["load"]))
        else:
            identity = generate(request["generate"])
    except TlsError as exc:
        print(exc, file=sys.stderr)
        return 1
    answer = {
        "cert_pem": identity.cert_pem.decode(),
        "key_pem": identity.key_pem.decode(),
        "spki": identity.spki_der.hex(),
    }
    json.dump(answer, sys.stdout)
    return 0


def run(app: Any, options: dict[str, Any], plain: tuple[str, int] | None) -> None:
    """Serve `app` with uvicorn as `options` say and, if given, on a plain loopback
    listener too: two uvicorn servers on one event loop, the app's lifespan run once."""
    import asyncio

    import uvicorn

    main = uvicorn.Server(uvicorn.Config(app, **options))
    if plain is None:
        main.run()
        if not main.started:  # as uvicorn.run: a listener that never came up is exit 3
            raise SystemExit(STARTUP_FAILURE)
        return
    second = {**options, "host": plain[0], "port": plain[1], "lifespan": "off"}
    second.pop("ssl_certfile", None)
    extra = uvicorn.Server(uvicorn.Config(app, **second))

    async def both() -> None:
        first = asyncio.create_task(main.serve())
        while not main.started and not first.done():  # lifespan first, then plain callers
            await asyncio.sleep(0.05)
        if first.done():
            return await first
        other = asyncio.create_task(extra.serve())
        await asyncio.wait([first, other], return_when=asyncio.FIRST_COMPLETED)
        main.should_exit = extra.should_exit = True
        await asyncio.gather(first, other)

    with asyncio.Runner(loop_factory=main.config.get_loop_factory()) as runner:
        runner.run(both())
    if not (main.started and extra.started):
        raise SystemExit(STARTUP_FAILURE)


if __name__ == "__main__":
    raise SystemExit(_child())

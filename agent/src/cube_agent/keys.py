"""API keys: the JSON key file and the checks made against it.

A key is 32 random bytes (`secrets.token_urlsafe`), shown once when created. The file
keeps only its SHA-256: for a high-entropy random token a fast hash is enough (there is
nothing to brute-force, unlike a password, so a slow KDF would only add latency to every
request), and a leaked file gives no usable key. Lookups compare every stored hash with
`hmac.compare_digest`, so timing says nothing about which hash came close.

File format::

    {"keys": [{"name": "admin", "sha256": "<hex>", "domains": ["*"], "admin": true}]}
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ALL_DOMAINS = "*"
DEFAULT_DOMAIN = "default"
KEY_PREFIX = "cube_"
# Path segments the agent serves itself; a domain with one of these names could not be reached.
RESERVED_DOMAINS = frozenset(
    {"v1", "api", "admin", "health", "ready", "metrics", "attestation", "docs", "openapi.json"}
)
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class KeyFileError(Exception):
    """The key file is missing, unreadable or malformed; the message says which."""


@dataclass(frozen=True)
class Key:
    name: str
    sha256: str
    domains: tuple[str, ...]
    admin: bool = False
    created: str = ""

    def allows(self, domain: str) -> bool:
        return self.admin or ALL_DOMAINS in self.domains or domain in self.domains


@dataclass
class KeyFile:
    """The key file on disk. Used by the CLI (edit) and the server (read, reload on change)."""

    path: Path
    keys: list[Key] = field(default_factory=list)
    _mtime: float = 0.0
    _checked: float = 0.0

    @classmethod
    def load(cls, path: Path) -> KeyFile:
        kf = cls(path)
        kf._read()
        return kf

    def _read(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise KeyFileError(
                f"{self.path}: no such key file (create it: cube-agent keys init)"
            ) from None
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"{self.path}: {exc}") from None
        try:
            self.keys = [
                Key(
                    name=str(k["name"]),
                    sha256=str(k["sha256"]),
                    domains=tuple(k.get("domains", [])),
                    admin=bool(k.get("admin", False)),
                    created=str(k.get("created", "")),
                )
                for k in data["keys"]
            ]
        except (KeyError, TypeError) as exc:
            raise KeyFileError(f"{self.path}: malformed key entry ({exc!r})") from None
        self._mtime = mtime

    def reload_if_changed(self, every: float = 1.0) -> None:
        """Pick up `cube-agent keys add/remove` without a restart (stat at most once a second)."""
        now = time.monotonic()
        if now - self._checked < every:
            return
        self._checked = now
        try:
            if self.path.stat().st_mtime != self._mtime:
                self._read()
        except (OSError, KeyFileError):
            pass  # keep serving the last good set; a broken edit must not lock everyone out

    def find(self, presented: str) -> Key | None:
        digest = hash_key(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found

    def add(self, name: str, domains: list[str], admin: bool = False) -> str:
        if any(k.name == name for k in self.keys):
            raise KeyFileError(f"a key named {name!r} already exists")
        for domain in domains:
            check_domain(domain)
        plaintext = new_key()
        self.keys.append(
            Key(
                name=name,
                sha256=hash_key(plaintext),
                domains=tuple(domains),
                admin=admin,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
        )
        return plaintext

    def remove(self, name: str) -> None:
        kept = [k for k in self.keys if k.name != name]
        if len(kept) == len(self.keys):
            raise KeyFileError(f"no key named {name!r}")
        self.keys = kept

    def save(self, mode: int = 0o640) -> None:
        """Write atomically (readers never see half a file), keeping mode and group."""
        make_dirs(self.path.parent)
        try:
            st = self.path.stat()
            mode, gid = st.st_mode & 0o777, st.st_gid
        except FileNotFoundError:
            gid = -1
        text = json.dumps({"keys": [asdict(k) for k in self.keys]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, mode)
            if gid != -1 and os.geteuid() == 0:
                os.chown(tmp, 0, gid)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def make_dirs(path: Path) -> None:
    """Create path and its missing parents 0755 whatever the umask.

    `keys init` runs as root under the unit's UMask=0027; directories it created 0750
    root:root would lock the agent's own user out of its key file. The files inside
    carry their own modes (keys 0640, admin key 0600)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o755)  # noqa: S103 -- a directory; the files keep their modes


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def check_domain(domain: str) -> None:
    if domain == ALL_DOMAINS:
        return
    if not _DOMAIN_RE.match(domain) or domain in RESERVED_DOMAINS:
        raise KeyFileError(
            f"invalid domain {domain!r}: letters, digits, '.', '_', '-' "
            f"(not one of {', '.join(sorted(RESERVED_DOMAINS))})"
        )


def init_key_file(path: Path, group: str | None) -> Path | None:
    """Create the key file with one admin key; return the admin key's file, or None if the
    key file already exists (so `ExecStartPre=+cube-agent keys init` is safe on every start).

    The plaintext admin key goes to `admin.key` next to the key file, mode 0600 (root only
    when run as root); the key file is 0640 and, when run as root, group `group` so the
    agent (running as that group's user) can read it but not change it.
    """
    if path.exists():
        return None
    kf = KeyFile(path)
    plaintext = kf.add("admin", [ALL_DOMAINS], admin=True)
    kf.save(mode=0o640)
    if group and os.geteuid() == 0:
        # No such group on this machine (a developer box): root-owned is fine.
        with contextlib.suppress(KeyError):
            os.chown(path, 0, grp.getgrnam(group).gr_gid)
    admin_file = path.parent / "admin.key"
    fd = os.open(admin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plaintext + "\n")
    os.chmod(admin_file, 0o600)
    return admin_file

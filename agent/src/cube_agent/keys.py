"""API keys: the JSON key file and the checks made against it.

A key is 32 random bytes (`secrets.token_urlsafe`), shown once when created. The file
keeps only its SHA-256: for a high-entropy random token a fast hash is enough (there is
nothing to brute-force, unlike a password, so a slow KDF would only add latency to every
request), and a leaked file gives no usable key. Lookups compare every stored hash with
`hmac.compare_digest`, so timing says nothing about which hash came close.

File format (checked strictly: types as shown, no other fields)::

    {"keys": [{"name": "admin", "sha256": "<hex>", "domains": ["*"], "admin": true,
               "created": "2026-01-01T00:00:00Z"}]}

The running agent fails closed on a bad file: a deleted, emptied or unparsable file means
no key is valid; a file that parses but has a bad entry is refused with an error naming the
entry, and the last good keys stay (the edit is logged at error level, not applied).
`keys add/remove/init` hold a lock (`fcntl.flock` on `<file>.lock`) across
read-change-write, and replace the file atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger("cube_agent.keys")

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


class KeyFileUnparsable(KeyFileError):
    """Missing, empty or not JSON: nothing in it can be trusted (no key is valid)."""


class _Entry(BaseModel):
    # strict: "admin": "false" is not a boolean, "domains": "team-b" is not a list
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    domains: list[str]
    admin: bool = False
    created: str = ""

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        for domain in value:
            try:
                check_domain(domain)
            except KeyFileError as exc:
                raise ValueError(str(exc)) from None
        return value


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    keys: list[dict]


def parse_keys(text: str, where: Path) -> list[Key]:
    """The keys of a key file's text; KeyFileUnparsable if it is empty or not JSON,
    KeyFileError naming the entry if one is malformed."""
    if not text.strip():
        raise KeyFileUnparsable(f"{where}: the key file is empty")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeyFileUnparsable(f"{where}: not JSON: {exc}") from None
    try:
        entries = _File.model_validate(data).keys
    except ValidationError as exc:
        raise KeyFileError(f"{where}: {_first_error(exc)}") from None
    keys: list[Key] = []
    for index, raw in enumerate(entries):
        label = f"keys[{index}]" + (
            f" ({raw['name']!r})" if isinstance(raw.get("name"), str) else ""
        )
        try:
            entry = _Entry.model_validate(raw)
        except ValidationError as exc:
            raise KeyFileError(f"{where}: {label}: {_first_error(exc)}") from None
        if any(k.name == entry.name for k in keys):
            raise KeyFileError(f"{where}: {label}: name: duplicate key name")
        keys.append(Key(entry.name, entry.sha256, tuple(entry.domains), entry.admin, entry.created))
    return keys


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "file"
    return f"{loc}: {err['msg']}".replace("Value error, ", "")


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
    _version: tuple[int, ...] | None = None  # what the last read saw (inode, size, mtime)
    _checked: float = 0.0

    @classmethod
    def load(cls, path: Path) -> KeyFile:
        kf = cls(path)
        kf._read()
        return kf

    def _read(self) -> None:
        try:
            st = self.path.stat()
            text = self.path.read_text()
        except FileNotFoundError:
            raise KeyFileUnparsable(
                f"{self.path}: no such key file (create it: cube-agent keys init)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileUnparsable(f"{self.path}: {exc}") from None
        self._version = _version(st)
        self.keys = parse_keys(text, self.path)

    def reload_if_changed(self, every: float = 1.0) -> None:
        """Pick up `cube-agent keys add/remove` without a restart (stat at most once a
        second). Fails closed: a file that is gone, empty or not JSON leaves no valid key;
        one with a bad entry keeps the last good keys. Either is logged at error level,
        once per change."""
        now = time.monotonic()
        if now - self._checked < every:
            return
        self._checked = now
        try:
            version = _version(self.path.stat())
        except FileNotFoundError:
            version = None
        except OSError as exc:
            version = ("error", str(exc))  # type: ignore[assignment]
        if version == self._version:
            return
        try:
            self._read()
        except KeyFileUnparsable as exc:
            self._version = version
            if self.keys or version is not None:
                log.error("key file unusable: no key is valid until it is fixed: %s", exc)
            self.keys = []
        except KeyFileError as exc:
            log.error("key file change refused, the last good keys stay: %s", exc)
        else:
            log.info("key file reloaded", extra={"keys": len(self.keys)})

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
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            if gid != -1 and os.geteuid() == 0:
                os.chown(tmp, 0, gid)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _version(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the key file's edit lock (`<file>.lock`, flock) across read-change-write, so
    parallel `keys add/remove/init` never lose each other's changes."""
    make_dirs(path.parent)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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
    with locked(path):
        if path.exists():
            return None
        return _init_locked(path, group)


def _init_locked(path: Path, group: str | None) -> Path:
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

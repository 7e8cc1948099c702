"""A fake configfs-tsm report directory, mounted with FUSE (test fixture).

    python fake_tsm.py MOUNTPOINT [--measurement HEX] [--vcek-key PEM] [--certs FILE]
                       [--policy HEX] [--chip-id HEX] [--tcb HEX] [--no-aux] [--race]
                       [--fail-errno N] [--allow-other]

MOUNTPOINT plays `/sys/kernel/config/tsm/report`. A plain directory cannot: there `mkdir`
makes an empty directory, reading a file cannot generate anything, and `rmdir` of a
populated directory fails. Mounted here, it follows Linux's
Documentation/ABI/testing/configfs-tsm and drivers/virt/coco/tsm.c as the agent sees them:

* `mkdir MOUNTPOINT/NAME` creates a report entry already holding `inblob` (write-only,
  at most 64 bytes), `outblob`, `provider` ("sev_guest"), `generation` and, unless
  --no-aux, `auxblob`; `rmdir` removes the populated entry.
* every write to `inblob` increments `generation`.
* reading `outblob` generates the report for the current `inblob` (reading it again with
  no write in between returns the same report); reading it before any `inblob` write
  fails with EINVAL.
* the report has the layout of an SEV-SNP ATTESTATION_REPORT (SEV-SNP Firmware ABI,
  0x4A0 bytes, version 3): POLICY (--policy) at 0x08, VMPL 0, SIGNATURE_ALGO 1 (ECDSA
  P-384), REPORT_DATA = inblob (zero-padded) at 0x50, MEASUREMENT (--measurement) at 0x90,
  REPORT_ID at 0x140, REPORTED_TCB (--tcb) at 0x180, CPUID family/model at 0x188, CHIP_ID
  (--chip-id) at 0x1A0. With --vcek-key the report is signed as the firmware signs it:
  ECDSA P-384/SHA-384 over bytes 0x000-0x29F, r and s little-endian at 0x2A0 and 0x2E8
  (without it the signature is zeros). `auxblob` is --certs' content (the GHCB
  certificate table the host would provide).
* faults for tests: --race bumps `generation` as if another writer touched the entry
  while the report was generated; --fail-errno N makes reading `outblob` fail with errno N.

Runs in the foreground until the mount point is unmounted (`umount MOUNTPOINT`).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import mfusepy as fuse

INBLOB_MAX = 64
REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
REPORT_DATA_OFFSET = 0x50
MEASUREMENT_OFFSET = 0x90
DEFAULT_POLICY = 0x30000  # bit 17 (must be one), bit 16 (SMT allowed); no debug


@dataclass
class Entry:
    inblob: bytes | None = None
    generation: int = 0
    report: bytes = b""
    report_generation: int = -1


class FakeTsm(fuse.Operations):
    use_ns = True

    def __init__(
        self,
        measurement: bytes,
        aux: bytes | None,
        race: bool,
        fail_errno: int,
        signer=None,
        policy: int = DEFAULT_POLICY,
        chip_id: bytes = bytes(64),
        tcb: int = 0,
    ):
        self.entries: dict[str, Entry] = {}
        self.measurement = measurement
        self.aux = aux
        self.race = race
        self.fail_errno = fail_errno
        self.signer = signer
        self.policy = policy
        self.chip_id = chip_id
        self.tcb = tcb
        self.now = time.time_ns()

    def attributes(self) -> dict[str, int]:
        names = {"inblob": 0o200, "outblob": 0o444, "provider": 0o444, "generation": 0o444}
        if self.aux is not None:
            names["auxblob"] = 0o444
        return names

    def split(self, path: str) -> tuple[Entry | None, str]:
        parts = path.strip("/").split("/")
        entry = self.entries.get(parts[0]) if parts[0] else None
        if (parts[0] and entry is None) or len(parts) > 2:
            raise fuse.FuseOSError(errno.ENOENT)
        attr = parts[1] if len(parts) == 2 else ""
        if attr and attr not in self.attributes():
            raise fuse.FuseOSError(errno.ENOENT)
        return entry, attr

    def getattr(self, path, fh=None):
        _, attr = self.split(path)
        times = {"st_atime": self.now, "st_mtime": self.now, "st_ctime": self.now}
        if not attr:
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times}
        # configfs gives every attribute a page-sized st_size; reads run to EOF
        size = 4096
        return {"st_mode": stat.S_IFREG | self.attributes()[attr], "st_size": size, **times}

    def readdir(self, path, fh):
        entry, attr = self.split(path)
        if attr:
            raise fuse.FuseOSError(errno.ENOTDIR)
        names = list(self.attributes()) if entry else list(self.entries)
        return [".", "..", *names]

    def mkdir(self, path, mode):
        parts = path.strip("/").split("/")
        if len(parts) != 1:
            raise fuse.FuseOSError(errno.EPERM)
        if parts[0] in self.entries:
            raise fuse.FuseOSError(errno.EEXIST)
        self.entries[parts[0]] = Entry()
        return 0

    def rmdir(self, path):
        parts = path.strip("/").split("/")
        if len(parts) != 1 or self.entries.pop(parts[0], None) is None:
            raise fuse.FuseOSError(errno.ENOENT)
        return 0

    def open(self, path, flags):
        self.split(path)
        return 0

    def truncate(self, path, length, fh=None):
        return 0  # opening inblob with O_TRUNC; configfs ignores it as well

    def write(self, path, data, offset, fh):
        entry, attr = self.split(path)
        if attr != "inblob":
            raise fuse.FuseOSError(errno.EACCES)
        if offset + len(data) > INBLOB_MAX:
            raise fuse.FuseOSError(errno.EFBIG)
        old = entry.inblob or b""
        entry.inblob = old[:offset].ljust(offset, b"\0") + data
        entry.generation += 1
        return len(data)

    def read(self, path, size, offset, fh):
        entry, attr = self.split(path)
        if attr == "provider":
            content = b"sev_guest\n"
        elif attr == "generation":
            content = f"{entry.generation}\n".encode()
        elif attr == "auxblob":
            content = self.aux or b""
        elif attr == "outblob":
            content = self.outblob(entry)
        else:
            raise fuse.FuseOSError(errno.EACCES)
        return content[offset : offset + size]

    def outblob(self, entry: Entry) -> bytes:
        if self.fail_errno:
            raise fuse.FuseOSError(self.fail_errno)
        if entry.inblob is None:
            raise fuse.FuseOSError(errno.EINVAL)
        if entry.report_generation != entry.generation:
            entry.report, entry.report_generation = self.make_report(entry), entry.generation
            if self.race:
                entry.generation += 1
        return entry.report

    def make_report(self, entry: Entry) -> bytes:
        report = bytearray(REPORT_SIZE)
        struct.pack_into("<IIQ", report, 0, 3, 1, self.policy)  # version, guest SVN, policy
        struct.pack_into("<II", report, 0x30, 0, 1)  # VMPL 0, ECDSA P-384 with SHA-384
        struct.pack_into("<Q", report, 0x38, self.tcb)  # CURRENT_TCB
        report[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + INBLOB_MAX] = entry.inblob.ljust(
            INBLOB_MAX, b"\0"
        )
        report[MEASUREMENT_OFFSET : MEASUREMENT_OFFSET + 48] = self.measurement
        report[0x140:0x160] = hashlib.sha256(b"report id").digest()  # constant for this guest
        struct.pack_into("<Q", report, 0x180, self.tcb)  # REPORTED_TCB
        report[0x188:0x18B] = bytes([0x19, 0x11, 0x01])  # CPUID family/model/stepping: Genoa
        report[0x1A0:0x1E0] = self.chip_id
        struct.pack_into("<QQ", report, 0x1E0, self.tcb, self.tcb)  # COMMITTED_TCB, ...
        struct.pack_into("<Q", report, 0x1F8, self.tcb)  # LAUNCH_TCB
        if self.signer is not None:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

            der = self.signer.sign(bytes(report[:SIGNED_SIZE]), ec.ECDSA(hashes.SHA384()))
            r, s = decode_dss_signature(der)
            report[0x2A0:0x2E8] = r.to_bytes(72, "little")
            report[0x2E8:0x330] = s.to_bytes(72, "little")
        return bytes(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint")
    parser.add_argument("--measurement", default="ab" * 48, help="48 bytes, hex")
    parser.add_argument("--vcek-key", type=Path, help="PEM ECDSA P-384 key: sign reports")
    parser.add_argument("--certs", type=Path, help="auxblob content: a GHCB certificate table")
    parser.add_argument("--policy", default=hex(DEFAULT_POLICY), help="guest POLICY, hex")
    parser.add_argument("--chip-id", default="00" * 64, help="CHIP_ID, 64 bytes hex")
    parser.add_argument("--tcb", default="0", help="REPORTED_TCB as a 64-bit hex value")
    parser.add_argument("--no-aux", action="store_true", help="no auxblob attribute")
    parser.add_argument(
        "--allow-other", action="store_true", help="other users may use the mount (as root)"
    )
    parser.add_argument("--race", action="store_true")
    parser.add_argument("--fail-errno", type=int, default=0)
    args = parser.parse_args()
    measurement = bytes.fromhex(args.measurement)
    if len(measurement) != 48:
        parser.error("--measurement must be 48 bytes")
    if args.no_aux:
        aux = None
    else:
        aux = args.certs.read_bytes() if args.certs else b"fake certificate table\0"
    signer = None
    if args.vcek_key:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        signer = load_pem_private_key(args.vcek_key.read_bytes(), password=None)
    chip_id = bytes.fromhex(args.chip_id)
    if len(chip_id) != 64:
        parser.error("--chip-id must be 64 bytes")
    ops = FakeTsm(
        measurement,
        aux,
        args.race,
        args.fail_errno,
        signer=signer,
        policy=int(args.policy, 16),
        chip_id=chip_id,
        tcb=int(args.tcb, 16),
    )
    # One thread: FUSE calls are serialised, so the state needs no locks.
    options = {"allow_other": True} if args.allow_other else {}
    fuse.FUSE(ops, args.mountpoint, foreground=True, nothreads=True, direct_io=True, **options)


if __name__ == "__main__":
    main()

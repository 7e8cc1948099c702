"""A fake configfs-tsm report directory, mounted with FUSE (test fixture).

    python fake_tsm.py MOUNTPOINT [--measurement HEX] [--no-aux] [--race] [--fail-errno N]

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
  1184 bytes): version 2 at 0x00, REPORT_DATA = inblob (zero-padded) at 0x50, MEASUREMENT
  (--measurement, 48 bytes) at 0x90. It is not signed: the signature (0x2A0) is zeros.
* faults for tests: --race bumps `generation` as if another writer touched the entry
  while the report was generated; --fail-errno N makes reading `outblob` fail with errno N.

Runs in the foreground until the mount point is unmounted (`umount MOUNTPOINT`).
"""

from __future__ import annotations

import argparse
import errno
import stat
import struct
import time
from dataclasses import dataclass

import mfusepy as fuse

INBLOB_MAX = 64
REPORT_SIZE = 0x4A0
REPORT_DATA_OFFSET = 0x50
MEASUREMENT_OFFSET = 0x90


@dataclass
class Entry:
    inblob: bytes | None = None
    generation: int = 0
    report: bytes = b""
    report_generation: int = -1


class FakeTsm(fuse.Operations):
    use_ns = True

    def __init__(self, measurement: bytes, aux: bytes | None, race: bool, fail_errno: int):
        self.entries: dict[str, Entry] = {}
        self.measurement = measurement
        self.aux = aux
        self.race = race
        self.fail_errno = fail_errno
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
            report = bytearray(REPORT_SIZE)
            struct.pack_into("<IIQ", report, 0, 2, 1, 0x30000)  # version, guest SVN, policy
            report[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + INBLOB_MAX] = entry.inblob.ljust(
                INBLOB_MAX, b"\0"
            )
            report[MEASUREMENT_OFFSET : MEASUREMENT_OFFSET + 48] = self.measurement
            entry.report, entry.report_generation = bytes(report), entry.generation
            if self.race:
                entry.generation += 1
        return entry.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint")
    parser.add_argument("--measurement", default="ab" * 48, help="48 bytes, hex")
    parser.add_argument("--no-aux", action="store_true", help="no auxblob attribute")
    parser.add_argument("--race", action="store_true")
    parser.add_argument("--fail-errno", type=int, default=0)
    args = parser.parse_args()
    measurement = bytes.fromhex(args.measurement)
    if len(measurement) != 48:
        parser.error("--measurement must be 48 bytes")
    aux = None if args.no_aux else b"fake certificate table\0"
    ops = FakeTsm(measurement, aux, args.race, args.fail_errno)
    # One thread: FUSE calls are serialised, so the state needs no locks.
    fuse.FUSE(ops, args.mountpoint, foreground=True, nothreads=True, direct_io=True)


if __name__ == "__main__":
    main()

"""Wheels that carry a pinned wheel's real metadata and nothing else.

PyPI serves each wheel's METADATA beside it (`<wheel URL>.metadata`, PEP 658), a few KB
where the wheel can be gigabytes; for the wheels it has none for, the METADATA member is
read out of the wheel with HTTP range requests (the zip's directory, then that member),
as pip's lazy wheel does. A stub is a valid wheel of the same file name with
that METADATA, so installers and resolvers see the real names, versions, Requires-Dist,
Requires-Python and tags. The metadata is cached in ~/.cache/cube-hal/wheel-metadata/,
by file name (a PyPI file never changes)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from packaging.utils import parse_wheel_filename

CACHE = Path(
    os.environ.get("CUBE_WHEEL_METADATA_CACHE", Path.home() / ".cache/cube-hal/wheel-metadata")
)


class RangeFile(io.RawIOBase):
    """A remote file, read-only and seekable, each read one HTTP range request."""

    def __init__(self, url: str) -> None:
        self.url = url
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=60) as response:
            self.size = int(response.headers["Content-Length"])
        self.position = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def readinto(self, buffer) -> int:
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        headers = {"Range": f"bytes={self.position}-{end - 1}"}
        request = urllib.request.Request(self.url, headers=headers)
        with urllib.request.urlopen(request, timeout=120) as response:
            data = response.read()
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def _from_wheel(url: str) -> bytes:
    filename = url.rsplit("/", 1)[1]
    dist_info = "-".join(filename.split("-")[:2]) + ".dist-info/METADATA"
    with zipfile.ZipFile(io.BufferedReader(RangeFile(url), buffer_size=1 << 16)) as wheel:
        return wheel.read(dist_info)


def metadata(url: str) -> bytes:
    """The METADATA PyPI serves for the wheel at `url`, cached."""
    path = CACHE / (url.rsplit("/", 1)[1] + ".metadata")
    if not path.is_file():
        try:
            with urllib.request.urlopen(url + ".metadata", timeout=60) as response:
                data = response.read()
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            data = _from_wheel(url)
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.rename(path)
    return path.read_bytes()


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def write_stub(url: str, dest: Path) -> Path:
    """A stub of the wheel at `url` in `dest`, under the wheel's own file name."""
    filename = url.rsplit("/", 1)[1]
    _, version, _, tags = parse_wheel_filename(filename)
    distribution = filename.split("-")[0]
    dist_info = f"{distribution}-{filename.split('-')[1]}.dist-info"
    pure = all(tag.abi == "none" and tag.platform == "any" for tag in tags)
    files = {
        f"{dist_info}/METADATA": metadata(url),
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: cube-hal-stub\n"
            f"Root-Is-Purelib: {'true' if pure else 'false'}\n"
            + "".join(f"Tag: {tag}\n" for tag in sorted(map(str, tags)))
        ).encode(),
    }
    record = "".join(_record_line(name, data) for name, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    path = dest / filename
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{dist_info}/RECORD", record)
    assert version  # parse_wheel_filename validated the name
    return path

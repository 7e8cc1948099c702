"""Run real programs for tests: on a free port, waited for, and always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(what: str) -> None:
    """A test needs something this machine lacks: skip here, but fail in CI, where it
    must be present."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: this must not be skipped)")
    pytest.skip(what)


def running(pid: int) -> bool:
    """Whether `pid` runs: exists and is not a zombie (an orphan waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def http_status(url: str, timeout: float = 2) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def wait_for_url(url: str, timeout: float = 30, ok: Sequence[int] = (200,)) -> None:
    """Wait until `url` answers with one of the `ok` statuses."""
    deadline = time.monotonic() + timeout
    while http_status(url) not in ok:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer {list(ok)} within {timeout:g} s")
        time.sleep(0.05)


class Process:
    """A program started for a test, in its own process group so that stopping it also
    stops its children. Its output goes to a file, shown when something fails."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)
        self.popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for_url(self, url: str, timeout: float = 30, ok: Sequence[int] = (200,)) -> None:
        """Wait until `url` answers; stop the program and say why if it does not."""
        deadline = time.monotonic() + timeout
        while http_status(url) not in ok:
            if not self.alive():
                self.stop()
                raise RuntimeError(
                    f"{self.args[0]} exited with {self.popen.returncode} before {url} "
                    f"answered:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"{url} did not answer {list(ok)} within {timeout:g} s:\n{self.output()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM the process group, SIGKILL it if it lingers; return the exit status."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader may be gone while children of the group still run.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.returncode

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

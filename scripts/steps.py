"""The build steps of scripts/cvm-kernel and scripts/test-image: run quietly, their output
shown only when one fails, as one error message naming the command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


class StepError(Exception):
    """A step that failed; str() is the message: the command and its output's tail."""


def logger(tool: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"{tool}: {message}", file=sys.stderr, flush=True)

    return log


def sh(
    *args: str | Path, error: type[StepError] = StepError, **kwargs
) -> subprocess.CompletedProcess:
    """Run one step; a missing program or a failure raises `error`."""
    command = [str(a) for a in args]
    try:
        return subprocess.run(
            command,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kwargs,
        )
    except FileNotFoundError as exc:
        raise error(f"{command[0]}: not installed (scripts/install-host-deps.sh)") from exc
    except subprocess.CalledProcessError as exc:
        tail = "\n".join(exc.stdout.splitlines()[-30:])
        raise error(f"{' '.join(command)}: exit status {exc.returncode}\n{tail}") from exc

"""Wall-time bounds in tests, scaled by one factor for slow or loaded machines.

CUBE_TIMEOUT_FACTOR (default 1) multiplies every bound that goes through `scaled`, the
deadlines of `wait_until` included: `CUBE_TIMEOUT_FACTOR=3 make test` on a busy 2-core
box. A bound is a limit on how long something may take, never a speed target (those are in
`make bench`); where order or counts can say it, tests assert those instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def factor() -> float:
    value = os.environ.get("CUBE_TIMEOUT_FACTOR", "") or "1"
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"CUBE_TIMEOUT_FACTOR={value!r}: not a number") from None
    if number <= 0:
        raise ValueError(f"CUBE_TIMEOUT_FACTOR={value!r}: must be positive")
    return number


def scaled(seconds: float) -> float:
    """`seconds` times CUBE_TIMEOUT_FACTOR."""
    return seconds * factor()


def wait_until(
    probe: Callable[[], T], timeout: float, what: str = "the condition", interval: float = 0.05
) -> T:
    """Call `probe` every `interval` seconds until it returns something true, and return that;
    AssertionError naming `what` after `scaled(timeout)` seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {scaled(timeout):g} s")
        time.sleep(interval)

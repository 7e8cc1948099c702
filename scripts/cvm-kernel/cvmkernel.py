#!/usr/bin/env python3
"""Build the CVM kernel offline: Linux 6.12 configured the way Buildroot configures it.

    cvmkernel.py config [--fragment F]... --out DIR   merged, checked .config in DIR
    cvmkernel.py build  [--fragment F]...             bzImage (cached), print its directory

Buildroot cannot build a kernel here (its 6.12.91 tarball cannot be downloaded), so this
takes the same kernel series from Debian's archive, its `linux_6.12.*.orig.tar.xz`, through
apt with a private configuration (the host's own apt setup is left alone), and configures
it as Buildroot's linux package does with cube_cvm_defconfig:

  1. `make x86_64_defconfig`                        (BR2_LINUX_KERNEL_DEFCONFIG="x86_64")
  2. `support/kconfig/merge_config.sh -m -O DIR DIR/.config FRAGMENTS`, then
     `make olddefconfig`                            (package/pkg-kconfig.mk)
  3. the fixups linux.mk applies for this defconfig (CONFIG_GCC_PLUGINS off), then
     `make olddefconfig` again
  4. board/cube/check-kernel-config on the result   (the LINUX_POST_CONFIGURE_HOOKS)

The default fragment is board/cube/linux-cvm.fragment; the tests add their own
(scripts/cvm-kernel/test.fragment). The bzImage is built once (about 20 CPU-minutes) and
cached under ~/.cache/cube-hal/cvm-kernel/<hash of source, fragments, base config and this
script's build settings>, with its .config beside it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from steps import StepError, logger
from steps import sh as run_step

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILDROOT_DIR = Path(
    os.environ.get("BUILDROOT_DIR", Path.home() / ".cache/cube-hal/buildroot-2026.02.3")
)
CACHE = Path(os.environ.get("CUBE_KERNEL_CACHE", Path.home() / ".cache/cube-hal/cvm-kernel"))

FRAGMENT = REPO / "board/cube/linux-cvm.fragment"
CHECK = REPO / "board/cube/check-kernel-config"
BASE_DEFCONFIG = "x86_64_defconfig"
# Debian's source package, as its Sources index lists it (apt checks the index's signature
# and the file's hash; the hash is checked again here).
DEBIAN_SOURCE = "linux"
DEBIAN_VERSION = "6.12.94-1"
ORIG = "linux_6.12.94.orig.tar.xz"
ORIG_SHA256 = "3eea3dd18f67a103f6f8312e314075f695a27eaddd839e7b6c4641e6616dabba"
APT_SOURCES = [
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian-security trixie-security main",
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian trixie main",
]
# linux.mk's fixups that apply to cube_cvm_defconfig (gzip is 6.12's default compression).
FIXUPS = ["--disable", "GCC_PLUGINS"]
# As Buildroot's BR2_REPRODUCIBLE builds the kernel: no build date, user or host in it.
SOURCE_DATE_EPOCH = "1767225600"  # 2026-01-01
BUILD_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "2026-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "cube",
    "KBUILD_BUILD_HOST": "cube-hal",
    "KBUILD_BUILD_VERSION": "1",
    "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
}


class KernelError(StepError):
    """A step that failed; str() is the message."""


log = logger("cvmkernel")


def sh(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return run_step(*args, error=KernelError, **kwargs)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_orig(dest: Path) -> Path:
    """Debian's orig tarball through apt, with a private sources list and lists directory."""
    tarball = dest / ORIG
    if tarball.is_file() and sha256_file(tarball) == ORIG_SHA256:
        return tarball
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cvmkernel-apt-") as tmp:
        apt = Path(tmp)
        (apt / "lists/partial").mkdir(parents=True)
        (apt / "parts").mkdir()
        (apt / "sources.list").write_text("\n".join(APT_SOURCES) + "\n")
        options = [
            f"-oDir::Etc::sourcelist={apt / 'sources.list'}",
            f"-oDir::Etc::sourceparts={apt / 'parts'}",
            f"-oDir::State::Lists={apt / 'lists'}",
            "-oAPT::Sandbox::User=root",
        ]
        log(f"apt-get source {DEBIAN_SOURCE}={DEBIAN_VERSION} (150 MB)")
        sh("apt-get", "-q", *options, "update")
        sh(
            "apt-get", "-q", *options, "source", "--download-only",
            f"{DEBIAN_SOURCE}={DEBIAN_VERSION}", cwd=dest,
        )  # fmt: skip
    if not tarball.is_file():
        raise KernelError(f"apt-get source left no {ORIG} in {dest}")
    got = sha256_file(tarball)
    if got != ORIG_SHA256:
        raise KernelError(f"{tarball}: sha256 {got}, expected {ORIG_SHA256}")
    return tarball


def kernel_source() -> Path:
    """The unpacked 6.12 tree (shared, read-only use: every build goes to its own O=)."""
    src = CACHE / f"src-{ORIG_SHA256[:16]}"
    if (src / ".unpacked").is_file():
        return next(p for p in src.iterdir() if p.is_dir())
    tarball = download_orig(CACHE / "download")
    partial = src.with_name(src.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log(f"unpacking {tarball.name}")
    sh("tar", "-xJf", tarball, "-C", partial)
    (partial / ".unpacked").touch()
    shutil.rmtree(src, ignore_errors=True)
    partial.rename(src)
    return next(p for p in src.iterdir() if p.is_dir())


def kmake(src: Path, out: Path, *targets: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **BUILD_ENV)
    return sh("make", "-s", "-C", src, f"O={out}", "ARCH=x86_64", *targets, env=env)


def configure(out: Path, fragments: list[Path]) -> Path:
    """Buildroot's configuration of the kernel into `out`; returns out/.config (checked)."""
    merge = BUILDROOT_DIR / "support/kconfig/merge_config.sh"
    if not merge.is_file():
        raise KernelError(f"BUILDROOT_DIR={BUILDROOT_DIR}: no Buildroot there (make buildroot)")
    src = kernel_source()
    out.mkdir(parents=True, exist_ok=True)
    dotconfig = out / ".config"
    kmake(src, out, BASE_DEFCONFIG)
    # Buildroot runs it from its top directory with the kernel's build directory as -O.
    sh(merge, "-m", "-O", out, dotconfig, *fragments, cwd=BUILDROOT_DIR)
    kmake(src, out, "olddefconfig")
    sh(src / "scripts/config", "--file", dotconfig, *FIXUPS)
    kmake(src, out, "olddefconfig")
    result = subprocess.run(
        [str(CHECK), str(dotconfig), *map(str, fragments)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise KernelError(result.stderr.strip())
    return dotconfig


def cache_key(fragments: list[Path]) -> str:
    digest = hashlib.sha256()
    for part in [ORIG_SHA256, BASE_DEFCONFIG, *FIXUPS, *sorted(BUILD_ENV.items())]:
        digest.update(str(part).encode() + b"\0")
    for path in [BUILDROOT_DIR / "support/kconfig/merge_config.sh", CHECK, *fragments]:
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build(fragments: list[Path], jobs: int | None = None) -> Path:
    """Configure and build bzImage once per input; return the directory with bzImage and
    .config in it."""
    fragments = [Path(f).resolve() for f in fragments]
    done = CACHE / f"bzImage-{cache_key(fragments)}"
    CACHE.mkdir(parents=True, exist_ok=True)
    # One build per key at a time (worktrees and CI share the cache): the others wait.
    with (CACHE / f"{done.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (done / "bzImage").is_file():
            os.utime(done)
            return done
        return _build(done, fragments, jobs)


def _build(done: Path, fragments: list[Path], jobs: int | None) -> Path:
    out = CACHE / f"build-{done.name.removeprefix('bzImage-')}"
    started = time.monotonic()
    dotconfig = configure(out, fragments)
    jobs = jobs or os.cpu_count() or 1
    log(f"building bzImage in {out} with -j{jobs} (about 20 CPU-minutes)")
    kmake(kernel_source(), out, f"-j{jobs}", "bzImage")
    partial = done.with_name(done.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copyfile(out / "arch/x86/boot/bzImage", partial / "bzImage")
    shutil.copyfile(dotconfig, partial / "config")
    (partial / "fragments").write_text("".join(f"{f}\n" for f in fragments))
    partial.rename(done)
    shutil.rmtree(out, ignore_errors=True)
    log(f"built {done / 'bzImage'} in {time.monotonic() - started:.0f} s")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["config", "build"])
    parser.add_argument(
        "--fragment",
        action="append",
        type=Path,
        help=f"config fragment (repeatable; default {FRAGMENT.relative_to(REPO)})",
    )
    parser.add_argument("--out", type=Path, help="config: the build directory to configure")
    parser.add_argument("--jobs", type=int)
    args = parser.parse_args()
    fragments = args.fragment or [FRAGMENT]
    try:
        if args.action == "config":
            if args.out is None:
                parser.error("config needs --out DIR")
            print(configure(args.out.resolve(), [f.resolve() for f in fragments]))
        else:
            print(build(fragments, args.jobs))
    except KernelError as error:
        print(f"cvmkernel: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

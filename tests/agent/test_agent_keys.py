"""`cube-agent keys …`: keys are shown once, stored hashed, and managed from the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import httpx
from cube_agent.keys import KeyFile
from support.timing import wait_until


def cli(agent_env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cube_agent", "keys", *args],
        env=agent_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=check,
    )


def test_add_prints_the_key_once_and_stores_only_its_hash(tmp_path, agent_env):
    f = tmp_path / "k" / "keys.json"
    out = cli(agent_env, "add", "--file", str(f), "--name", "app", "--domain", "a", "--domain", "b")
    key = out.stdout.strip()
    assert key.startswith("cube_") and len(key) > 40
    text = f.read_text()
    assert key not in text
    entry = json.loads(text)["keys"][0]
    assert entry["name"] == "app" and entry["domains"] == ["a", "b"] and entry["admin"] is False
    assert KeyFile.load(f).find(key).name == "app"
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    listed = cli(agent_env, "list", "--file", str(f)).stdout
    assert "app" in listed and key not in listed and entry["sha256"] not in listed


def test_remove_and_bad_input(tmp_path, agent_env):
    f = str(tmp_path / "keys.json")
    cli(agent_env, "add", "--file", f, "--name", "app", "--domain", "a")
    cli(agent_env, "add", "--file", f, "--name", "ops", "--domain", "*", "--admin")
    dup = cli(agent_env, "add", "--file", f, "--name", "app", "--domain", "a", check=False)
    assert (
        dup.returncode == 2 and dup.stderr.strip() == "cube-agent: a key named 'app' already exists"
    )
    bad = cli(agent_env, "add", "--file", f, "--name", "x", "--domain", "v1", check=False)
    assert bad.returncode == 2 and "invalid domain 'v1'" in bad.stderr
    cli(agent_env, "remove", "--file", f, "app")
    listed = json.loads(cli(agent_env, "list", "--file", f, "--json").stdout)
    assert [k["name"] for k in listed] == ["ops"] and listed[0]["admin"] is True
    gone = cli(agent_env, "remove", "--file", f, "app", check=False)
    assert gone.returncode == 2 and "no key named 'app'" in gone.stderr


def test_init_creates_an_admin_key_once(tmp_path, agent_env):
    f = tmp_path / "etc" / "keys.json"
    first = cli(agent_env, "init", "--file", str(f))
    admin_file = tmp_path / "etc" / "admin.key"
    assert str(admin_file) in first.stdout
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    admin = admin_file.read_text().strip()
    key = KeyFile.load(f).find(admin)
    assert key is not None and key.admin and key.domains == ("*",)
    before = f.read_text()
    again = cli(agent_env, "init", "--file", str(f))
    assert "nothing to do" in again.stdout and f.read_text() == before
    assert admin_file.read_text().strip() == admin


def test_init_under_the_units_umask_leaves_the_key_directory_reachable(tmp_path, agent_env):
    """cube-agent.service runs `keys init` as root with UMask=0027; the agent then runs as
    its own user and must still reach its key file through the directories init made."""
    f = tmp_path / "etc" / "cube" / "agent" / "keys.json"
    init = [sys.executable, "-m", "cube_agent", "keys", "init", "--file", str(f)]
    subprocess.run(
        ["sh", "-c", 'umask 0027 && exec "$@"', "sh", *init],
        env=agent_env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    for directory in (tmp_path / "etc" / "cube", f.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory
    assert stat.S_IMODE(f.stat().st_mode) == 0o640


def test_keys_made_by_the_cli_open_the_agent(ollama_double, tmp_path, agent_env):
    from support import Process, free_port

    f = tmp_path / "keys.json"
    cli(agent_env, "init", "--file", str(f))
    admin = (tmp_path / "admin.key").read_text().strip()
    port = free_port()
    env = {
        "UV_CUBE_AGENT_KEY_FILE": str(f),
        "UV_CUBE_AGENT_PORT": str(port),
        "UV_CUBE_AGENT_TARGET_URL": ollama_double.url,
    }
    with Process([sys.executable, "-m", "cube_agent"], env=env) as agent:
        url = f"http://127.0.0.1:{port}"
        agent.wait_for_url(url + "/health")
        assert (
            httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {admin}"}).status_code
            == 200
        )
        team = cli(
            agent_env, "add", "--file", str(f), "--name", "t", "--domain", "t"
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {team}"}
        wait_until(  # the agent stats the key file at most once a second
            lambda: httpx.get(url + "/t/v1/models", headers=headers).status_code == 200,
            3,
            "the new key accepted",
        )
        assert httpx.get(url + "/v1/models", headers=headers).status_code == 403

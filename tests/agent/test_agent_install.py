"""`pip install ./agent` gives a working `cube-agent` command in a fresh virtualenv.

Quick: the new venv sees this venv's packages through a .pth file (standing in for the
dependencies pip would download) and installs the agent itself with --no-deps, as a regular
(not editable) install with pip's usual isolated build (setuptools from the index or pip's
cache), so the package's metadata, files and entry point are what is tested.
"""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import Process, free_port

AGENT = Path(__file__).resolve().parents[2] / "agent"


@pytest.mark.slow
def test_pip_install_and_run(tmp_path, ollama_double):
    venv = tmp_path / "venv"
    # --without-pip: pip and setuptools come from this venv (the bundled ones are too old).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    py = venv / "bin" / "python"
    site_dir = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site_dir, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", AGENT],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    where = subprocess.run(
        [py, "-c", "import cube_agent; print(cube_agent.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(venv)), "the agent came from the source tree, not the install"
    cube_agent = venv / "bin" / "cube-agent"
    keys = tmp_path / "keys.json"
    key = subprocess.run(
        [cube_agent, "keys", "add", "--file", keys, "--name", "a", "--domain", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    env = {
        "UV_CUBE_AGENT_KEY_FILE": str(keys),
        "UV_CUBE_AGENT_PORT": str(port),
        "UV_CUBE_AGENT_TARGET_URL": ollama_double.url,
    }
    with Process([cube_agent], env=env, cwd=tmp_path) as agent:
        url = f"http://127.0.0.1:{port}"
        agent.wait_for_url(url + "/health")
        resp = httpx.get(url + "/api/tags", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 200 and resp.json()["models"]

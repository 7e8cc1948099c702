"""No secret is shipped: none in the repository (every tracked file) or in the files rendered
into the image for any backend and init system; the image has no root password and no
pre-made API key: the agent's first start creates its key file and admin key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CUBE_CONFIG = ROOT / "generator/cube-config"

# What a leaked credential looks like.
SECRETS = {
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "OpenAI key": r"\bsk-[A-Za-z0-9_-]{20,}",
    "GitHub token": r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{20,}",
    "AWS access key": r"\bAKIA[0-9A-Z]{16}\b",
    "Hugging Face token": r"\bhf_[A-Za-z0-9]{30,}",
    "Slack token": r"\bxox[baprs]-[A-Za-z0-9-]{10,}",
    "GitLab token": r"\bglpat-[A-Za-z0-9_-]{20}",
    "Google API key": r"\bAIza[0-9A-Za-z_-]{35}",
    "Cube agent key": r"\bcube_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])",
    "root password": r'BR2_TARGET_GENERIC_ROOT_PASSWD="[^"]+"',
    "credential literal": (
        r"""(?i)\b(?:api_?key|password|passwd|secret|token)\s*[:=]\s*["']([^"']+)["']"""
    ),
}
# Literals that stand for "no key" in client examples and tests.
PLACEHOLDERS = {"unused", "none", "x", "wrong", "not-a-key", "cube-agent", "EMPTY"}
# Fake credentials that tests feed to the guardrails' masking on purpose (AWS documents
# AKIAIOSFODNN7EXAMPLE as its example key), by file.
KNOWN_FAKES = {
    "tests/guardrails/test_masking.py": {
        "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
        "AKIAIOSFODNN7EXAMPLE",
    },
}
PATTERNS = {name: re.compile(pattern) for name, pattern in SECRETS.items()}


def leaks(name: str, text: str) -> list[str]:
    found = []
    for kind, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            value = match[1] if match.groups() else match[0]
            if kind == "credential literal" and value in PLACEHOLDERS:
                continue
            if match[0] in KNOWN_FAKES.get(name, ()):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{name}:{line}: {kind}: {match[0][:60]}")
    return found


def text_of(path: Path) -> str | None:
    try:
        return path.read_text()
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        return None  # binary, a submodule, or deleted in the working tree


def test_scanner_finds_what_it_looks_for():
    # the scan itself must not be blind: one sample of each kind is reported
    samples = {
        "private key": "-----BEGIN OPENSSH PRIVATE KEY-----",
        "OpenAI key": "sk-" + "a1" * 12,
        "GitHub token": "ghp_" + "A" * 36,
        "AWS access key": "AKIA" + "Q" * 16,
        "Hugging Face token": "hf_" + "b" * 34,
        "Slack token": "xoxb-" + "1" * 12,
        "GitLab token": "glpat-" + "c" * 20,
        "Google API key": "AIza" + "d" * 35,
        "Cube agent key": "cube_" + "e" * 43,
        "root password": "BR2_TARGET_GENERIC_ROOT_PASSWD=" + '"hunter2"',
        "credential literal": "api_key = " + '"s3cr3t-value"',
    }
    assert set(samples) == set(SECRETS)
    for kind, sample in samples.items():
        assert any(kind in leak for leak in leaks("sample", f"x\n{sample}\n")), kind
    assert leaks("sample", 'api_key="unused" BR2_TARGET_GENERIC_ROOT_PASSWD=""') == []


def test_no_secret_in_the_repository():
    files = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        )
        .stdout.decode()
        .split("\0")
    )
    this_file = Path(__file__).resolve().relative_to(ROOT).as_posix()  # holds samples
    files = [f for f in files if f and f != this_file]
    assert len(files) > 50
    found = []
    for name in files:
        text = text_of(ROOT / name)
        if text is not None:
            found += leaks(name, text)
    assert not found, "\n".join(found)
    # no key material tracked under any name
    assert not [f for f in files if re.search(r"(^|/)(keys\.json|admin\.key|.*\.pem|id_\w+)$", f)]


@pytest.mark.parametrize("init", ["BR2_INIT_SYSTEMD", "BR2_INIT_BUSYBOX"])
@pytest.mark.parametrize(
    "backend",
    [
        "BR2_PACKAGE_OLLAMA=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_OLLAMA=y",
        "BR2_PACKAGE_VLLM=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_VLLM=y",
        "BR2_PACKAGE_CUBE_LLAMA_SERVER=y\nBR2_PACKAGE_CUBE_AGENT_BACKEND_LLAMA_CPP=y",
    ],
    ids=["ollama", "vllm", "llama-cpp"],
)
def test_no_secret_in_the_rendered_image_files(backend, init, tmp_path):
    config = tmp_path / "config"
    config.write_text(f"{init}=y\nBR2_PACKAGE_CUBE_AGENT=y\n{backend}\n")
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, CUBE_CONFIG, "--config", config, "--out", out],
        check=True,
        timeout=60,
        capture_output=True,
    )
    # and what the tree copies into the image as it is
    rendered = [p for p in out.rglob("*") if p.is_file()]
    overlay = [p for p in (ROOT / "overlay").rglob("*") if p.is_file()]
    assert rendered
    found = []
    for path in rendered + overlay:
        text = text_of(path)
        assert text is not None, f"{path}: not a text file"
        found += leaks(str(path), text)
        assert path.name not in ("keys.json", "admin.key"), f"{path}: a key file baked in"
    assert not found, "\n".join(found)


def test_defconfigs_set_no_root_password():
    for defconfig in sorted((ROOT / "br2-external/configs").glob("*_defconfig")):
        text = defconfig.read_text()
        assert "# BR2_TARGET_ENABLE_ROOT_LOGIN is not set" in text, defconfig.name
        assert not re.search(r'^BR2_TARGET_GENERIC_ROOT_PASSWD="[^"]', text, re.M), defconfig.name


def test_first_boot_creates_the_key_file_the_agent_needs(tmp_path):
    """Both init systems run `cube-agent keys init` before the agent starts, and each run
    makes its own random admin key: nothing is shared between images."""
    templates = ROOT / "generator/templates/cube-agent"
    unit = (templates / "usr/lib/systemd/system/cube-agent.service.j2").read_text()
    pre = re.findall(r"^ExecStartPre=\+(.*)$", unit, re.M)
    assert "/usr/bin/cube-agent keys init" in pre
    sysv = (templates / "etc/init.d/S98cube-agent.j2").read_text()
    init_at = sysv.index("/usr/bin/cube-agent keys init")
    assert init_at < sysv.index("start-stop-daemon --start")
    admin_keys = []
    for image in ("a", "b"):
        key_file = tmp_path / image / "keys.json"
        subprocess.run(
            [sys.executable, "-m", "cube_agent", "keys", "init", "--file", str(key_file)],
            check=True,
            timeout=60,
            capture_output=True,
        )
        admin_keys.append((key_file.parent / "admin.key").read_text().strip())
    assert admin_keys[0] != admin_keys[1]

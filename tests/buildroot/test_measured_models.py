"""Models shipped in the image are measured by default. With BR2_PACKAGE_OLLAMA_PRELOAD_DIR
set, the defconfig (resolved by Buildroot's own kconfig, and by kconfiglib) puts Ollama's
models directory in the read-only root, the generator renders an Ollama that neither
prunes nor pulls there, and ollama.mk's install step (printvars, run as make runs it)
copies the tree into that directory of the target. The llama.cpp model file defaults to
a path in the root too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from buildroot_support import DEFCONFIGS, EXTERNAL, REPO, run_recipe, variant_defconfig

pytestmark = pytest.mark.buildroot

ROOT_MODELS = "/usr/share/ollama/models"
STATE_MODELS = "/var/lib/ollama/models"
BLOB = "sha256-" + "ab" * 32
MANIFEST = "manifests/registry.ollama.ai/library/tiny/latest"
VARS = ("OLLAMA_INSTALL_TARGET_CMDS", "OLLAMA_PERMISSIONS", "TARGET_DIR")


def preload_tree(path: Path) -> Path:
    """An Ollama models tree as `ollama pull` leaves it in ~/.ollama/models."""
    (path / "blobs").mkdir(parents=True)
    (path / "blobs" / BLOB).write_bytes(b"GGUF weights")
    (path / MANIFEST).parent.mkdir(parents=True)
    (path / MANIFEST).write_text('{"schemaVersion": 2, "layers": []}\n')
    return path


@pytest.fixture(scope="module")
def preloaded(configure, tmp_path_factory):
    """The systemd defconfig with a preload directory, configured by Buildroot."""
    directory = tmp_path_factory.mktemp("preload")
    tree = preload_tree(directory / "models")
    line = f'BR2_PACKAGE_OLLAMA_PRELOAD_DIR="{tree}"'
    return configure(str(variant_defconfig(directory, "cube_preload_defconfig", line))), tree


def render(config: Path, out: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, str(REPO / "generator/cube-config"), "--config", str(config),
         "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def env_file(path: Path) -> dict[str, str]:
    proc = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; env -0', "sh", str(path)],
        env={}, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    pairs = (item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith(("OLLAMA_", "CUBE_"))}


def test_a_preload_directory_moves_the_models_into_the_measured_root(preloaded):
    output, tree = preloaded
    config = output.config()
    assert config["BR2_PACKAGE_OLLAMA_PRELOAD_DIR"] == f'"{tree}"'
    assert config["BR2_PACKAGE_OLLAMA_MODELS_DIR"] == f'"{ROOT_MODELS}"'
    assert config["BR2_PACKAGE_CUBE_MODELS"] == "n"  # nothing to pull into the root
    assert config["BR2_PACKAGE_CUBE_STATE"] == "y"  # and the root is the verity root


def test_without_one_models_are_pulled_to_the_state_disk(configure):
    config = configure(DEFCONFIGS[0]).config()
    assert config["BR2_PACKAGE_OLLAMA_PRELOAD_DIR"] == '""'
    assert config["BR2_PACKAGE_OLLAMA_MODELS_DIR"] == f'"{STATE_MODELS}"'
    assert config["BR2_PACKAGE_CUBE_MODELS"] == "y"


def test_a_models_directory_chosen_in_the_defconfig_is_kept(configure, tmp_path):
    lines = 'BR2_PACKAGE_OLLAMA_PRELOAD_DIR="/m"\nBR2_PACKAGE_OLLAMA_MODELS_DIR="/var/models"'
    config = configure(str(variant_defconfig(tmp_path, "cube_var_defconfig", lines))).config()
    assert config["BR2_PACKAGE_OLLAMA_MODELS_DIR"] == '"/var/models"'


def test_the_llama_cpp_model_file_defaults_into_the_measured_root(variant):
    config = variant("LLAMA_CPP").config()
    assert config["BR2_PACKAGE_CUBE_LLAMA_SERVER_MODEL"] == '"/usr/share/llama-server/model.gguf"'


def test_kconfiglib_evaluates_the_same_defaults(kconfig):
    models, pull = (
        kconfig.syms["BR2_PACKAGE_OLLAMA_MODELS_DIR"],
        kconfig.syms["BR2_PACKAGE_CUBE_MODELS"],
    )
    try:
        kconfig.load_config(str(EXTERNAL / "configs" / DEFCONFIGS[0]))
        assert (models.str_value, pull.str_value) == (STATE_MODELS, "y")
        assert kconfig.syms["BR2_PACKAGE_OLLAMA_PRELOAD_DIR"].set_value("/m")
        assert (models.str_value, pull.str_value) == (ROOT_MODELS, "n")
    finally:
        kconfig.unset_values()


def test_the_rendered_ollama_neither_prunes_nor_pulls_in_the_root(preloaded, tmp_path):
    output, _ = preloaded
    rendered = render(output.dir / ".config", tmp_path / "rendered")
    assert env_file(rendered / "etc/default/ollama") == {
        "OLLAMA_HOST": "127.0.0.1:11434",
        "OLLAMA_MODELS": ROOT_MODELS,
        "OLLAMA_NOPRUNE": "true",
    }
    unit = (rendered / "usr/lib/systemd/system/ollama.service").read_text()
    assert "ProtectSystem=strict" in unit and "ReadWritePaths" not in unit
    assert not (rendered / "etc/default/pull-models").exists()


@pytest.fixture
def install(preloaded, tmp_path):
    """install(tree) -> (completed last command, printvars): OLLAMA_INSTALL_TARGET_CMDS
    from Buildroot for the preload defconfig, with PRELOAD_DIR=tree, run in a build
    directory holding a stand-in release (bin/ollama, lib/ollama) and the real render."""
    output, default_tree = preloaded

    def run(tree: Path = default_tree):
        target = tmp_path / "target"
        (target / "usr/lib").mkdir(parents=True)  # from the skeleton
        values = output.printvars(
            VARS, f"TARGET_DIR={target}", f"BR2_PACKAGE_OLLAMA_PRELOAD_DIR={tree}"
        )
        build = tmp_path / "build"  # $(@D)
        (build / "bin").mkdir(parents=True)
        (build / "bin/ollama").write_text("#!/bin/sh\n")
        (build / "lib/ollama").mkdir(parents=True)
        (build / "lib/ollama/libggml-cpu.so").write_text("")
        render(output.dir / ".config", build / "rendered")
        return run_recipe(values["OLLAMA_INSTALL_TARGET_CMDS"], build), values, target

    return run


def test_the_install_copies_the_tree_into_the_root(install):
    proc, values, target = install()
    assert proc.returncode == 0, proc.stderr
    assert values["TARGET_DIR"] == str(target)
    models = target / ROOT_MODELS.lstrip("/")
    assert (models / "blobs" / BLOB).read_bytes() == b"GGUF weights"
    assert (models / MANIFEST).is_file()
    assert env_file(target / "etc/default/ollama")["OLLAMA_MODELS"] == ROOT_MODELS
    # makedevs gives the tree to the ollama user, in the image as built.
    assert values["OLLAMA_PERMISSIONS"].split() == [ROOT_MODELS, "r", "-1", "ollama", "ollama",
                                                    "-", "-", "-", "-", "-"]  # fmt: skip


def test_the_install_makes_the_directories_ollama_would_create(install, tmp_path):
    """Ollama creates blobs/ and manifests/ at start when missing: not in a read-only root."""
    tree = tmp_path / "only-manifests"
    (tree / MANIFEST).parent.mkdir(parents=True)
    (tree / MANIFEST).write_text("{}\n")
    proc, _, target = install(tree)
    assert proc.returncode == 0, proc.stderr
    assert (target / ROOT_MODELS.lstrip("/") / "blobs").is_dir()


def test_the_install_refuses_blob_names_ollama_would_rename(install, tmp_path):
    """Ollama's fixBlobs renames sha256:<hex> to sha256-<hex> at start: in a read-only root
    that fails and Ollama does not start, so the build stops instead."""
    tree = preload_tree(tmp_path / "old")
    os.rename(tree / "blobs" / BLOB, tree / "blobs" / BLOB.replace("-", ":"))
    proc, _, _ = install(tree)
    assert proc.returncode != 0
    assert "blobs named sha256:<hex>" in proc.stderr


def test_the_install_stops_on_a_missing_preload_directory(install, tmp_path):
    proc, _, _ = install(tmp_path / "nowhere")
    assert proc.returncode != 0
    assert f"{tmp_path / 'nowhere'}: no such directory" in proc.stderr

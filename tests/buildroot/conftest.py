"""Fixtures for the Buildroot suite: the pinned Buildroot, configured output
directories (one per defconfig, shared by the session) and the full Kconfig tree."""

from __future__ import annotations

import os
from pathlib import Path

import kconfiglib
import pytest
from buildroot_support import (
    DEFCONFIGS,
    EXTERNAL,
    VARIANTS,
    Output,
    buildroot_dir,
    variant_defconfig,
)
from support import missing


@pytest.fixture(scope="session")
def buildroot() -> Path:
    path = buildroot_dir()
    if not (path / "Makefile").is_file():
        missing(f"no Buildroot tree at {path} (set BUILDROOT_DIR)")
    return path


@pytest.fixture(scope="session")
def configure(buildroot, tmp_path_factory):
    """configure(name) -> Output: `make <name>` once per session for each name, where name
    is a defconfig of the tree or a path to a defconfig file."""
    outputs: dict[str, Output] = {}

    def run(name: str) -> Output:
        if name not in outputs:
            out = Output(buildroot, tmp_path_factory.mktemp(Path(name).name))
            outputs[name] = out.configure(name)
        return outputs[name]

    return run


@pytest.fixture(scope="session")
def variant(configure, tmp_path_factory):
    """variant(name) -> Output: the systemd defconfig with one of VARIANTS."""
    directory = tmp_path_factory.mktemp("variants")

    def configured(name: str) -> Output:
        path = variant_defconfig(directory, f"cube_{name.lower()}_defconfig", VARIANTS[name])
        return configure(str(path))

    return configured


@pytest.fixture(scope="session")
def variant_info(variant):
    """variant_info(name) -> show-info of that variant, computed once."""
    cache = {}

    def info(name: str) -> dict:
        if name not in cache:
            cache[name] = variant(name).show_info()
        return cache[name]

    return info


@pytest.fixture(scope="session")
def kconfig(buildroot, configure):
    """The whole Kconfig tree (Buildroot's and ours), loaded with kconfiglib in the
    environment Buildroot gives its own kconfig tools."""
    out = configure(DEFCONFIGS[0])
    env = {
        "srctree": str(buildroot),
        "BASE_DIR": str(out.dir),
        "BR2_BASE_DIR": str(out.dir),
        "BR2_EXTERNAL_CUBE_PATH": str(EXTERNAL),
        "BR2_VERSION_FULL": buildroot.name.removeprefix("buildroot-"),
        "HOSTARCH": "x86_64",
        "HOST_GCC_VERSION": "12",
        "BR2_DEFCONFIG": "",
        "SKIP_LEGACY": "",
        # Buildroot builds its kconfig with CONFIG_="": .config lines are BR2_X=..., bare.
        "CONFIG_": "",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return kconfiglib.Kconfig(str(buildroot / "Config.in"), warn=False)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

"""Paths and helpers of the Buildroot suite (a module of its own: every suite has a
conftest.py, so `from conftest import` would be ambiguous)."""

from support.buildroot import (
    DEFAULT_BUILDROOT,
    DEFCONFIGS,
    EXTERNAL,
    REPO,
    TREE,
    VARIANTS,
    Output,
    buildroot_dir,
    parse_config,
    run_recipe,
    sha256_lines,
    variant_defconfig,
)

__all__ = [
    "DEFAULT_BUILDROOT",
    "DEFCONFIGS",
    "EXTERNAL",
    "REPO",
    "TREE",
    "VARIANTS",
    "Output",
    "buildroot_dir",
    "parse_config",
    "run_recipe",
    "sha256_lines",
    "variant_defconfig",
]

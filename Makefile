# Cube HAL: a pinned Buildroot driven with the Cube external tree.
#
#   make cube_cvm_defconfig && make      build output/images/
#   make test                            every test (make test-quick: no VM boots)
#   make help                            everything else
#
# Buildroot targets are passed through to the pinned Buildroot with
# BR2_EXTERNAL and O= set, so they behave as in a plain Buildroot tree.

BUILDROOT_VERSION := 2026.02.3
BUILDROOT_SHA256 := bec7bcdaa4f16cb117960ca40451f07a147f38d91318fed99bbd2e15244f161e
BUILDROOT_URL ?= https://buildroot.org/downloads/buildroot-$(BUILDROOT_VERSION).tar.xz

CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/cube-hal
# Air-gapped builds: BUILDROOT_TARBALL=/path/to/buildroot-$(BUILDROOT_VERSION).tar.xz
# or BUILDROOT_DIR=/path/to/an/unpacked/buildroot.
BUILDROOT_TARBALL ?= $(CACHE_DIR)/buildroot-$(BUILDROOT_VERSION).tar.xz
BUILDROOT_DIR ?= $(CACHE_DIR)/buildroot-$(BUILDROOT_VERSION)
O ?= $(CURDIR)/output
EXTERNAL := $(CURDIR)/br2-external

VENV ?= $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python

export BUILDROOT_DIR O

BR_MAKE = $(MAKE) -C $(BUILDROOT_DIR) BR2_EXTERNAL=$(EXTERNAL) O=$(abspath $(O))

BR_TARGETS := menuconfig nconfig savedefconfig source clean distclean \
	show-info printvars linux-menuconfig busybox-menuconfig legal-info sdk

.DEFAULT_GOAL := all
.PHONY: all help buildroot build-deps $(BR_TARGETS)

all: buildroot
	$(BR_MAKE)

%_defconfig: buildroot
	$(BR_MAKE) $@

$(BR_TARGETS): buildroot
	$(BR_MAKE) $@

# Image targets need only Buildroot's own host requirements (checked, never
# installed); the test tools come with `make deps` (host-deps, mk/test.mk).
buildroot: build-deps $(BUILDROOT_DIR)/Makefile

build-deps:
	@scripts/check-build-deps.sh

# Unpack the pinned Buildroot once; the tarball is checked against its hash
# whether it was downloaded or handed to us.
$(BUILDROOT_DIR)/Makefile:
	@scripts/fetch-buildroot.sh "$(BUILDROOT_URL)" "$(BUILDROOT_TARBALL)" \
		"$(BUILDROOT_SHA256)" "$(BUILDROOT_DIR)"

include $(sort $(wildcard mk/*.mk))

help:
	@echo 'Cube HAL'
	@echo
	@echo 'Image (Buildroot $(BUILDROOT_VERSION), output in O=$(O)):'
	@echo '  cube_cvm_defconfig       x86_64 CVM image, systemd, Ollama + agent'
	@echo '  cube_cvm_sysv_defconfig  the same on busybox init (SysV scripts)'
	@echo '  all (default)            build the image'
	@echo '  menuconfig savedefconfig source clean show-info   as in Buildroot'
	@echo
	@echo 'Variables: O=DIR  BUILDROOT_DIR=DIR  BUILDROOT_TARBALL=FILE  CACHE_DIR=DIR'
	@printf '%s\n' $(HELP_LINES)

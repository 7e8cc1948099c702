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
VLLM_LICENSE = Apache-2.0 (vllm), BSD-3-Clause (pytorch), PSF-2.0 (cpython), \
	NVIDIA proprietary (CUDA libraries), others (see each *.dist-info)
VLLM_CPE_ID_VENDOR = vllm
VLLM_DEPENDENCIES = host-python-pip host-python3 host-python-jinja2
VLLM_INSTALL_DIR = /usr/lib/vllm

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
		--config $(BR2_CONFIG) --out $(@D)/rendered
endef

# Offline and exact: only the downloaded (hash-checked) wheels, for
# the runtime's Python version and the target's platform.
define VLLM_INSTALL_TARGET_CMDS
	rm -rf $(TARGET_DIR)$(VLLM_INSTALL_DIR)
	mkdir -p $(TARGET_DIR)$(VLLM_INSTALL_DIR)
	cp -dR $(@D)/. $(TARGET_DIR)$(VLLM_INSTALL_DIR)/
	rm -rf $(TARGET_DIR)$(VLLM_INSTALL_DIR)/rendered
	$(HOST_DIR)/bin/python3 -m pip install --no-index --no-cache-dir \
		--disable-pip-version-check --no-compile \
		--only-binary=:all: --implementation cp \
		--python-version $(VLLM_PYTHON_VERSION) \
		--abi cp$(subst .,,$(VLLM_PYTHON_VERSION)) \
		$(addprefix --platform ,$(VLLM_PIP_PLATFORMS)) \
		--find-links $(VLLM_DL_DIR) \
		--target $(TARGET_DIR)$(VLLM_INSTALL_DIR)/lib/python$(VLLM_PYTHON_VERSION)/site-packages \
		$(addprefix $(VLLM_DL_DIR)/,$(notdir $(VLLM_EXTRA_DOWNLOADS)))
	$(INSTALL) -D -m 0755 $(VLLM_PKGDIR)/vllm.sh $(TARGET_DIR)/usr/bin/vllm
	$(INSTALL) -D -m 0644 $(@D)/rendered/etc/default/vllm \
		$(TARGET_DIR)/etc/default/vllm
	$(INSTALL) -D -m 0644 $(@D)/rendered/etc/vllm/chat-template.jinja \
		$(TARGET_DIR)/etc/vllm/chat-template.jinja
endef

define VLLM_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/rendered/usr/lib/systemd/system/vllm.service \
		$(TARGET_DIR)/usr/lib/systemd/system/vllm.service
endef

define VLLM_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/rendered/etc/init.d/S96vllm \
		$(TARGET_DIR)/etc/init.d/S96vllm
endef

$(eval $(generic-package))

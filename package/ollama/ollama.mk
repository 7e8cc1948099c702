################################################################################
#
# ollama
#
################################################################################

OLLAMA_VERSION = 0.12.3
ifeq ($(BR2_aarch64),y)
OLLAMA_SOURCE = ollama-linux-arm64.tgz
else
OLLAMA_SOURCE = ollama-linux-amd64.tgz
endif
OLLAMA_SITE = https://github.com/ollama/ollama/releases/download/v$(OLLAMA_VERSION)
# The release tarball carries no license file: upstream's LICENSE of the
# same tag comes beside it.
OLLAMA_EXTRA_DOWNLOADS = \
	https://raw.githubusercontent.com/ollama/ollama/v$(OLLAMA_VERSION)/LICENSE
OLLAMA_LICENSE = MIT
OLLAMA_LICENSE_FILES = LICENSE
# Both tarballs are binaries with NVIDIA's CUDA libraries (cuBLAS, the CUDA
# runtime) in lib/ollama/cuda_v*: legal-info must not republish them.
OLLAMA_REDISTRIBUTE = NO
ifeq ($(BR2_PACKAGE_OLLAMA_CUDA),y)
OLLAMA_LICENSE += , NVIDIA proprietary (CUDA libraries in /usr/lib/ollama/cuda_v*)
endif
OLLAMA_CPE_ID_VENDOR = ollama
# The tarball has no top-level directory (bin/, lib/).
OLLAMA_STRIP_COMPONENTS = 0
OLLAMA_DEPENDENCIES = host-python3 host-python-jinja2

OLLAMA_MODELS_DIR = $(call qstrip,$(BR2_PACKAGE_OLLAMA_MODELS_DIR))
OLLAMA_PRELOAD_DIR = $(call qstrip,$(BR2_PACKAGE_OLLAMA_PRELOAD_DIR))

define OLLAMA_USERS
	ollama -1 ollama -1 * /var/lib/ollama - - Ollama LLM engine
endef

define OLLAMA_COPY_LICENSE
	cp $(OLLAMA_DL_DIR)/LICENSE $(@D)/LICENSE
endef
OLLAMA_POST_EXTRACT_HOOKS += OLLAMA_COPY_LICENSE

# Render the env file, unit and init script from the .config.
define OLLAMA_BUILD_CMDS
	$(HOST_DIR)/bin/python3 $(BR2_EXTERNAL_CUBE_PATH)/../generator/cube-config \
		--config $(BR2_CONFIG) --out $(@D)/rendered
endef

ifeq ($(BR2_PACKAGE_OLLAMA_CUDA),)
define OLLAMA_REMOVE_CUDA
	rm -rf $(TARGET_DIR)/usr/lib/ollama/cuda_v*
endef
endif

ifneq ($(OLLAMA_PRELOAD_DIR),)
# Outside /var the models are in the read-only root (the default with a
# preload directory): Ollama runs with OLLAMA_NOPRUNE there (cube-config), and
# at start it still creates blobs/ and manifests/ when missing and renames
# blobs named "sha256:<hex>" (an old Ollama's names): both are done or refused
# here, where the tree can still change.
define OLLAMA_INSTALL_PRELOAD
	test -d $(OLLAMA_PRELOAD_DIR) || \
		{ echo "BR2_PACKAGE_OLLAMA_PRELOAD_DIR: $(OLLAMA_PRELOAD_DIR): no such directory" >&2; exit 1; }
	mkdir -p $(TARGET_DIR)$(OLLAMA_MODELS_DIR)/blobs $(TARGET_DIR)$(OLLAMA_MODELS_DIR)/manifests
	cp -dR --no-preserve=ownership $(OLLAMA_PRELOAD_DIR)/. $(TARGET_DIR)$(OLLAMA_MODELS_DIR)/
	test -z "$$(find $(TARGET_DIR)$(OLLAMA_MODELS_DIR)/blobs -name 'sha256:*')" || \
		{ echo "BR2_PACKAGE_OLLAMA_PRELOAD_DIR: blobs named sha256:<hex>: start a current Ollama on the tree once to rename them" >&2; exit 1; }
endef
define OLLAMA_PERMISSIONS
	$(OLLAMA_MODELS_DIR) r -1 ollama ollama - - - - -
endef
endif

define OLLAMA_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/bin/ollama $(TARGET_DIR)/usr/bin/ollama
	rm -rf $(TARGET_DIR)/usr/lib/ollama
	cp -dR $(@D)/lib/ollama $(TARGET_DIR)/usr/lib/ollama
	$(OLLAMA_REMOVE_CUDA)
	$(INSTALL) -D -m 0644 $(@D)/rendered/etc/default/ollama \
		$(TARGET_DIR)/etc/default/ollama
	$(OLLAMA_INSTALL_PRELOAD)
endef

define OLLAMA_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/rendered/usr/lib/systemd/system/ollama.service \
		$(TARGET_DIR)/usr/lib/systemd/system/ollama.service
endef

define OLLAMA_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/rendered/etc/init.d/S96ollama \
		$(TARGET_DIR)/etc/init.d/S96ollama
endef

$(eval $(generic-package))

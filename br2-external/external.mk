include $(sort $(wildcard $(BR2_EXTERNAL_CUBE_PATH)/../package/*/*.mk))

# Kconfig drops a fragment option whose dependencies are unmet without a word: fail the
# build instead, naming each one (board/cube/check-kernel-config).
define CUBE_CHECK_KERNEL_CONFIG
	$(BR2_EXTERNAL_CUBE_PATH)/../board/cube/check-kernel-config \
		$(LINUX_DIR)/.config $(LINUX_KCONFIG_FRAGMENT_FILES)
endef
LINUX_POST_CONFIGURE_HOOKS += CUBE_CHECK_KERNEL_CONFIG

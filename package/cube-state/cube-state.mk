################################################################################
#
# cube-state
#
################################################################################

# The sources are this directory: no download.
CUBE_STATE_SITE = $(CUBE_STATE_PKGDIR)
CUBE_STATE_SITE_METHOD = local
CUBE_STATE_LICENSE = Apache-2.0
CUBE_STATE_LICENSE_FILES = LICENSE

# The agent's keys live on the state disk: /etc is on the read-only root.
define CUBE_STATE_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/cube-state \
		$(TARGET_DIR)/usr/sbin/cube-state
	$(INSTALL) -D -m 0644 $(@D)/cube-state.default \
		$(TARGET_DIR)/etc/default/cube-state
	mkdir -p $(TARGET_DIR)/var/lib/cube/agent $(TARGET_DIR)/etc/cube
	ln -sfn /var/lib/cube/agent $(TARGET_DIR)/etc/cube/agent
endef

define CUBE_STATE_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/cube-state.service \
		$(TARGET_DIR)/usr/lib/systemd/system/cube-state.service
endef

define CUBE_STATE_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/S01cube-state \
		$(TARGET_DIR)/etc/init.d/S01cube-state
endef

$(eval $(generic-package))

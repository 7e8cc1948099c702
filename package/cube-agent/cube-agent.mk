################################################################################
#
# cube-agent
#
################################################################################

# Built from this repository; the version is the agent's own.
CUBE_AGENT_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' \
	$(BR2_EXTERNAL_CUBE_PATH)/../agent/pyproject.toml)
CUBE_AGENT_SITE = $(BR2_EXTERNAL_CUBE_PATH)/../agent
CUBE_AGENT_SITE_METHOD = local
CUBE_AGENT_SETUP_TYPE = setuptools
# Not the local build's leftovers (pip's build/, egg-info, bytecode).
CUBE_AGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /build --exclude '*.egg-info' --exclude __pycache__
CUBE_AGENT_LICENSE = Apache-2.0
CUBE_AGENT_LICENSE_FILES = LICENSE
CUBE_AGENT_DEPENDENCIES = host-python-jinja2

define CUBE_AGENT_USERS
	cube-agent -1 cube-agent -1 * /var/lib/cube-agent - - Cube agent
endef

# Render the env file, unit and init script from the .config.
define CUBE_AGENT_RENDER
	$(HOST_DIR)/bin/python3 $(BR2_EXTERNAL_CUBE_PATH)/../generator/cube-config \
		--config $(BR2_CONFIG) --out $(@D)/rendered
endef
CUBE_AGENT_POST_BUILD_HOOKS += CUBE_AGENT_RENDER

ifeq ($(BR2_PACKAGE_CUBE_AGENT_GUARDRAILS),y)
define CUBE_AGENT_INSTALL_GUARDRAILS
	mkdir -p $(TARGET_DIR)/etc/cube/guardrails
	cp -dR $(@D)/src/cube_agent/guardrails_default/. \
		$(TARGET_DIR)/etc/cube/guardrails/
	rm -rf $(TARGET_DIR)/etc/cube/guardrails/__pycache__
endef
endif

define CUBE_AGENT_INSTALL_SETTINGS
	$(INSTALL) -D -m 0644 $(@D)/rendered/etc/default/cube-agent \
		$(TARGET_DIR)/etc/default/cube-agent
	$(CUBE_AGENT_INSTALL_GUARDRAILS)
endef
CUBE_AGENT_POST_INSTALL_TARGET_HOOKS += CUBE_AGENT_INSTALL_SETTINGS

define CUBE_AGENT_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/rendered/usr/lib/systemd/system/cube-agent.service \
		$(TARGET_DIR)/usr/lib/systemd/system/cube-agent.service
endef

define CUBE_AGENT_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/rendered/etc/init.d/S98cube-agent \
		$(TARGET_DIR)/etc/init.d/S98cube-agent
endef

$(eval $(python-package))

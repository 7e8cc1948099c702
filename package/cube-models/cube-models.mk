################################################################################
#
# cube-models
#
################################################################################

# What this package installs comes from the generator (its templates) and
# this directory: the generator is its source, so legal-info lists it.
CUBE_MODELS_SITE = $(BR2_EXTERNAL_CUBE_PATH)/../generator
CUBE_MODELS_SITE_METHOD = local
CUBE_MODELS_LICENSE = Apache-2.0
CUBE_MODELS_LICENSE_FILES = LICENSE
CUBE_MODELS_DEPENDENCIES = host-python3 host-python-jinja2

define CUBE_MODELS_USERS
	cube-models -1 cube-models -1 * - - - Cube model provisioning
endef

define CUBE_MODELS_BUILD_CMDS
	$(HOST_DIR)/bin/python3 $(BR2_EXTERNAL_CUBE_PATH)/../generator/cube-config \
		--config $(BR2_CONFIG) --out $(@D)/rendered
endef

define CUBE_MODELS_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(CUBE_MODELS_PKGDIR)/pull-models.sh \
		$(TARGET_DIR)/usr/bin/pull-models.sh
	$(INSTALL) -D -m 0644 $(@D)/rendered/etc/default/pull-models \
		$(TARGET_DIR)/etc/default/pull-models
endef

define CUBE_MODELS_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/rendered/usr/lib/systemd/system/pull-models.service \
		$(TARGET_DIR)/usr/lib/systemd/system/pull-models.service
endef

define CUBE_MODELS_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/rendered/etc/init.d/S97pull-models \
		$(TARGET_DIR)/etc/init.d/S97pull-models
endef

$(eval $(generic-package))

################################################################################
#
# cube-llama-server
#
################################################################################

# The server itself comes from Buildroot's llama-cpp package; this
# package only adds its user, settings and service files: no download.
# What this package installs comes from the generator (its templates) and
# this directory: the generator is its source, so legal-info lists it.
CUBE_LLAMA_SERVER_SITE = $(BR2_EXTERNAL_CUBE_PATH)/../generator
CUBE_LLAMA_SERVER_SITE_METHOD = local
CUBE_LLAMA_SERVER_LICENSE = Apache-2.0
CUBE_LLAMA_SERVER_LICENSE_FILES = LICENSE
CUBE_LLAMA_SERVER_DEPENDENCIES = llama-cpp host-python3 host-python-jinja2

define CUBE_LLAMA_SERVER_USERS
	llama-server -1 llama-server -1 * /var/lib/llama-server - - llama.cpp server
endef

define CUBE_LLAMA_SERVER_BUILD_CMDS
	$(HOST_DIR)/bin/python3 $(BR2_EXTERNAL_CUBE_PATH)/../generator/cube-config \
		--config $(BR2_CONFIG) --out $(@D)/rendered
endef

define CUBE_LLAMA_SERVER_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0644 $(@D)/rendered/etc/default/llama-server \
		$(TARGET_DIR)/etc/default/llama-server
endef

define CUBE_LLAMA_SERVER_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/rendered/usr/lib/systemd/system/llama-server.service \
		$(TARGET_DIR)/usr/lib/systemd/system/llama-server.service
endef

define CUBE_LLAMA_SERVER_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/rendered/etc/init.d/S96llama-server \
		$(TARGET_DIR)/etc/init.d/S96llama-server
endef

$(eval $(generic-package))

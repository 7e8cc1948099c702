################################################################################
#
# python-dataclasses-json
#
################################################################################

# The sdist builds with poetry-dynamic-versioning, which Buildroot does
# not package: the published pure-Python wheel is installed as is.
PYTHON_DATACLASSES_JSON_VERSION = 0.6.7
PYTHON_DATACLASSES_JSON_SOURCE = dataclasses_json-$(PYTHON_DATACLASSES_JSON_VERSION)-py3-none-any.whl
PYTHON_DATACLASSES_JSON_SITE = https://files.pythonhosted.org/packages/c3/be/d0d44e092656fe7a06b55e6103cbce807cdbdee17884a5367c68c9860853
PYTHON_DATACLASSES_JSON_SETUP_TYPE = pep517
PYTHON_DATACLASSES_JSON_LICENSE = MIT
PYTHON_DATACLASSES_JSON_LICENSE_FILES = \
	dataclasses_json-$(PYTHON_DATACLASSES_JSON_VERSION).dist-info/LICENSE

define PYTHON_DATACLASSES_JSON_EXTRACT_CMDS
	unzip -q $(PYTHON_DATACLASSES_JSON_DL_DIR)/$(PYTHON_DATACLASSES_JSON_SOURCE) -d $(@D)
endef

# Nothing to build: the install step takes the wheel from dist/.
define PYTHON_DATACLASSES_JSON_BUILD_CMDS
	mkdir -p $(@D)/dist
	cp $(PYTHON_DATACLASSES_JSON_DL_DIR)/$(PYTHON_DATACLASSES_JSON_SOURCE) $(@D)/dist/
endef

$(eval $(python-package))

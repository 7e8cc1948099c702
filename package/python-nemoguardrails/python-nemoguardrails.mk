################################################################################
#
# python-nemoguardrails
#
################################################################################

# Published as a pure-Python wheel only (the last sdist is 0.17.0): the
# wheel is installed as is.
PYTHON_NEMOGUARDRAILS_VERSION = 0.24.1
PYTHON_NEMOGUARDRAILS_SOURCE = nemoguardrails-$(PYTHON_NEMOGUARDRAILS_VERSION)-py3-none-any.whl
PYTHON_NEMOGUARDRAILS_SITE = https://files.pythonhosted.org/packages/59/5c/e44694350e4867436bc897365b8e0d6383b9e990fa18b56fb4bf9fe35939
PYTHON_NEMOGUARDRAILS_SETUP_TYPE = pep517
PYTHON_NEMOGUARDRAILS_LICENSE = Apache-2.0
PYTHON_NEMOGUARDRAILS_LICENSE_FILES = \
	nemoguardrails-$(PYTHON_NEMOGUARDRAILS_VERSION).dist-info/licenses/LICENSE.md \
	nemoguardrails-$(PYTHON_NEMOGUARDRAILS_VERSION).dist-info/licenses/LICENSE-Apache-2.0.txt \
	nemoguardrails-$(PYTHON_NEMOGUARDRAILS_VERSION).dist-info/licenses/LICENCES-3rd-party

# nemoguardrails registers its actions and rails by walking its actions/
# and library/ directories for .py files (rail.py, actions.py, ...):
# BR2_PACKAGE_PYTHON3_PYC_ONLY must leave them there.
PYTHON_NEMOGUARDRAILS_KEEP_PY_FILES = \
	usr/lib/python$(PYTHON3_VERSION_MAJOR)/site-packages/nemoguardrails/actions/* \
	usr/lib/python$(PYTHON3_VERSION_MAJOR)/site-packages/nemoguardrails/library/*

define PYTHON_NEMOGUARDRAILS_EXTRACT_CMDS
	unzip -q $(PYTHON_NEMOGUARDRAILS_DL_DIR)/$(PYTHON_NEMOGUARDRAILS_SOURCE) -d $(@D)
endef

# Nothing to build: the install step takes the wheel from dist/.
define PYTHON_NEMOGUARDRAILS_BUILD_CMDS
	mkdir -p $(@D)/dist
	cp $(PYTHON_NEMOGUARDRAILS_DL_DIR)/$(PYTHON_NEMOGUARDRAILS_SOURCE) $(@D)/dist/
endef

$(eval $(python-package))

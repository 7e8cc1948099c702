################################################################################
#
# python-simpleeval
#
################################################################################

PYTHON_SIMPLEEVAL_VERSION = 1.0.8
PYTHON_SIMPLEEVAL_SOURCE = simpleeval-$(PYTHON_SIMPLEEVAL_VERSION).tar.gz
PYTHON_SIMPLEEVAL_SITE = https://files.pythonhosted.org/packages/89/3e/25326f373871a34e78cac231c0d3c18a0a5c3a80aa4813b50b9f26a5d460
PYTHON_SIMPLEEVAL_SETUP_TYPE = hatch
PYTHON_SIMPLEEVAL_LICENSE = MIT
PYTHON_SIMPLEEVAL_LICENSE_FILES = LICENCE

$(eval $(python-package))

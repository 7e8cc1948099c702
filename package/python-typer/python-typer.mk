################################################################################
#
# python-typer
#
################################################################################

PYTHON_TYPER_VERSION = 0.29.2
PYTHON_TYPER_SOURCE = typer-$(PYTHON_TYPER_VERSION).tar.gz
PYTHON_TYPER_SITE = https://files.pythonhosted.org/packages/bf/21/37383ece7d0a4995fb8ea97729207c4292b3ff94085002f37b2387063cfb
PYTHON_TYPER_SETUP_TYPE = pep517
PYTHON_TYPER_LICENSE = MIT
PYTHON_TYPER_LICENSE_FILES = LICENSE
PYTHON_TYPER_DEPENDENCIES = host-python-pdm-backend

$(eval $(python-package))

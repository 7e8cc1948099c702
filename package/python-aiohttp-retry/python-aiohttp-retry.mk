################################################################################
#
# python-aiohttp-retry
#
################################################################################

PYTHON_AIOHTTP_RETRY_VERSION = 2.9.1
PYTHON_AIOHTTP_RETRY_SOURCE = aiohttp_retry-$(PYTHON_AIOHTTP_RETRY_VERSION).tar.gz
PYTHON_AIOHTTP_RETRY_SITE = https://files.pythonhosted.org/packages/9d/61/ebda4d8e3d8cfa1fd3db0fb428db2dd7461d5742cea35178277ad180b033
PYTHON_AIOHTTP_RETRY_SETUP_TYPE = setuptools
PYTHON_AIOHTTP_RETRY_LICENSE = MIT
PYTHON_AIOHTTP_RETRY_LICENSE_FILES = LICENSE

$(eval $(python-package))

################################################################################
#
# python-nest-asyncio
#
################################################################################

PYTHON_NEST_ASYNCIO_VERSION = 1.6.0
PYTHON_NEST_ASYNCIO_SOURCE = nest_asyncio-$(PYTHON_NEST_ASYNCIO_VERSION).tar.gz
PYTHON_NEST_ASYNCIO_SITE = https://files.pythonhosted.org/packages/83/f8/51569ac65d696c8ecbee95938f89d4abf00f47d58d48f6fbabfe8f0baefe
PYTHON_NEST_ASYNCIO_SETUP_TYPE = setuptools
PYTHON_NEST_ASYNCIO_LICENSE = BSD-2-Clause
PYTHON_NEST_ASYNCIO_LICENSE_FILES = LICENSE
PYTHON_NEST_ASYNCIO_DEPENDENCIES = host-python-setuptools-scm

$(eval $(python-package))

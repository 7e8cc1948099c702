################################################################################
#
# python-httptools
#
################################################################################

PYTHON_HTTPTOOLS_VERSION = 0.9.0
PYTHON_HTTPTOOLS_SOURCE = httptools-$(PYTHON_HTTPTOOLS_VERSION).tar.gz
PYTHON_HTTPTOOLS_SITE = https://files.pythonhosted.org/packages/3a/ec/deed52912ab7ca6c0b12859330c571c60c61d7267b341b28951fcbf13694
PYTHON_HTTPTOOLS_SETUP_TYPE = setuptools
# The sdist ships the Cython-generated C and vendors llhttp.
PYTHON_HTTPTOOLS_LICENSE = MIT
PYTHON_HTTPTOOLS_LICENSE_FILES = LICENSE vendor/llhttp/LICENSE-MIT \
	vendor/http-parser/LICENSE-MIT

$(eval $(python-package))

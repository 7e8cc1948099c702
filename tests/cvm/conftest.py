"""The CVM suite's fixtures live in cvm_support (a unique module name: test modules import
its helpers, and every test directory's conftest.py is a module named `conftest`)."""

from cvm_support import fake_tsm, images  # noqa: F401

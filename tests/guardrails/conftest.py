"""The guardrails suite's fixtures live in guardrails_support (a unique module name: test
modules import its helpers, and every test directory's conftest.py is a module named
`conftest`)."""

from guardrails_support import _needs_nemoguardrails, fresh_judge, judge  # noqa: F401

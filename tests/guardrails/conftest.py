"""The guardrails suite's fixtures live in guardrails_support (a unique module name: test
modules import its helpers, and every test directory's conftest.py is a module named
`conftest`)."""

from guardrails_support import fresh_judge, judge, needs_nemoguardrails  # noqa: F401

# The soak (issue 8): scripts/soak.py, not part of `make test`.

HELP_LINES += '' 'Soak:' \
	'  soak                     mixed traffic against the agent with the engine flapping, watching' \
	'                           its memory - SOAK_SECONDS=300 by default, SOAK_ARGS= for more'

SOAK_SECONDS ?= 300
SOAK_ARGS ?=

.PHONY: soak

soak: venv
	$(PYTHON) scripts/soak.py --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

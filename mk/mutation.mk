# Mutation testing (issue 22): scripts/mutation/run.py, not part of `make test` (minutes).

HELP_LINES += '' 'Mutation testing:' \
	'  mutation                 cosmic-ray over auth, keys, routing, the proxy limits and translation' \
	'                           with their tests; prints the score and the survivors' \
	'                           (MUTATION_ARGS="--module auth.py" for one module)'

MUTATION_ARGS ?=

.PHONY: mutation

mutation: venv
	$(PYTHON) scripts/mutation/run.py $(MUTATION_ARGS)

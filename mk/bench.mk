# The agent benchmark (issue 9): scripts/bench/bench.py; results in build/bench/results.json.

HELP_LINES += '' 'Benchmark:' \
	'  bench                    the agent against direct, nginx, a bare Python proxy and LiteLLM' \
	'                           (BENCH_ARGS="--quick --duration 1" for a smoke run)'

BENCH_ARGS ?=

.PHONY: bench

bench: venv
	$(PYTHON) scripts/bench/bench.py --cache-dir $(CACHE_DIR) $(BENCH_ARGS)

#!/bin/sh
# vLLM's command line, run by the CPython runtime shipped with it.
exec /usr/lib/vllm/bin/python3 -c \
	'import sys; from vllm.entrypoints.cli.main import main; sys.exit(main())' "$@"

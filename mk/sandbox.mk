# Developer sandbox (issue 10): the agent and an engine on this machine.

HELP_LINES += '' 'Developer sandbox:' \
	'  up-sandbox               agent + llama.cpp server + tiny model - no Docker or GPU' \
	'  config-ollama            point UV_CUBE_AGENT_TARGET_URL in .env at the Compose Ollama' \
	'  config-vllm              point .env at the Compose vLLM' \
	'  up-ollama / up-vllm      Docker Compose stack - agent + Ollama or vLLM on an NVIDIA GPU' \
	'  down                     stop whatever up-* started'

SANDBOX := scripts/sandbox
# The generator needs Python 3 and Jinja2 only, so switching engines needs no venv.
GENERATOR_PYTHON ?= python3

.PHONY: config-ollama config-vllm up-ollama up-vllm up-sandbox down

config-ollama:
	@PYTHON=$(GENERATOR_PYTHON) $(SANDBOX)/config-env.sh http://ollama:11434

config-vllm:
	@PYTHON=$(GENERATOR_PYTHON) $(SANDBOX)/config-env.sh http://vllm:8000

up-ollama: config-ollama
	@$(SANDBOX)/compose-up.sh ollama

up-vllm: config-vllm
	@$(SANDBOX)/compose-up.sh vllm

up-sandbox: venv
	@VENV=$(VENV) $(SANDBOX)/up.sh

down:
	@$(SANDBOX)/down.sh

#!/bin/sh
# First start: create the key file (kept in the agent-keys volume) with one admin key,
# then run the agent. Read the key with:
#   docker compose -f docker/compose.yml exec agent-ollama cat /etc/cube/agent/admin.key
set -eu
key_file=${UV_CUBE_AGENT_KEY_FILE:-/etc/cube/agent/keys.json}
[ -f "$key_file" ] || cube-agent keys init --file "$key_file"
exec cube-agent serve

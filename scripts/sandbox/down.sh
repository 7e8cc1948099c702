#!/bin/sh
# Stop what the sandbox started: the processes up.sh recorded in SANDBOX_DIR, and the
# Compose stack when a Docker engine is reachable. Safe to run when nothing runs.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${SANDBOX_DIR:-$repo/.sandbox}

stop() { # NAME: TERM the process group, KILL it after 10 s
	pidfile=$state/$1.pid
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; then
		tries=0
		while kill -0 "-$pid" 2>/dev/null && [ "$tries" -lt 100 ]; do
			sleep 0.1
			tries=$((tries + 1))
		done
		kill -KILL "-$pid" 2>/dev/null || true
		echo "stopped $1 (pid $pid)"
	fi
	rm -f "$pidfile"
}
stop agent
stop llama-server

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 &&
	docker compose version >/dev/null 2>&1; then
	docker compose -f "$repo/docker/compose.yml" --profile ollama --profile vllm down
fi

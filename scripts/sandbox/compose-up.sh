#!/bin/sh
# Start the Docker Compose stack with one engine profile (ollama or vllm), after checking
# what it needs, so a missing piece is one clear line instead of a Compose stack trace.
set -eu

die() {
	echo "up-$profile: $*" >&2
	exit 1
}

profile=${1:-}
case $profile in
ollama | vllm) ;;
*)
	echo "usage: compose-up.sh ollama|vllm" >&2
	exit 2
	;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
agent_port=${CUBE_AGENT_PORT:-7001}

command -v docker >/dev/null 2>&1 ||
	die "docker not found: install Docker Engine with the compose plugin, or use 'make up-sandbox' (no Docker)"
docker compose version >/dev/null 2>&1 ||
	die "the Docker Compose plugin is missing ('docker compose version' fails): install docker-compose-plugin"
docker info >/dev/null 2>&1 ||
	die "cannot reach the Docker engine ('docker info' fails): start dockerd, or use 'make up-sandbox'"
if [ "$profile" = vllm ]; then
	docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"' ||
		die "the NVIDIA container runtime is missing (vLLM needs an NVIDIA GPU and nvidia-container-toolkit); try 'make up-ollama'"
fi
[ -f "$repo/.env" ] || die "no .env: run 'make config-$profile' first"
if command -v ss >/dev/null 2>&1 && ss -Htln "sport = :$agent_port" | grep -q .; then
	die "port $agent_port is taken: stop what listens there, or set CUBE_AGENT_PORT"
fi

docker compose -f "$repo/docker/compose.yml" --profile "$profile" up -d --build
echo "up-$profile: agent on http://127.0.0.1:$agent_port; models download in the background"
echo "  logs: docker compose -f docker/compose.yml logs -f    stop: make down"

#!/bin/sh
#
# Pull the Ollama models listed in CUBE_MODELS once the engine answers.
#
# Settings come from the environment (/etc/default/pull-models, loaded by
# pull-models.service or S97pull-models):
#   CUBE_MODELS         space-separated names; "name" means "name:latest"
#   CUBE_PULL_ATTEMPTS  attempts before giving up, a positive integer (default 20)
#   CUBE_PULL_INTERVAL  seconds between attempts (default 5); 0 and fractions
#                       such as 0.5 are accepted (busybox and coreutils sleep)
#   OLLAMA_HOST         where the ollama client reaches the engine
#   CUBE_MODELS_READ_ONLY  "yes": Ollama's models are in the read-only root
#                       (preloaded, measured); pull nothing, only check that
#                       every model is there
#
# Every attempt asks the engine for its models ("ollama list") and pulls the
# missing ones; a failed pull is retried in the next attempt. Models already
# present are never pulled again, so running it twice is harmless.
# Exit status: 0 all models present, 1 gave up, 2 bad settings.

# Model names are split on spaces below, never expanded as file patterns.
set -f

attempts=${CUBE_PULL_ATTEMPTS:-20}
interval=${CUBE_PULL_INTERVAL:-5}
models=${CUBE_MODELS:-}
engine=${OLLAMA_HOST:-127.0.0.1:11434}
read_only=${CUBE_MODELS_READ_ONLY:-no}

log() {
	echo "pull-models: $*"
}

fail() {
	echo "pull-models: $*" >&2
}

positive_integer() {
	case "$1" in
		'' | *[!0-9]*) return 1 ;;
	esac
	[ "$1" -gt 0 ]
}

if ! positive_integer "$attempts"; then
	fail "CUBE_PULL_ATTEMPTS must be a positive integer, got '$attempts'"
	exit 2
fi
case "$interval" in
	'' | . | *[!0-9.]* | *.*.*)
		fail "CUBE_PULL_INTERVAL must be a number of seconds, got '$interval'"
		exit 2
		;;
esac

if [ -z "$models" ]; then
	log "no models configured (CUBE_MODELS is empty)"
	exit 0
fi

# The name as "ollama list" prints it: tag :latest when none is given, and
# without the default registry and namespace.
canonical() {
	name=${1#registry.ollama.ai/}
	name=${name#library/}
	case "${name##*/}" in
		*:*) echo "$name" ;;
		*) echo "$name:latest" ;;
	esac
}

# present LIST NAME: is NAME a row of "ollama list" output LIST?
present() {
	printf '%s\n' "$1" |
		awk -v name="$2" 'NR > 1 && $1 == name { found = 1 } END { exit !found }'
}

attempt=1
ever_answered=no
while :; do
	missing=
	if list=$(ollama list 2>&1); then
		ever_answered=yes
		for model in $models; do
			present "$list" "$(canonical "$model")" && continue
			if [ "$read_only" = yes ]; then
				missing="$missing $model"
				continue
			fi
			log "attempt $attempt/$attempts: pulling $model"
			if ollama pull "$model"; then
				log "pulled $model"
			else
				log "attempt $attempt/$attempts: could not pull $model"
				missing="$missing $model"
			fi
		done
		if [ -z "$missing" ]; then
			log "all models present: $models"
			exit 0
		fi
		if [ "$read_only" = yes ]; then
			fail "not in the read-only models directory, and nothing can be pulled there:$missing" \
				"(preload them with BR2_PACKAGE_OLLAMA_PRELOAD_DIR)"
			exit 1
		fi
	else
		log "attempt $attempt/$attempts: engine not answering at $engine"
	fi

	if [ "$attempt" -ge "$attempts" ]; then
		if [ -n "$missing" ]; then
			fail "gave up after $attempts attempts: could not pull$missing"
		elif [ "$ever_answered" = no ]; then
			fail "gave up after $attempts attempts: engine at $engine never answered"
		else
			fail "gave up after $attempts attempts: engine at $engine stopped answering"
		fi
		exit 1
	fi
	attempt=$((attempt + 1))
	sleep "$interval"
done

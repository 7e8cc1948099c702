#!/bin/sh
# Point the sandbox's agent at an engine: set UV_CUBE_AGENT_TARGET_URL in .env and leave
# every other line alone. A missing .env is first rendered by the generator from
# scripts/sandbox/sandbox.config, the way the image renders /etc/default/cube-agent.
#
#   config-env.sh URL        (ENV_FILE=.env, PYTHON=python3 by default: it needs only Jinja2)
set -eu

usage() {
	echo "usage: config-env.sh http://HOST:PORT" >&2
	exit 2
}
[ $# -eq 1 ] || usage
url=$1
case $url in
http://?* | https://?*) ;;
*)
	echo "config-env.sh: not an http(s) URL: '$url'" >&2
	exit 2
	;;
esac
case $url in
*[[:space:]\"\$\`\\]*)
	echo "config-env.sh: the URL must not contain spaces, quotes, \$, \` or \\: '$url'" >&2
	exit 2
	;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
env_file=${ENV_FILE:-$repo/.env}
python=${PYTHON:-python3}

if [ ! -f "$env_file" ]; then
	if ! "$python" -c 'import jinja2' 2>/dev/null; then
		echo "config-env.sh: '$python' cannot import jinja2, the generator's one requirement: apt-get install python3-jinja2 (Debian), or name another Python with GENERATOR_PYTHON=" >&2
		exit 1
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	"$python" "$repo/generator/cube-config" \
		--config "$here/sandbox.config" --out "$tmp"
	cp "$tmp/etc/default/cube-agent" "$env_file"
	echo "created $env_file (cube-config from scripts/sandbox/sandbox.config)"
fi

line="UV_CUBE_AGENT_TARGET_URL=\"$url\""
old=$(grep '^UV_CUBE_AGENT_TARGET_URL=' "$env_file" || true)
if [ "$old" = "$line" ]; then
	echo "$env_file: UV_CUBE_AGENT_TARGET_URL is already \"$url\" (unchanged)"
	exit 0
fi

# Rewrite in place (keeps the file's owner and mode); append if the line was missing.
new=$(awk -v line="$line" '
	/^UV_CUBE_AGENT_TARGET_URL=/ { if (!done) print line; done = 1; next }
	{ print }
	END { if (!done) print line }
' "$env_file")
printf '%s\n' "$new" >"$env_file"
was=${old#*=}
[ -n "$old" ] || was="(unset)"
echo "$env_file: UV_CUBE_AGENT_TARGET_URL $was -> \"$url\""

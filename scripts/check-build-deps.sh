#!/bin/sh
# Check the host tools an image build needs: Buildroot's own mandatory host
# requirements (manual, "System requirements"), plus curl, xz and sha256sum to
# fetch and unpack the pinned Buildroot. Installs nothing and needs no root:
# on a missing tool it says which, and stops.
set -eu

tools="which sed make ld gcc g++ diff bash patch gzip bzip2 perl tar cpio
	unzip rsync file bc find wget curl xz sha256sum"

missing=
for tool in $tools; do
	command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done

if [ -n "$missing" ]; then
	printf 'build host: missing%s\n' "$missing" >&2
	printf 'Install them (on Debian: sudo apt-get install build-essential' >&2
	printf ' file rsync bc cpio unzip wget curl xz-utils), or run' >&2
	printf ' scripts/install-host-deps.sh\n' >&2
	exit 1
fi

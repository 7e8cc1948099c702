#!/bin/sh
# Install the Debian packages the build, the tests and the sandbox need.
# Idempotent; uses sudo when not run as root.
set -eu

packages="
	build-essential cmake git curl file rsync bc cpio unzip xz-utils wget
	bzip2 patch perl
	python3 python3-venv python3-dev python3-jinja2 libmagic1
	shellcheck systemd util-linux
	qemu-system-x86 qemu-utils ovmf fuse3
	linux-image-amd64 mmdebstrap busybox-static e2fsprogs
	flex bison libelf-dev libssl-dev cryptsetup-bin erofs-utils
	nginx-light wrk
"

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo

missing=
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing="$missing $p"
done

if [ -z "$missing" ]; then
	echo "host packages: all present"
	exit 0
fi

echo "host packages: installing$missing"
$sudo apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing

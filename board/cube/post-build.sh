#!/bin/sh
# Post-build: test-only serial auto-login (BR2_CUBE_TEST_AUTOLOGIN).
# Called by Buildroot with the target directory as $1, from its top
# directory, with BR2_CONFIG in the environment.
set -eu

target=$1

if ! grep -qx 'BR2_CUBE_TEST_AUTOLOGIN=y' "$BR2_CONFIG"; then
	exit 0
fi

printf 'post-build: BR2_CUBE_TEST_AUTOLOGIN: root logs in on ttyS0 without a password (test image)\n'

if grep -qx 'BR2_INIT_SYSTEMD=y' "$BR2_CONFIG"; then
	mkdir -p "$target/etc/systemd/system/serial-getty@ttyS0.service.d"
	cp "$BR2_EXTERNAL_CUBE_PATH/../board/cube/autologin.conf" \
		"$target/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
else
	# Buildroot's inittab line for BR2_TARGET_GENERIC_GETTY_PORT;
	# a root shell instead of getty.
	sed -i 's|^ttyS0::respawn:.*|ttyS0::respawn:-/bin/sh|' "$target/etc/inittab"
	grep -q '^ttyS0::respawn:-/bin/sh$' "$target/etc/inittab" || {
		printf 'post-build: no ttyS0 getty line in %s/etc/inittab\n' "$target" >&2
		exit 1
	}
fi

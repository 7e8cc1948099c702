#!/bin/sh
# Post-image: print what was built and its sha256, for the record.
# Called by Buildroot with the images directory as $1.
set -eu

images=$1

printf '\nCube HAL image in %s:\n' "$images"
for f in "$images"/bzImage "$images"/rootfs.ext4; do
	[ -e "$f" ] || continue
	printf '  %-12s %6s MiB  sha256 %s\n' "$(basename "$f")" \
		"$(( $(stat -L -c %s "$f") / 1048576 ))" "$(sha256sum "$f" | cut -d' ' -f1)"
done
printf 'Boot it with: make run\n'

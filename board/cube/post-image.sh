#!/bin/sh
# Post-image: the dm-verity root disk and its kernel command line
# (board/cube/verity-image), then what was built and its sha256, for the record.
# Called by Buildroot with the images directory as $1.
set -eu

images=$1

if [ -f "$images/rootfs.erofs" ]; then
	"$(dirname "$0")/verity-image" "$images"
fi

printf '\nCube HAL image in %s:\n' "$images"
for f in "$images"/bzImage "$images"/rootfs.img "$images"/rootfs.ext4; do
	[ -e "$f" ] || continue
	printf '  %-12s %6s MiB  sha256 %s\n' "$(basename "$f")" \
		"$(( $(stat -L -c %s "$f") / 1048576 ))" "$(sha256sum "$f" | cut -d' ' -f1)"
done
if [ -f "$images/kernel-cmdline" ]; then
	printf '  kernel command line (measured, carries the root hash):\n    %s\n' \
		"$(cat "$images/kernel-cmdline")"
fi
printf 'Boot it with: make run; predicted SEV-SNP measurement: make measure\n'

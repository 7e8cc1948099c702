#!/bin/sh
# Fetch (if needed), verify and unpack the pinned Buildroot.
# Usage: fetch-buildroot.sh URL TARBALL SHA256 DESTDIR
set -eu

url=$1 tarball=$2 sha256=$3 dest=$4

die() { printf 'fetch-buildroot: %s\n' "$*" >&2; exit 1; }

if [ ! -f "$tarball" ]; then
	mkdir -p "$(dirname "$tarball")"
	printf 'Downloading %s\n' "$url"
	curl -fL --retry 3 -o "$tarball.part" "$url" ||
		die "cannot download $url; for an offline build pass BUILDROOT_TARBALL=FILE or BUILDROOT_DIR=DIR"
	mv "$tarball.part" "$tarball"
fi

actual=$(sha256sum "$tarball" | cut -d' ' -f1)
[ "$actual" = "$sha256" ] ||
	die "$tarball: sha256 is $actual, expected $sha256"

mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$(dirname "$dest")/.buildroot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -xJf "$tarball" -C "$tmp" --strip-components=1
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
printf 'Buildroot unpacked in %s\n' "$dest"

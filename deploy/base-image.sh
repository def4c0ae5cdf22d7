#!/bin/sh
# Makes a base image for deploy/Dockerfile without a registry of images: mmdebstrap builds a minimal Debian
# bookworm root file system with Python from the Debian archive (as apt would), and `docker import` turns it
# into a local image. Extra Debian packages (e.g. nginx-light, postgresql-15) may follow the tag.
#
#   deploy/base-image.sh local/bookworm-python:1 [PACKAGE...]
#   docker build -f deploy/Dockerfile --build-arg BASE=local/bookworm-python:1 -t registry .
#
# DEBIAN_MIRROR (default http://deb.debian.org/debian, with its updates and security suites) names another
# mirror. Needs root (or sudo), mmdebstrap and docker; takes about 20 s.
set -eu

[ $# -ge 1 ] || { echo "usage: $0 TAG [PACKAGE...]" >&2; exit 2; }
tag=$1
shift
packages="python3,python3-venv,passwd,ca-certificates"
for p in "$@"; do packages="$packages,$p"; done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
tarball=$(mktemp --suffix=.tar)
trap 'rm -f "$tarball"' EXIT
# shellcheck disable=SC2086  # no mirror argument at all when DEBIAN_MIRROR is unset
$SUDO mmdebstrap --quiet --variant=minbase --include="$packages" --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$tarball" ${DEBIAN_MIRROR:-} </dev/null
docker import --change 'CMD ["python3"]' "$tarball" "$tag" >/dev/null
echo "$tag"

#!/bin/sh
# Builds deploy/wheels/ (or DIR): the registry's wheel and a wheel of every dependency, for Python 3.11 on
# x86_64/arm64 Linux like this host, so that `docker build -f deploy/Dockerfile` installs them with
# `pip --no-index`: no network inside the build, the same versions on every rebuild.
#
#   deploy/wheelhouse.sh [DIR]          # PYTHON=python3.11 by default; it must match the image's Python
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/deploy/wheels}
python=${PYTHON:-python3}
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT

# Build from a copy, so setuptools leaves no build/ or *.egg-info in the checkout.
cp -r "$root/pyproject.toml" "$root/README.md" "$root/registry" "$root/storage" "$src/"
mkdir -p "$out"
rm -f "$out"/*.whl
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$out" "$src"
echo "$(ls "$out"/*.whl | wc -l) wheels in $out"

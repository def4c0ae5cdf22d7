#!/bin/sh
# Debian packages `make bench` (python -m bench.run) needs: wrk (GET request rates), ab from apache2-utils (HEAD
# request rates), curl (large blob transfers) and docker-registry (CNCF Distribution 2.8, the competitor).
# Installs only what is missing; needs root (or sudo) and the Debian archive when something is.
set -eu

missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v ab >/dev/null 2>&1 || missing="$missing apache2-utils"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
[ -x /usr/bin/docker-registry ] || missing="$missing docker-registry"
[ -n "$missing" ] || exit 0

echo "bench/deps.sh: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null

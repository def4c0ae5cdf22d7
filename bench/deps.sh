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
# apt-get waits up to APT_LOCK_WAIT_S seconds (600) for another apt or dpkg process instead of failing at once;
# `apt-get update` does not wait for apt's lists lock by itself, so every lock is awaited here first.
wait_s=${APT_LOCK_WAIT_S:-600}
apt_get() {
  waited=0
  while holder=$($SUDO lslocks --noheadings --raw --output PID,COMMAND,PATH 2>/dev/null | awk '
      $3 ~ /^\/var\/lib\/dpkg\/lock(-frontend)?$|^\/var\/lib\/apt\/lists\/lock$|^\/var\/cache\/apt\/archives\/lock$/ {
        print $1 " (" $2 ") on " $3; exit }') && [ -n "$holder" ]; do
    [ $((waited % 30)) -eq 0 ] && echo "bench/deps.sh: waiting for another apt/dpkg process to finish: $holder ($waited s)" >&2
    [ "$waited" -lt "$wait_s" ] || { echo "bench/deps.sh: gave up after $wait_s s (APT_LOCK_WAIT_S)" >&2; return 1; }
    sleep 1
    waited=$((waited + 1))
  done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout="$wait_s" "$@"
}
apt_get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt_get install -y -qq --no-install-recommends $missing >/dev/null

#!/usr/bin/env bash
# Installs (Debian) and starts what the tests need: the Docker engine, skopeo, busybox-static, nginx, the
# PostgreSQL server binaries (initdb, postgres: the tests run throw-away clusters of their own, see tests/support/services.py),
# for the pull-through cache tests CNCF Distribution and containerd's ctr (tests/support/upstreams.py, daemons.py),
# Debian's chromium, the browser Playwright drives in the web UI's tests (tests/support/browser.py; Playwright's
# own browser download is never used), and for the tests of deploy/ mmdebstrap (local base images) and
# docker-compose.
# apt waits up to APT_LOCK_WAIT_S seconds (600) for another apt or dpkg process, saying which, instead of failing.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_LOCK_WAIT_S=${APT_LOCK_WAIT_S:-600}
APT_LOCKS=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)

# "PID (command)" of the process holding one of apt's or dpkg's locks, or nothing.
apt_lock_holder() {
  as_root lslocks --noheadings --raw --output PID,COMMAND,PATH 2>/dev/null | while read -r pid command path; do
    for lock in "${APT_LOCKS[@]}"; do
      if [ "$path" = "$lock" ]; then echo "$pid ($command) on $lock"; return; fi
    done
  done
}

# apt-get, once no other apt or dpkg process holds its locks (apt itself then waits for dpkg's lock too).
apt_get() {
  local waited=0 holder
  while holder=$(apt_lock_holder) && [ -n "$holder" ]; do
    [ $((waited % 30)) -eq 0 ] && echo "waiting for another apt/dpkg process to finish: $holder (${waited} s)"
    if [ "$waited" -ge "$APT_LOCK_WAIT_S" ]; then
      echo "gave up after $APT_LOCK_WAIT_S s (APT_LOCK_WAIT_S)" >&2
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$APT_LOCK_WAIT_S" "$@"
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)  # round-robin proxy of the replica tests
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)  # Distribution 2.8: the cache's upstream
command -v ctr >/dev/null 2>&1 || missing+=(containerd)  # ctr and a containerd of the tests' own
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the web UI's tests (tests/e2e/test_ui.py)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)  # local base images (deploy/base-image.sh)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)  # deploy/compose.yaml (tests/deploy/)
# Debian keeps initdb off PATH, in /usr/lib/postgresql/<major>/bin.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt_get update -qq
  apt_get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  as_root sh -c 'nohup dockerd >/tmp/registry-tests-dockerd.log 2>&1 &'
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/registry-tests-dockerd.log" >&2; exit 1; }
fi

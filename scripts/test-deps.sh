#!/usr/bin/env bash
# Installs (Debian) and starts what the tests need: the Docker engine, skopeo, busybox-static, nginx, the
# PostgreSQL server binaries (initdb, postgres: the tests run throw-away clusters of their own, see tests/support/services.py),
# for the pull-through cache tests CNCF Distribution and containerd's ctr (tests/support/upstreams.py, daemons.py),
# and Debian's chromium, the browser Playwright drives in the web UI's tests (tests/support/browser.py; Playwright's
# own browser download is never used).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)  # round-robin proxy of the replica tests
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)  # Distribution 2.8: the cache's upstream
command -v ctr >/dev/null 2>&1 || missing+=(containerd)  # ctr and a containerd of the tests' own
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the web UI's tests (tests/e2e/test_ui.py)
# Debian keeps initdb off PATH, in /usr/lib/postgresql/<major>/bin.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
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

#!/usr/bin/env bash
# Install the native services the production-stack tests run as their own processes (PostgreSQL, Redis, and
# iproute2 for the private network), and the browser the UI tests drive (Debian's Chromium; Playwright cannot
# download its own here), from Debian, where they are missing. Idempotent and quiet: apt's chatter
# goes to stderr, and apt never starts a system-wide service (the tests start private ones).
#   scripts/services.sh install
#   scripts/services.sh check      exit 1 (and say what is missing) unless everything is installed
set -euo pipefail
cmd=${1:-install}

# The first PostgreSQL server found: `pg_config --bindir` names the client's folder, which on Debian holds the
# server binaries only when the server package is installed.
pg_bindir() {
  local dir
  if command -v pg_config >/dev/null; then
    dir=$(pg_config --bindir)
    [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && { echo "$dir"; return; }
  fi
  while read -r dir; do
    [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && { echo "$dir"; return; }
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
  return 1
}

missing() {
  local packages=()
  pg_bindir >/dev/null || packages+=(postgresql)
  command -v redis-server >/dev/null || packages+=(redis-server)
  { command -v ip >/dev/null && ip netns list >/dev/null 2>&1; } || packages+=(iproute2)
  # unshare and mount (util-linux, mount) are essential on Debian; name them only if a minimal image lacks them.
  command -v unshare >/dev/null || packages+=(util-linux)
  command -v mount >/dev/null || packages+=(mount)
  command -v chromium >/dev/null || packages+=(chromium)
  echo "${packages[@]}"
}

case "$cmd" in
  install)
    packages=$(missing)
    [ -z "$packages" ] && exit 0
    [ "$(id -u)" = 0 ] || { echo "error: missing $packages; installing them needs root (apt-get install $packages)" >&2; exit 1; }
    # Keep apt from starting system-wide PostgreSQL and Redis services: the tests start private ones.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq >&2
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >&2
    still=$(missing)
    [ -z "$still" ] || { echo "error: still missing after apt-get install: $still" >&2; exit 1; }
    ;;
  check)
    packages=$(missing)
    [ -z "$packages" ] || { echo "missing: $packages" >&2; exit 1; }
    ;;
  *) echo "usage: $0 install|check" >&2; exit 2 ;;
esac

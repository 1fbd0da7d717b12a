#!/usr/bin/env bash
# Start (or stop) a private Docker engine for tests and local builds, where no daemon runs and no registry is
# reachable: installs docker.io and debootstrap from Debian if missing, builds a local Python 3.11 base image
# from Debian's archive (no pull), and prints the DOCKER_HOST to export.
#   scripts/docker-engine.sh start [DIR]    (default DIR: .docker-engine)
#   scripts/docker-engine.sh base-image     build local/python-base from debootstrap (once; on DOCKER_HOST if set)
#   scripts/docker-engine.sh stop [DIR]
set -euo pipefail
cmd=${1:-start}
dir=$(realpath -m "${2:-.docker-engine}")
sock="unix://$dir/docker.sock"

install_engine() {
  command -v dockerd >/dev/null && command -v debootstrap >/dev/null && return
  [ "$(id -u)" = 0 ] || { echo "error: dockerd is missing and installing it needs root (apt-get install docker.io debootstrap)" >&2; exit 1; }
  # Keep apt from starting a system-wide docker service: this engine is private.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  # stdout carries only the export line (callers eval it): apt's chatter goes to stderr.
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >&2
}

case "$cmd" in
  start)
    install_engine
    mkdir -p "$dir"
    if ! DOCKER_HOST=$sock docker info >/dev/null 2>&1; then
      dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
        --data-root "$dir/data" --exec-root "$dir/exec" -H "$sock" --pidfile "$dir/dockerd.pid" \
        >"$dir/dockerd.log" 2>&1 &
      for _ in $(seq 60); do DOCKER_HOST=$sock docker info >/dev/null 2>&1 && break; sleep 0.5; done
      DOCKER_HOST=$sock docker info >/dev/null || { tail -20 "$dir/dockerd.log" >&2; exit 1; }
    fi
    echo "export DOCKER_HOST=$sock"
    ;;
  base-image)
    export DOCKER_HOST=${DOCKER_HOST:-$sock}
    docker image inspect local/python-base >/dev/null 2>&1 && { echo "local/python-base exists"; exit 0; }
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >/dev/null
    # The image runs python3.11 as `python`, like the official python:3.11-slim.
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    tar -C "$rootfs" -c . | docker import - local/python-base >/dev/null
    rm -rf "$rootfs"
    echo "built local/python-base (Debian bookworm, Python 3.11)"
    ;;
  stop)
    if [ -f "$dir/dockerd.pid" ]; then
      pid=$(cat "$dir/dockerd.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    # dockerd leaves its network namespace mounted, which would keep the folder from being deleted.
    for ns in "$dir"/exec/netns/*; do [ -e "$ns" ] && umount "$ns" 2>/dev/null || true; done
    ;;
  *) echo "usage: $0 start|base-image|stop [DIR]" >&2; exit 2 ;;
esac

#!/bin/bash
# Container test infrastructure for packaging="container" (called by start.sh; run as root).
# Idempotent and quick when everything is there (~0.1 s):
#   - podman, buildah, skopeo, docker-registry, runc, debootstrap (apt-get, only when missing)
#   - containers.conf + storage.conf that work here (runc, cgroupfs, file events, ulimits, overlay)
#   - a registry (Debian's docker-registry) on 127.0.0.1:$REGISTRY_PORT, storage in $STATE
#   - a Python base image localhost/lazyslurm-test-py:bookworm made with debootstrap +
#     `podman import`; its rootfs tar is cached in $CACHE, so a purged state dir costs only
#     the import (~5 s), not the debootstrap (~40 s)
# Writes KEY=VALUE lines for tests to $STATE/containers/env. See tests/cluster/README.md.
set -euo pipefail
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
STATE=${LAZYSLURM_TEST_CLUSTER_DIR:-/tmp/lazyslurm-test-cluster}
BASE=${LAZYSLURM_TEST_CLUSTER_PORT_BASE:-46800}
REGISTRY_PORT=${LAZYSLURM_TEST_REGISTRY_PORT:-$((BASE + 21))}
CACHE=${LAZYSLURM_TEST_CACHE_DIR:-/var/cache/lazyslurm-test}
IMAGE=localhost/lazyslurm-test-py:bookworm
D=$STATE/containers
T0=$EPOCHREALTIME
el() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
die() { echo "containers: ERROR: $*" >&2; exit 1; }
running() { [ -e /proc/$1/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat 2>/dev/null; }
alive() { local p; [ -s "$1" ] || return 1; p=$(cat "$1"); running "$p" || return 1
          tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -qF -- "$2"; }
port_busy() { (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }
wait_for() { local n=$1; shift; for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$D" "$D/registry" "$CACHE"

# ---------------------------------------------------------------- packages
need=""
for b in podman buildah skopeo docker-registry runc debootstrap; do
  command -v $b >/dev/null 2>&1 || need="$need $b"; done
if [ -n "$need" ]; then
  echo "  installing:$need"
  DEBIAN_FRONTEND=noninteractive apt-get install -y podman buildah skopeo docker-registry runc debootstrap \
    >"$D/apt.log" 2>&1 || { apt-get update >>"$D/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y podman buildah skopeo docker-registry runc debootstrap >>"$D/apt.log" 2>&1; } \
    || die "apt-get install failed, see $D/apt.log"
fi

# ---------------------------------------------------------------- podman configuration
cat >"$D/containers.conf.new" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"$D/storage.conf.new" <<EOF
[storage]
driver = "overlay"
graphroot = "$D/storage"
runroot = "$D/run"
EOF
for f in containers.conf storage.conf; do
  cmp -s "$D/$f.new" "$D/$f" && rm -f "$D/$f.new" || mv "$D/$f.new" "$D/$f"; done
export CONTAINERS_CONF=$D/containers.conf CONTAINERS_STORAGE_CONF=$D/storage.conf

# ---------------------------------------------------------------- registry on loopback
cat >"$D/registry/config.yml.new" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $D/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
changed=0
cmp -s "$D/registry/config.yml.new" "$D/registry/config.yml" && rm -f "$D/registry/config.yml.new" \
  || { mv "$D/registry/config.yml.new" "$D/registry/config.yml"; changed=1; }
if alive "$D/registry/pid" "docker-registry" && [ $changed = 1 ]; then
  kill "$(cat "$D/registry/pid")"; sleep 0.3; fi
if ! alive "$D/registry/pid" "docker-registry"; then
  port_busy "$REGISTRY_PORT" && die "port $REGISTRY_PORT (registry) is used by another process; set LAZYSLURM_TEST_REGISTRY_PORT"
  setsid docker-registry serve "$D/registry/config.yml" </dev/null >>"$D/registry/registry.log" 2>&1 &
  echo $! >"$D/registry/pid"
  wait_for 200 port_busy "$REGISTRY_PORT" || die "registry not listening, see $D/registry/registry.log"
  echo "  registry started on 127.0.0.1:$REGISTRY_PORT ($(el)s)"
fi

# ---------------------------------------------------------------- Python base image (cached)
if ! podman image exists "$IMAGE" 2>/dev/null; then
  TAR=$CACHE/debian-py-bookworm.tar
  if [ ! -s "$TAR" ]; then
    MIRROR=$( { grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true; } \
             | grep -oE 'https?://[^ ]+' | grep -v security | head -1 || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    echo "  debootstrap bookworm from $MIRROR (about 40 s, once per machine)"
    debootstrap --variant=minbase --include=python3-minimal,python3-venv bookworm "$ROOTFS" "$MIRROR" \
      >"$D/debootstrap.log" 2>&1 || { rm -rf "$ROOTFS"; die "debootstrap failed, see $D/debootstrap.log"; }
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" --numeric-owner -cf "$TAR.tmp" . && mv "$TAR.tmp" "$TAR"
    rm -rf "$ROOTFS"
  fi
  podman import --change 'CMD ["/usr/bin/python3"]' "$TAR" "$IMAGE" >"$D/import.log" 2>&1 \
    || die "podman import failed, see $D/import.log"
  echo "  base image $IMAGE imported ($(el)s)"
fi

cat >"$D/env.new" <<EOF
LAZYSLURM_TEST_REGISTRY=127.0.0.1:$REGISTRY_PORT
LAZYSLURM_TEST_BASE_IMAGE=$IMAGE
LAZYSLURM_TEST_CONTAINERS_CONF=$D/containers.conf
LAZYSLURM_TEST_CONTAINERS_STORAGE_CONF=$D/storage.conf
EOF
cmp -s "$D/env.new" "$D/env" && rm -f "$D/env.new" || mv "$D/env.new" "$D/env"

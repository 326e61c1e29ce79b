#!/bin/bash
# Stop what tests/cluster/start.sh started, by PID from its own pid files only (never by name).
#   stop.sh           stop daemons; state (job ids, accounting DB, keys) is kept
#   stop.sh --purge   also delete the whole state dir (next start.sh is a start from nothing) and
#                     remove our key from the test user's authorized_keys (the user is kept)
set -uo pipefail
STATE=${LAZYSLURM_TEST_CLUSTER_DIR:-/tmp/lazyslurm-test-cluster}
SSH_USER=${LAZYSLURM_TEST_CLUSTER_SSH_USER:-lsuser}
PURGE=0
case "${1:-}" in --purge) PURGE=1 ;; "") ;; *) echo "usage: $0 [--purge]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "stop.sh: must run as root" >&2; exit 1; }

running() { [ -e /proc/$1/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat 2>/dev/null; }
alive() { local p; [ -s "$1" ] || return 1; p=$(cat "$1"); running "$p" || return 1
          tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -qF -- "$2"; }
stop() { # PIDFILE PATTERN LABEL
  if ! alive "$1" "$2"; then [ "$3" = mariadbd ] || rm -f "$1"; return 0; fi
  local p t0=$EPOCHREALTIME; p=$(cat "$1"); kill "$p" 2>/dev/null
  for _ in $(seq 1200); do running "$p" || break; sleep 0.05; done
  if running "$p"; then echo "stop.sh: $3 ($p) ignored SIGTERM for 60 s, sending SIGKILL"; kill -9 "$p"; fi
  [ "$3" = mariadbd ] || rm -f "$1"     # mariadbd removes its own pid file (owned by mysql)
  awk -v l="$3" -v p="$p" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "stopped %s (pid %s) in %.2fs\n", l, p, b - a }'
}
stop_cluster() { # NAME
  local d=$STATE/$1
  stop "$d/run/slurmd.pid" "slurmd -f $d/etc/slurm.conf" "$1 slurmd"
  stop "$d/run/slurmctld.pid" "slurmctld -f $d/etc/slurm.conf" "$1 slurmctld"
  if [ "$1" = acct ]; then
    stop "$d/dbd/slurmdbd.pid" slurmdbd "$1 slurmdbd"
    stop "$d/mysql/run/mysqld.pid" "$d/etc/my.cnf" mariadbd
  fi
  stop "$d/munge/munged.pid" "munged --socket=$d/munge" "$1 munged"
}

[ -d "$STATE" ] || { echo "nothing to stop: no $STATE"; exit 0; }
stop "$STATE/ssh/sshd.pid" "$STATE/ssh/sshd_config" sshd &
stop "$STATE/bastion/sshd.pid" "$STATE/bastion/sshd_config" "bastion sshd" &
stop_cluster acct &
stop_cluster noacct &
stop "$STATE/containers/registry/pid" "docker-registry serve $STATE/containers/registry/config.yml" registry &
wait

if [ $PURGE = 1 ]; then
  [ -e "$STATE/.lazyslurm-test-cluster" ] || { echo "stop.sh: $STATE has no .lazyslurm-test-cluster marker: not purging" >&2; exit 1; }
  H=$(getent passwd "$SSH_USER" | cut -d: -f6)
  if [ -n "$H" ] && [ -s "$STATE/ssh/${SSH_USER}_id_ed25519.pub" ] && [ -f "$H/.ssh/authorized_keys" ]; then
    grep -vxF "$(cat "$STATE/ssh/${SSH_USER}_id_ed25519.pub")" "$H/.ssh/authorized_keys" > "$H/.ssh/authorized_keys.new"
    cat "$H/.ssh/authorized_keys.new" > "$H/.ssh/authorized_keys"; rm -f "$H/.ssh/authorized_keys.new"
  fi
  rm -rf "$STATE"
  echo "purged $STATE"
fi
exit 0

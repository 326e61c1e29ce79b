#!/bin/bash
# lazyslurm test clusters: bring up (idempotently) two small real Slurm 22.05 clusters on 127.0.0.1
# plus an sshd for a non-root test user. Run as root; no systemd needed. See tests/cluster/README.md.
#
#   acct    munged + MariaDB + slurmdbd + slurmctld + slurmd   (sacct works; job ids >= 1000000)
#   noacct  munged + slurmctld + slurmd, no accounting          (sacct fails; use squeue; job ids >= 1)
#   sshd    127.0.0.1:$SSH_PORT, key-only login for $SSH_USER, SLURM_CONF=<acct slurm.conf>
#   mfa     (tests/cluster/mfa.sh) 127.0.0.1:$MFA_PORT, key + TOTP code (PAM google-authenticator);
#           optional: if it fails, only the two-factor tests are skipped
#   containers (tests/cluster/containers.sh): podman config, a registry on 127.0.0.1, a cached
#           Python base image; optional: if it fails, only the container tests are skipped
#   site    (tests/cluster/site.sh, once acct is up): a 4-node cluster with preemption, per-user
#           caps (slurmdbd: its own database on acct's MariaDB) and faults on demand; job ids
#           >= 2000000; optional: if it fails, only the site tests are skipped
#
# Re-running is cheap: live daemons are kept, a daemon is restarted only when its generated config
# changed. Everything lives under $STATE; stop with tests/cluster/stop.sh [--purge].
# Prints (and writes to $STATE/env.sh and $STATE/env.json) the LAZYSLURM_TEST_* variables.
#
# Inputs (all optional):
#   LAZYSLURM_TEST_CLUSTER_DIR        state dir                (default /tmp/lazyslurm-test-cluster)
#   LAZYSLURM_TEST_CLUSTER_PORT_BASE  slurm/db ports base      (default 46800: acct 46801-46804, noacct 46811-46812)
#   LAZYSLURM_TEST_CLUSTER_SSH_PORT   sshd port                (default 2222)
#   LAZYSLURM_TEST_CLUSTER_MFA_PORT   two-factor sshd port     (default 2224)
#   LAZYSLURM_TEST_CLUSTER_SSH_USER   test user               (default lsuser)
#   LAZYSLURM_TEST_CLUSTER_CPUS       advertised CPUs per node (default 64)
#   LAZYSLURM_TEST_CLUSTER_TASK       auto|cgroup|none         (default auto: cgroup if v1 memory controller)
#   LAZYSLURM_TEST_CLUSTER_MAX_ARRAY  MaxArraySize             (default 100; Slurm's own default is 1001)
#   LAZYSLURM_TEST_CLUSTER_MAX_JOBS   MaxJobCount              (default 200000; Slurm's own default is 10000)
#   LAZYSLURM_TEST_CLUSTER_MIN_JOB_AGE MinJobAge, s            (default 3600; Slurm's own default is 300)
set -euo pipefail
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
STATE=${LAZYSLURM_TEST_CLUSTER_DIR:-/tmp/lazyslurm-test-cluster}
BASE=${LAZYSLURM_TEST_CLUSTER_PORT_BASE:-46800}
SSH_PORT=${LAZYSLURM_TEST_CLUSTER_SSH_PORT:-2222}
SSH_USER=${LAZYSLURM_TEST_CLUSTER_SSH_USER:-lsuser}
CPUS=${LAZYSLURM_TEST_CLUSTER_CPUS:-64}
TASK=${LAZYSLURM_TEST_CLUSTER_TASK:-auto}
MAX_ARRAY=${LAZYSLURM_TEST_CLUSTER_MAX_ARRAY:-100}
MAX_JOBS=${LAZYSLURM_TEST_CLUSTER_MAX_JOBS:-200000}
MIN_JOB_AGE=${LAZYSLURM_TEST_CLUSTER_MIN_JOB_AGE:-3600}
PKGS="slurm-wlm munge openssh-server slurmdbd mariadb-server graphviz bc"
NODE=$(hostname -s)
T0=$EPOCHREALTIME

die() { echo "lazyslurm test cluster: ERROR: $*" >&2; exit 1; }
el() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
running() { [ -e /proc/$1/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat 2>/dev/null; }  # zombie = dead
# alive PIDFILE PATTERN: pid file exists, process lives, its command line contains PATTERN
alive() { local p; [ -s "$1" ] || return 1; p=$(cat "$1"); running "$p" || return 1
          tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -qF -- "$2"; }
stop_pid() { # PIDFILE PATTERN: SIGTERM (SIGKILL after 30 s) a process of ours, by its pid file only
  alive "$1" "$2" || return 0; local p; p=$(cat "$1"); kill "$p" 2>/dev/null || true
  for _ in $(seq 600); do running "$p" || break; sleep 0.05; done
  running "$p" && { echo "  $2 ($p) ignored SIGTERM -> SIGKILL"; kill -9 "$p"; }; rm -f "$1"; }
install_if_changed() { # NEW TARGET -> returns 1 if TARGET was replaced
  if cmp -s "$1" "$2"; then rm -f "$1"; return 0; fi; mv "$1" "$2"; return 1; }
port_busy() { (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }
check_port() { # PORT WHAT: called only when our daemon is not running
  port_busy "$1" && die "port $1 ($2) is already used by another process; set LAZYSLURM_TEST_CLUSTER_PORT_BASE / _SSH_PORT"
  return 0; }
wait_for() { # TRIES(x0.05s) CMD...: poll until CMD succeeds
  local n=$1; shift; for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- packages (only when missing)
missing() {
  local b; for b in slurmctld slurmd sbatch sacct squeue scontrol sinfo sacctmgr slurmdbd munged munge unmunge \
                     mariadbd mariadb mariadb-install-db dot bc ssh-keygen ssh; do
    command -v $b >/dev/null 2>&1 || { echo $b; return 0; }; done
  [ -x /usr/sbin/sshd ] || { echo sshd; return 0; }
  compgen -G '/usr/lib/*/slurm-wlm/accounting_storage_mysql.so' >/dev/null || { echo accounting_storage_mysql.so; return 0; }
  return 0; }
if [ -n "$(missing)" ]; then
  echo "missing $(missing): apt-get install -y $PKGS"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q $PKGS slurm-wlm-mysql-plugin; } >/tmp/lazyslurm-test-cluster-apt.log 2>&1 \
    || die "apt-get install failed, see /tmp/lazyslurm-test-cluster-apt.log"
  [ -z "$(missing)" ] || die "still missing $(missing) after apt-get install"
  echo "  packages installed ($(el)s)"
fi

# ---------------------------------------------------------------- common
if [ "$TASK" = auto ]; then
  if grep -qE '^cgroup /sys/fs/cgroup/memory cgroup ' /proc/mounts && [ -w /sys/fs/cgroup/memory ]; then TASK=cgroup
  else TASK=none
    echo "WARNING: no writable cgroup v1 memory controller in /proc/mounts: TaskPlugin=task/none," \
         "--mem is not enforced (no OUT_OF_MEMORY in tests)" >&2
  fi
fi
case $TASK in cgroup|none) ;; *) die "LAZYSLURM_TEST_CLUSTER_TASK must be auto, cgroup or none (got $TASK)";; esac
MEM=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)   # like slurmd -C RealMemory, 90 %

mkdir -p "$STATE/log"
chmod 755 "$STATE"
[ -e "$STATE/.lazyslurm-test-cluster" ] || echo "state dir of lazyslurm tests/cluster/start.sh" > "$STATE/.lazyslurm-test-cluster"

# test user (before the clusters: they check that it can read their config)
if ! id "$SSH_USER" >/dev/null 2>&1; then
  useradd -m -s /bin/bash "$SSH_USER" || die "useradd $SSH_USER failed"
fi
case "$(getent shadow "$SSH_USER" | cut -d: -f2)" in
  '!'*|'') usermod -p '*' "$SSH_USER" ;;   # locked ('!') accounts are refused by sshd with UsePAM no
esac
HOME_U=$(getent passwd "$SSH_USER" | cut -d: -f6)
[ -d "$HOME_U" ] || install -d -m 755 -o "$SSH_USER" -g "$(id -gn "$SSH_USER")" "$HOME_U"

start_munge() { # DIR
  local d=$1 s=$1/munge.socket.2
  mkdir -p "$d"; chown munge:munge "$d"; chmod 755 "$d"
  [ -s "$d/munge.key" ] || dd if=/dev/urandom bs=1024 count=1 of="$d/munge.key" status=none
  chown munge:munge "$d/munge.key"; chmod 400 "$d/munge.key"
  if alive "$d/munged.pid" "munged --socket=$s" && munge -n -S "$s" 2>/dev/null | unmunge -S "$s" >/dev/null 2>&1; then
    return 0; fi
  stop_pid "$d/munged.pid" "munged --socket=$s"; rm -f "$s" "$s.lock"
  runuser -u munge -- munged --socket="$s" --key-file="$d/munge.key" --pid-file="$d/munged.pid" \
      --log-file="$d/munged.log" --seed-file="$d/munged.seed" || die "munged failed to start, see $d/munged.log"
  wait_for 200 bash -c "munge -n -S '$s' | unmunge -S '$s'" || die "munged not answering on $s, see $d/munged.log"
  echo "  munged started ($(el)s)"
}

write_slurm_conf() { # NAME DIR CTLD_PORT SLURMD_PORT FIRST_JOB_ID ACCT(0|1) [DBD_PORT] -> sets SL_CHANGED
  local name=$1 d=$2 ctld=$3 slurmd=$4 first=$5 acct=$6 dbd=${7:-} conf=$2/etc/slurm.conf
  {
    cat <<EOF
# generated by lazyslurm tests/cluster/start.sh -- do not edit (rewritten on every start)
ClusterName=$name
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$ctld
SlurmdPort=$slurmd
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$d/munge/munge.socket.2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/run/slurmctld.pid
SlurmdPidFile=$d/run/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
PlugStackConfig=$d/etc/plugstack.conf
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/$TASK
FirstJobId=$first
MaxJobCount=$MAX_JOBS
# small on purpose: tests exercise array chunking
MaxArraySize=$MAX_ARRAY
# finished jobs stay visible to squeue -t all / scontrol show job for an hour
MinJobAge=$MIN_JOB_AGE
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,bf_continue,default_queue_depth=1000,sched_min_interval=0
# an Epilog makes slurmd send EPILOG_COMPLETE, which runs the scheduler at once (dependency hop ~0.1 s)
Epilog=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# required: without it one job takes the whole node's memory
DefMemPerCPU=100
# lets the node advertise more CPUs than it has
SlurmdParameters=config_overrides
ReturnToService=2
# time limits: no grace; the limit is checked every ~30 s, then KillWait
OverTimeLimit=0
KillWait=2
EOF
    if [ "$acct" = 1 ]; then cat <<EOF
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd
# for slurmdbd connections the munge socket is taken from AccountingStoragePass, not AuthInfo
AccountingStoragePass=$d/munge/munge.socket.2
JobCompType=jobcomp/none
EOF
    else cat <<EOF
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$d/log/jobcomp.txt
EOF
    fi
    cat <<EOF
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=other Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
PartitionName=short Nodes=$NODE Default=NO MaxTime=5 State=UP
EOF
  } > "$conf.new"
  cat > "$d/etc/cgroup.conf.new" <<'EOF'
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
EOF
  SL_CHANGED=0
  install_if_changed "$conf.new" "$conf" || SL_CHANGED=1
  install_if_changed "$d/etc/cgroup.conf.new" "$d/etc/cgroup.conf" || SL_CHANGED=1
  [ -e "$d/etc/plugstack.conf" ] || : > "$d/etc/plugstack.conf"
  chmod 644 "$conf" "$d/etc/cgroup.conf" "$d/etc/plugstack.conf"
  return 0
}

start_slurm() { # DIR CTLD_PORT SLURMD_PORT CHANGED
  local d=$1 conf=$1/etc/slurm.conf st ok=0
  export SLURM_CONF=$conf
  if [ "$4" = 1 ]; then
    if alive "$d/run/slurmctld.pid" "slurmctld -f $conf" || alive "$d/run/slurmd.pid" "slurmd -f $conf"; then
      echo "  slurm.conf changed: restarting slurmctld + slurmd"; fi
    stop_pid "$d/run/slurmd.pid" "slurmd -f $conf"; stop_pid "$d/run/slurmctld.pid" "slurmctld -f $conf"
  fi
  if ! alive "$d/run/slurmctld.pid" "slurmctld -f $conf"; then
    check_port "$2" slurmctld
    slurmctld -f "$conf" || die "slurmctld failed to start, see $d/log/slurmctld.log"
    wait_for 300 bash -c 'scontrol ping | grep -q UP' || die "slurmctld not answering, see $d/log/slurmctld.log"
    echo "  slurmctld started ($(el)s)"
  fi
  if ! alive "$d/run/slurmd.pid" "slurmd -f $conf"; then
    check_port "$3" slurmd
    slurmd -f "$conf" || die "slurmd failed to start, see $d/log/slurmd.log"
    echo "  slurmd started ($(el)s)"
  fi
  for _ in $(seq 300); do
    st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    case "$st" in
      idle|mixed|allocated|completing) ok=1; break ;;
      *drain*|*inval*|down*|fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.05
  done
  [ $ok = 1 ] || die "node $NODE not up (state=$st), see $d/log/"
}

check_user_access() { # DIR: the test user must reach the config and the munge socket
  runuser -u "$SSH_USER" -- test -r "$1/etc/slurm.conf" -a -x "$1/munge" \
    || die "$SSH_USER cannot read $1/etc/slurm.conf or enter $1/munge: is every parent of $STATE world-executable?"
}

# ---------------------------------------------------------------- cluster "noacct"
up_noacct() {
  local d=$STATE/noacct
  mkdir -p "$d"/{etc,log,run,state,spool}; chmod 755 "$d" "$d"/{etc,log,run}
  start_munge "$d/munge"
  write_slurm_conf noacct "$d" $((BASE + 11)) $((BASE + 12)) 1 0
  start_slurm "$d" $((BASE + 11)) $((BASE + 12)) $SL_CHANGED
  check_user_access "$d"
}

# ---------------------------------------------------------------- cluster "acct"
up_acct() {
  local d=$STATE/acct db_port=$((BASE + 4)) dbd_port=$((BASE + 3)) mycnf=$STATE/acct/etc/my.cnf
  mkdir -p "$d"/{etc,log,run,state,spool,dbd,mysql/data,mysql/run}; chmod 755 "$d" "$d"/{etc,log,run}
  chown -R mysql:mysql "$d/mysql"
  start_munge "$d/munge"

  # MariaDB: private datadir/socket/port; /etc/mysql is not read
  cat > "$mycnf.new" <<EOF
[mariadbd]
datadir=$d/mysql/data
socket=$d/mysql/run/mysqld.sock
pid-file=$d/mysql/run/mysqld.pid
port=$db_port
bind-address=127.0.0.1
skip-name-resolve
# slurmdbd warns below 512M / 64M / 900
innodb_buffer_pool_size=512M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
[client]
socket=$d/mysql/run/mysqld.sock
port=$db_port
EOF
  local db_changed=0; install_if_changed "$mycnf.new" "$mycnf" || db_changed=1; chmod 644 "$mycnf"
  sql() { mariadb --defaults-file="$mycnf" -uroot "$@"; }
  if [ ! -d "$d/mysql/data/mysql" ]; then
    mariadb-install-db --defaults-file="$mycnf" --user=mysql --auth-root-authentication-method=socket \
        --skip-test-db > "$d/log/mariadb-install-db.log" 2>&1 \
      || die "mariadb-install-db failed, see $d/log/mariadb-install-db.log"
    echo "  mariadb datadir initialised ($(el)s)"
  fi
  [ $db_changed = 1 ] && stop_pid "$d/mysql/run/mysqld.pid" "$mycnf"
  if ! alive "$d/mysql/run/mysqld.pid" "$mycnf"; then
    check_port $db_port mariadb
    rm -f "$d/mysql/run/mysqld.sock"
    # stderr is the error log (a log-error= file would have to be writable by mysql)
    setsid mariadbd --defaults-file="$mycnf" --user=mysql </dev/null >>"$d/log/mariadb.log" 2>&1 &
    wait_for 600 sql -e 'select 1' || die "mariadbd not answering, see $d/log/mariadb.log"
    echo "  mariadbd started ($(el)s)"
  fi
  [ -s "$d/etc/dbpass" ] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$d/etc/dbpass"; }
  chmod 600 "$d/etc/dbpass"
  local pw; pw=$(cat "$d/etc/dbpass")
  if [ ! -e "$d/mysql/.grants-done" ]; then
    sql <<EOF || die "creating the slurm database/user failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
    touch "$d/mysql/.grants-done"
  fi

  # slurmdbd: no -f option; it reads slurmdbd.conf beside $SLURM_CONF (mode 600, owner = SlurmUser)
  cat > "$d/etc/slurmdbd.conf.new" <<EOF
# generated by lazyslurm tests/cluster/start.sh
AuthType=auth/munge
AuthInfo=socket=$d/munge/munge.socket.2
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
DebugLevel=info
LogFile=$d/log/slurmdbd.log
PidFile=$d/dbd/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$pw
StorageLoc=slurm_acct_db
EOF
  local dbd_changed=0
  install_if_changed "$d/etc/slurmdbd.conf.new" "$d/etc/slurmdbd.conf" || dbd_changed=1
  chown root:root "$d/etc/slurmdbd.conf"; chmod 600 "$d/etc/slurmdbd.conf"

  write_slurm_conf acct "$d" $((BASE + 1)) $((BASE + 2)) 1000000 1 $dbd_port
  local sl_changed=$SL_CHANGED
  export SLURM_CONF=$d/etc/slurm.conf
  [ $dbd_changed = 1 ] && stop_pid "$d/dbd/slurmdbd.pid" slurmdbd
  if ! alive "$d/dbd/slurmdbd.pid" slurmdbd; then
    check_port $dbd_port slurmdbd
    slurmdbd || die "slurmdbd failed to start, see $d/log/slurmdbd.log"
    wait_for 400 sacctmgr -n -P show cluster format=cluster || die "slurmdbd not answering, see $d/log/slurmdbd.log"
    echo "  slurmdbd started ($(el)s)"
  fi
  # slurmctld would add its cluster on first registration; adding it first avoids an error line/race
  if [ ! -e "$d/dbd/.cluster-added" ]; then
    sacctmgr -n -P show cluster format=cluster | grep -qx acct || sacctmgr -i add cluster acct >/dev/null \
      || die "sacctmgr add cluster acct failed, see $d/log/slurmdbd.log"
    touch "$d/dbd/.cluster-added"
  fi
  start_slurm "$d" $((BASE + 1)) $((BASE + 2)) $sl_changed
  check_user_access "$d"
}

# ---------------------------------------------------------------- sshd + test user keys
up_ssh() {
  local d=$STATE/ssh key=$STATE/ssh/${SSH_USER}_id_ed25519 g; g=$(id -gn "$SSH_USER")
  mkdir -p "$d" /run/sshd; chmod 755 "$d" /run/sshd
  [ -s "$d/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C lazyslurm-test-host -f "$d/ssh_host_ed25519_key"
  [ -s "$key" ] || ssh-keygen -q -t ed25519 -N '' -C "$SSH_USER@lazyslurm-test" -f "$key"
  chmod 600 "$key" "$d/ssh_host_ed25519_key"; chown root:root "$key"
  # authorize our key (appended, other keys of the user are kept)
  install -d -m 700 -o "$SSH_USER" -g "$g" "$HOME_U/.ssh"
  local pub; pub=$(cat "$key.pub")
  if ! grep -qxF "$pub" "$HOME_U/.ssh/authorized_keys" 2>/dev/null; then
    echo "$pub" >> "$HOME_U/.ssh/authorized_keys"
  fi
  chown "$SSH_USER:$g" "$HOME_U/.ssh/authorized_keys"; chmod 600 "$HOME_U/.ssh/authorized_keys"
  local hk; hk=$(cut -d' ' -f1,2 "$d/ssh_host_ed25519_key.pub")
  if [ "$SSH_PORT" = 22 ]; then echo "127.0.0.1 $hk"; else echo "[127.0.0.1]:$SSH_PORT $hk"; fi > "$d/known_hosts.new"
  install_if_changed "$d/known_hosts.new" "$d/known_hosts" || true; chmod 644 "$d/known_hosts"

  cat > "$d/sshd_config.new" <<EOF
# generated by lazyslurm tests/cluster/start.sh
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $SSH_USER
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 100
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp internal-sftp
SetEnv SLURM_CONF=$STATE/acct/etc/slurm.conf
EOF
  local changed=0; install_if_changed "$d/sshd_config.new" "$d/sshd_config" || changed=1
  if [ $changed = 1 ]; then
    /usr/sbin/sshd -t -f "$d/sshd_config" || die "sshd config test failed"
    stop_pid "$d/sshd.pid" "$d/sshd_config"
  fi
  if ! alive "$d/sshd.pid" "$d/sshd_config"; then
    check_port "$SSH_PORT" sshd
    /usr/sbin/sshd -f "$d/sshd_config" -E "$STATE/log/sshd.log" || die "sshd failed to start, see $STATE/log/sshd.log"
    wait_for 100 port_busy "$SSH_PORT" || die "sshd not listening on 127.0.0.1:$SSH_PORT, see $STATE/log/sshd.log"
    echo "  sshd started ($(el)s)"
  fi
}

# ---------------------------------------------------------------- bastion: a second sshd, a jump host
# 127.0.0.1:$BASTION_PORT, its own host key, same user and key, TCP forwarding allowed. Run in its
# own mount namespace (if unshare works) whose /etc/hosts also names 127.0.0.1 $BEHIND: a name only
# the bastion can resolve, so a host called that is reachable through the jump only.
# Writes $STATE/bastion/env (LAZYSLURM_TEST_BASTION_*), read into env.sh below. Needs up_ssh first.
BASTION_PORT=${LAZYSLURM_TEST_CLUSTER_BASTION_PORT:-2223}
BEHIND=lazyslurm-behind-bastion
up_bastion() {
  local d=$STATE/bastion behind=""
  mkdir -p "$d"; chmod 755 "$d"
  [ -s "$d/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C lazyslurm-test-bastion -f "$d/ssh_host_ed25519_key"
  chmod 600 "$d/ssh_host_ed25519_key"
  echo "[127.0.0.1]:$BASTION_PORT $(cut -d' ' -f1,2 "$d/ssh_host_ed25519_key.pub")" > "$d/known_hosts.new"
  install_if_changed "$d/known_hosts.new" "$d/known_hosts" || true; chmod 644 "$d/known_hosts"
  { cat /etc/hosts; echo "127.0.0.1 $BEHIND"; } > "$d/hosts"; chmod 644 "$d/hosts"
  cat > "$d/sshd_config.new" <<EOF
# generated by lazyslurm tests/cluster/start.sh (bastion)
Port $BASTION_PORT
ListenAddress 127.0.0.1
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $SSH_USER
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 100
AuthorizedKeysFile .ssh/authorized_keys
AllowTcpForwarding yes
EOF
  local changed=0; install_if_changed "$d/sshd_config.new" "$d/sshd_config" || changed=1
  if [ $changed = 1 ]; then
    /usr/sbin/sshd -t -f "$d/sshd_config" || die "bastion sshd config test failed"
    stop_pid "$d/sshd.pid" "$d/sshd_config"
  fi
  if ! alive "$d/sshd.pid" "$d/sshd_config"; then
    check_port "$BASTION_PORT" "bastion sshd"
    rm -f "$d/behind"
    if unshare -m --propagation private true 2>/dev/null; then
      unshare -m --propagation private sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$d/hosts" \
        /usr/sbin/sshd -f "$d/sshd_config" -E "$STATE/log/bastion-sshd.log" && echo "$BEHIND" > "$d/behind"
    fi
    [ -s "$d/behind" ] || /usr/sbin/sshd -f "$d/sshd_config" -E "$STATE/log/bastion-sshd.log" \
      || die "bastion sshd failed to start, see $STATE/log/bastion-sshd.log"
    wait_for 100 port_busy "$BASTION_PORT" || die "bastion sshd not listening on 127.0.0.1:$BASTION_PORT"
    echo "  bastion sshd started ($(el)s)"
  fi
  [ -s "$d/behind" ] && behind=$(cat "$d/behind")
  printf '%s\n' LAZYSLURM_TEST_BASTION_PORT="$BASTION_PORT" LAZYSLURM_TEST_BASTION_KNOWN_HOSTS="$d/known_hosts" \
    LAZYSLURM_TEST_BASTION_LOG="$STATE/log/bastion-sshd.log" LAZYSLURM_TEST_BASTION_BEHIND="$behind" > "$d/env"
}

# ---------------------------------------------------------------- run the three parts in parallel
declare -A PID
for part in acct noacct ssh; do
  ( up_$part ) > "$STATE/log/start-$part.out" 2>&1 &
  PID[$part]=$!
done
( bash "$(dirname "$0")/containers.sh" ) > "$STATE/log/start-containers.out" 2>&1 &
CONTAINERS_PID=$!
FAILED=""
for part in acct noacct ssh; do
  if wait "${PID[$part]}"; then rc=0; else rc=$?; fi
  if [ -s "$STATE/log/start-$part.out" ]; then sed "s/^/[$part] /" "$STATE/log/start-$part.out"; fi
  [ $rc = 0 ] || FAILED="$FAILED $part"
done
MFA_RC=1
if [ -z "$FAILED" ]; then   # the bastion and the MFA sshd need the ssh part (user, key, sshd_config)
  ( bash "$(dirname "$0")/mfa.sh" ) > "$STATE/log/start-mfa.out" 2>&1 &   # optional, like containers
  MFA_PID=$!
  ( up_bastion ) > "$STATE/log/start-bastion.out" 2>&1 &   # `&`, not `if ( ... )`: keeps set -e inside
  if wait $!; then rc=0; else rc=$?; fi
  if [ -s "$STATE/log/start-bastion.out" ]; then sed "s/^/[bastion] /" "$STATE/log/start-bastion.out"; fi
  [ $rc = 0 ] || FAILED="$FAILED bastion"
  if wait $MFA_PID; then MFA_RC=0; else MFA_RC=$?; fi
  if [ -s "$STATE/log/start-mfa.out" ]; then sed "s/^/[mfa] /" "$STATE/log/start-mfa.out"; fi
  [ $MFA_RC = 0 ] || echo "[mfa] not available: two-factor login tests will be skipped" >&2
fi
if wait $CONTAINERS_PID; then rc=0; else rc=$?; fi
if [ -s "$STATE/log/start-containers.out" ]; then sed "s/^/[containers] /" "$STATE/log/start-containers.out"; fi
[ $rc = 0 ] || echo "[containers] not available: container tests will be skipped" >&2
[ -z "$FAILED" ] || die "failed to start:$FAILED (logs under $STATE/log, $STATE/acct/log, $STATE/noacct/log)"
# the many-node site keeps its accounting in acct's MariaDB: after acct (optional, like containers)
if bash "$(dirname "$0")/site.sh" > "$STATE/log/start-site.out" 2>&1; then SITE_RC=0; else SITE_RC=$?; fi
if [ -s "$STATE/log/start-site.out" ]; then sed "s/^/[site] /" "$STATE/log/start-site.out"; fi
[ $SITE_RC = 0 ] || echo "[site] not available: site tests will be skipped" >&2

# ---------------------------------------------------------------- environment for tests
KEY=$STATE/ssh/${SSH_USER}_id_ed25519
VARS=(LAZYSLURM_TEST_SLURM_CONF="$STATE/acct/etc/slurm.conf"
      LAZYSLURM_TEST_SLURM_CONF_NOACCT="$STATE/noacct/etc/slurm.conf"
      LAZYSLURM_TEST_SSH_HOST=127.0.0.1
      LAZYSLURM_TEST_SSH_PORT="$SSH_PORT"
      LAZYSLURM_TEST_SSH_USER="$SSH_USER"
      LAZYSLURM_TEST_SSH_KEY="$KEY"
      LAZYSLURM_TEST_SSH_KNOWN_HOSTS="$STATE/ssh/known_hosts")
if [ -s "$STATE/bastion/env" ]; then
  while IFS= read -r line; do VARS+=("$line"); done < "$STATE/bastion/env"
fi
if [ $MFA_RC = 0 ] && [ -s "$STATE/mfa/env" ]; then
  while IFS= read -r line; do VARS+=("$line"); done < "$STATE/mfa/env"
fi
if [ $rc = 0 ] && [ -s "$STATE/containers/env" ]; then
  while IFS= read -r line; do VARS+=("$line"); done < "$STATE/containers/env"
fi
if [ $SITE_RC = 0 ] && [ -s "$STATE/site/env" ]; then
  while IFS= read -r line; do VARS+=("$line"); done < "$STATE/site/env"
fi
{ for v in "${VARS[@]}"; do printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"; done; } > "$STATE/env.sh.new"
{ sep='{'; for v in "${VARS[@]}"; do
    val=${v#*=}; val=${val//\\/\\\\}; val=${val//\"/\\\"}
    printf '%s\n  "%s": "%s"' "$sep" "${v%%=*}" "$val"; sep=','; done; printf '\n}\n'; } > "$STATE/env.json.new"
install_if_changed "$STATE/env.sh.new" "$STATE/env.sh" || true
install_if_changed "$STATE/env.json.new" "$STATE/env.json" || true
chmod 644 "$STATE/env.sh" "$STATE/env.json"
echo "lazyslurm test clusters up in $(el)s (task/$TASK, node $NODE, $CPUS CPUs): acct ctld=:$((BASE + 1))" \
     "dbd=:$((BASE + 3)) db=:$((BASE + 4)); noacct ctld=:$((BASE + 11)); sshd=127.0.0.1:$SSH_PORT"
cat "$STATE/env.sh"

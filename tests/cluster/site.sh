#!/bin/bash
# lazyslurm test "site": a third, many-node Slurm 22.05 cluster on 127.0.0.1, beside the two
# single-node ones of start.sh (which calls this script once its acct part is up; it may also
# run alone, as root, after start.sh). See tests/cluster/README.md ("The site").
#
#   site    munged + slurmdbd (its own database on the acct cluster's MariaDB) + slurmctld +
#           4 slurmd (`slurmd -N site1` ... `site4`, one port each; job ids >= 2000000)
#           partitions: main (default, never preempted), low (preempted: REQUEUE),
#           lowcancel (preempted: CANCEL), high (preempts low and lowcancel)
#           AccountingStorageEnforce=associations,limits,qos; QOS capped (MaxSubmitJobsPerUser
#           and MaxJobsPerUser) is the test users' default; QOS normal is uncapped; account
#           capped carries the same caps as an association (AssocMax*)
#           SlurmdTimeout=10: a killed node's jobs end NODE_FAIL (or are requeued) in ~30 s
#
# Idempotent: live daemons are kept, a daemon is restarted only when its generated config changed,
# a node whose slurmd is gone (a test killed it) is started again. Writes $STATE/site/env
# (LAZYSLURM_TEST_SITE_*), which start.sh adds to env.sh/env.json.
#
# Inputs (all optional; the first three as for start.sh):
#   LAZYSLURM_TEST_CLUSTER_DIR, LAZYSLURM_TEST_CLUSTER_PORT_BASE (site: base+31 .. base+32+NODES),
#   LAZYSLURM_TEST_CLUSTER_SSH_USER
#   LAZYSLURM_TEST_CLUSTER_SITE_NODES        compute nodes                     (default 4)
#   LAZYSLURM_TEST_CLUSTER_SITE_CPUS         CPUs per node                     (default 8)
#   LAZYSLURM_TEST_CLUSTER_SITE_JOB_REQUEUE  JobRequeue            (default 1, Slurm's default)
#   LAZYSLURM_TEST_CLUSTER_SITE_MAX_SUBMIT   MaxSubmitJobsPerUser of QOS capped (default 20)
#   LAZYSLURM_TEST_CLUSTER_SITE_MAX_JOBS     MaxJobsPerUser of QOS capped       (default 10)
set -euo pipefail
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
STATE=${LAZYSLURM_TEST_CLUSTER_DIR:-/tmp/lazyslurm-test-cluster}
BASE=${LAZYSLURM_TEST_CLUSTER_PORT_BASE:-46800}
SSH_USER=${LAZYSLURM_TEST_CLUSTER_SSH_USER:-lsuser}
NODES=${LAZYSLURM_TEST_CLUSTER_SITE_NODES:-4}
CPUS=${LAZYSLURM_TEST_CLUSTER_SITE_CPUS:-8}
JOB_REQUEUE=${LAZYSLURM_TEST_CLUSTER_SITE_JOB_REQUEUE:-1}
MAX_SUBMIT=${LAZYSLURM_TEST_CLUSTER_SITE_MAX_SUBMIT:-20}
MAX_RUNNING=${LAZYSLURM_TEST_CLUSTER_SITE_MAX_JOBS:-10}
CTLD_PORT=$((BASE + 31))
DBD_PORT=$((BASE + 32))
NODE_PORT0=$((BASE + 33))   # site1 listens on base+33, site2 on base+34, ...
HOST=$(hostname -s)
D=$STATE/site
CONF=$D/etc/slurm.conf
MYCNF=$STATE/acct/etc/my.cnf   # the acct cluster's MariaDB server: the site has its own database
T0=$EPOCHREALTIME

die() { echo "lazyslurm test site: ERROR: $*" >&2; exit 1; }
el() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
running() { [ -e /proc/$1/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat 2>/dev/null; }
alive() { local p; [ -s "$1" ] || return 1; p=$(cat "$1"); running "$p" || return 1
          tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -qF -- "$2"; }
stop_pid() { # PIDFILE PATTERN: SIGTERM (SIGKILL after 30 s) a process of ours, by its pid file only
  alive "$1" "$2" || return 0; local p; p=$(cat "$1"); kill -CONT "$p" 2>/dev/null || true
  kill "$p" 2>/dev/null || true
  for _ in $(seq 600); do running "$p" || break; sleep 0.05; done
  running "$p" && { echo "  $2 ($p) ignored SIGTERM -> SIGKILL"; kill -9 "$p"; }; rm -f "$1"; }
install_if_changed() { if cmp -s "$1" "$2"; then rm -f "$1"; return 0; fi; mv "$1" "$2"; return 1; }
port_busy() { (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }
check_port() { port_busy "$1" && die "port $1 ($2) is already used by another process; set LAZYSLURM_TEST_CLUSTER_PORT_BASE"
               return 0; }
wait_for() { local n=$1; shift; for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
for b in slurmctld slurmd slurmdbd sacctmgr munged mariadb; do
  command -v $b >/dev/null 2>&1 || die "missing $b: run tests/cluster/start.sh first (it installs the packages)"; done
[ -s "$STATE/acct/mysql/run/mysqld.pid" ] && alive "$STATE/acct/mysql/run/mysqld.pid" "$MYCNF" \
  || die "the acct cluster's MariaDB is not running (the site keeps its accounting there): run tests/cluster/start.sh"
id "$SSH_USER" >/dev/null 2>&1 || die "no user $SSH_USER: run tests/cluster/start.sh first"
case "$JOB_REQUEUE" in 0|1) ;; *) die "LAZYSLURM_TEST_CLUSTER_SITE_JOB_REQUEUE must be 0 or 1";; esac
[ "$NODES" -ge 2 ] 2>/dev/null || die "LAZYSLURM_TEST_CLUSTER_SITE_NODES must be an integer, at least 2"
MEM=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
LAST=$((NODE_PORT0 + NODES - 1))

mkdir -p "$D"/{etc,log,run,state,spool,dbd}; chmod 755 "$D" "$D"/{etc,log,run}

# ---------------------------------------------------------------- munge (its own)
m=$D/munge s=$D/munge/munge.socket.2
mkdir -p "$m"; chown munge:munge "$m"; chmod 755 "$m"
[ -s "$m/munge.key" ] || dd if=/dev/urandom bs=1024 count=1 of="$m/munge.key" status=none
chown munge:munge "$m/munge.key"; chmod 400 "$m/munge.key"
if ! { alive "$m/munged.pid" "munged --socket=$s" && munge -n -S "$s" 2>/dev/null | unmunge -S "$s" >/dev/null 2>&1; }; then
  stop_pid "$m/munged.pid" "munged --socket=$s"; rm -f "$s" "$s.lock"
  runuser -u munge -- munged --socket="$s" --key-file="$m/munge.key" --pid-file="$m/munged.pid" \
      --log-file="$m/munged.log" --seed-file="$m/munged.seed" || die "munged failed to start, see $m/munged.log"
  wait_for 200 bash -c "munge -n -S '$s' | unmunge -S '$s'" || die "munged not answering on $s"
  echo "  munged started ($(el)s)"
fi

# ---------------------------------------------------------------- database + slurmdbd
sql() { mariadb --defaults-file="$MYCNF" -uroot "$@"; }
[ -s "$D/etc/dbpass" ] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$D/etc/dbpass"; }
chmod 600 "$D/etc/dbpass"
PW=$(cat "$D/etc/dbpass")
if [ ! -e "$D/dbd/.grants-done" ]; then
  sql <<EOF || die "creating the site's database/user in the acct MariaDB failed"
CREATE DATABASE IF NOT EXISTS site_acct_db;
CREATE USER IF NOT EXISTS 'slurm_site'@'127.0.0.1' IDENTIFIED BY '$PW';
ALTER USER 'slurm_site'@'127.0.0.1' IDENTIFIED BY '$PW';
GRANT ALL ON site_acct_db.* TO 'slurm_site'@'127.0.0.1';
EOF
  touch "$D/dbd/.grants-done"
fi
DB_PORT=$(sed -n 's/^port=//p' "$MYCNF" | head -1)
cat > "$D/etc/slurmdbd.conf.new" <<EOF
# generated by lazyslurm tests/cluster/site.sh
AuthType=auth/munge
AuthInfo=socket=$s
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$D/log/slurmdbd.log
PidFile=$D/dbd/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm_site
StoragePass=$PW
StorageLoc=site_acct_db
EOF
DBD_CHANGED=0; install_if_changed "$D/etc/slurmdbd.conf.new" "$D/etc/slurmdbd.conf" || DBD_CHANGED=1
chown root:root "$D/etc/slurmdbd.conf"; chmod 600 "$D/etc/slurmdbd.conf"

# ---------------------------------------------------------------- slurm.conf
{
  cat <<EOF
# generated by lazyslurm tests/cluster/site.sh -- do not edit (rewritten on every start)
ClusterName=site
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$NODE_PORT0
AuthType=auth/munge
CredType=cred/munge
# cred_expire (default 120 s) is also how long a requeued job waits before it may start again
AuthInfo=socket=$s,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/state
# one slurmd per node on this host: per-node spool, pid and log files (%n)
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
PlugStackConfig=$D/etc/plugstack.conf
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
# the cgroup v1 tree would be shared by the four slurmd of this one host: no --mem enforcement here
TaskPlugin=task/none
FirstJobId=2000000
MaxJobCount=200000
MaxArraySize=100
MinJobAge=3600
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,bf_continue,default_queue_depth=1000,sched_min_interval=0
Epilog=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SlurmdParameters=config_overrides
ReturnToService=2
OverTimeLimit=0
KillWait=2
# a node whose slurmd stops answering: not responding after ~15 s, DOWN (its jobs NODE_FAIL or
# requeued) after ~30 s
SlurmdTimeout=10
# Slurm's default; LAZYSLURM_TEST_CLUSTER_SITE_JOB_REQUEUE=0 for the other way (or SBATCH_NO_REQUEUE=1 per job)
JobRequeue=$JOB_REQUEUE
# a job of a partition of higher PriorityTier preempts jobs of lower ones, by their PreemptMode
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$s
AccountingStorageEnforce=associations,limits,qos
JobCompType=jobcomp/none
NodeName=site[1-$NODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$NODE_PORT0-$LAST] CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=main Nodes=site[1-$NODES] Default=YES MaxTime=INFINITE PriorityTier=5 PreemptMode=OFF State=UP
PartitionName=low Nodes=site[1-$NODES] Default=NO MaxTime=INFINITE PriorityTier=1 PreemptMode=REQUEUE State=UP
PartitionName=lowcancel Nodes=site[1-$NODES] Default=NO MaxTime=INFINITE PriorityTier=1 PreemptMode=CANCEL State=UP
PartitionName=high Nodes=site[1-$NODES] Default=NO MaxTime=INFINITE PriorityTier=10 PreemptMode=OFF State=UP
EOF
} > "$CONF.new"
SL_CHANGED=0; install_if_changed "$CONF.new" "$CONF" || SL_CHANGED=1
[ -e "$D/etc/plugstack.conf" ] || : > "$D/etc/plugstack.conf"
chmod 644 "$CONF" "$D/etc/plugstack.conf"
export SLURM_CONF=$CONF

node_pid() { echo "$D/run/slurmd-$1.pid"; }
if [ $SL_CHANGED = 1 ]; then
  if alive "$D/run/slurmctld.pid" "slurmctld -f $CONF"; then echo "  slurm.conf changed: restarting the site"; fi
  for i in $(seq 1 16); do stop_pid "$(node_pid site$i)" "slurmd -f $CONF -N site$i"; done
  stop_pid "$D/run/slurmctld.pid" "slurmctld -f $CONF"
fi

[ $DBD_CHANGED = 1 ] && stop_pid "$D/dbd/slurmdbd.pid" slurmdbd
if ! alive "$D/dbd/slurmdbd.pid" slurmdbd; then
  check_port $DBD_PORT slurmdbd
  slurmdbd || die "slurmdbd failed to start, see $D/log/slurmdbd.log"
  wait_for 400 sacctmgr -n -P show cluster format=cluster || die "slurmdbd not answering, see $D/log/slurmdbd.log"
  echo "  slurmdbd started ($(el)s)"
fi

# ---------------------------------------------------------------- associations, QOS, caps
# (before slurmctld: with AccountingStorageEnforce=associations a user without one cannot submit)
ASSOC_KEY="$MAX_SUBMIT/$MAX_RUNNING/$SSH_USER"
if [ "$(cat "$D/dbd/.assoc-done" 2>/dev/null)" != "$ASSOC_KEY" ]; then
  # each sacctmgr call costs 0.2-0.6 s: few calls, the independent ones at the same time
  sam() { sacctmgr -i "$@" >/dev/null 2>&1 || true; }   # "add" of what exists: not an error
  sacctmgr -n -P show cluster format=cluster | grep -qx site || sacctmgr -i add cluster site >/dev/null \
    || die "sacctmgr add cluster site failed, see $D/log/slurmdbd.log"
  { sam add qos capped; sam modify qos capped set MaxSubmitJobsPerUser="$MAX_SUBMIT" MaxJobsPerUser="$MAX_RUNNING"; } &
  { sam add account lz,capped cluster=site Description=lazyslurm Organization=lazyslurm
    sam modify account capped where cluster=site set MaxSubmitJobs="$MAX_SUBMIT" MaxJobs="$MAX_RUNNING"; } &
  wait
  sam add user root,"$SSH_USER" account=lz,capped defaultaccount=lz cluster=site
  sacctmgr -i modify user root,"$SSH_USER" where cluster=site set qos=normal,capped defaultqos=capped >/dev/null \
    || die "sacctmgr modify user root,$SSH_USER failed"
  sacctmgr -n -P show assoc where cluster=site user="$SSH_USER" account=capped format=MaxSubmit \
    | grep -qx "$MAX_SUBMIT" || die "the caps of account capped are not set (sacctmgr), see $D/log/slurmdbd.log"
  echo "$ASSOC_KEY" > "$D/dbd/.assoc-done"
  echo "  associations and QOS set ($(el)s)"
fi

# ---------------------------------------------------------------- slurmctld + one slurmd per node
if ! alive "$D/run/slurmctld.pid" "slurmctld -f $CONF"; then
  check_port $CTLD_PORT slurmctld
  slurmctld -f "$CONF" || die "slurmctld failed to start, see $D/log/slurmctld.log"
  wait_for 300 bash -c 'scontrol ping | grep -q UP' || die "slurmctld not answering, see $D/log/slurmctld.log"
  echo "  slurmctld started ($(el)s)"
fi
for i in $(seq 1 "$NODES"); do
  n=site$i
  mkdir -p "$D/spool/$n"
  if ! alive "$(node_pid $n)" "slurmd -f $CONF -N $n"; then
    check_port $((NODE_PORT0 + i - 1)) "slurmd $n"
    slurmd -f "$CONF" -N "$n" || die "slurmd -N $n failed to start, see $D/log/slurmd-$n.log"
    echo "  slurmd $n started ($(el)s)"
  fi
done
ok=0
for _ in $(seq 400); do
  st=$(sinfo -h -N -o '%N %T' 2>/dev/null || true)
  bad=$(echo "$st" | awk '$2 !~ /^(idle|mixed|allocated|completing)$/ { print $1 }' | sort -u)
  if [ -n "$st" ] && [ -z "$bad" ]; then ok=1; break; fi
  for n in $bad; do
    case "$(echo "$st" | awk -v n="$n" '$1 == n { print $2; exit }')" in
      *drain*|*inval*|down|fail*) scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true ;;
    esac
  done
  sleep 0.05
done
[ $ok = 1 ] || die "site nodes not up: $(echo $st), see $D/log/"
runuser -u "$SSH_USER" -- test -r "$CONF" -a -x "$D/munge" \
  || die "$SSH_USER cannot read $CONF or enter $D/munge: is every parent of $STATE world-executable?"

printf '%s\n' LAZYSLURM_TEST_SITE_CONF="$CONF" \
  LAZYSLURM_TEST_SITE_NODES="$(seq -s, -f 'site%g' 1 "$NODES")" \
  LAZYSLURM_TEST_SITE_MAX_SUBMIT="$MAX_SUBMIT" LAZYSLURM_TEST_SITE_MAX_JOBS="$MAX_RUNNING" \
  LAZYSLURM_TEST_SITE_JOB_REQUEUE="$JOB_REQUEUE" > "$D/env.new"
install_if_changed "$D/env.new" "$D/env" || true
chmod 644 "$D/env"
echo "lazyslurm test site up in $(el)s: $NODES nodes (site1..site$NODES, $CPUS CPUs each), ctld=:$CTLD_PORT" \
     "dbd=:$DBD_PORT slurmd=:$NODE_PORT0-$LAST, SLURM_CONF=$CONF"

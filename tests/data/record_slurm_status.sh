#!/bin/bash
# Records the sacct/squeue output that tests/test_backends_slurm_status.py parses.
# Usage: source /tmp/lazyslurm-test-cluster/env.sh
#        SLURM_CONF=$LAZYSLURM_TEST_SLURM_CONF bash record_slurm_status.sh acct OUTDIR
#        SLURM_CONF=$LAZYSLURM_TEST_SLURM_CONF_NOACCT bash record_slurm_status.sh noacct OUTDIR
# Each scenario writes OUTDIR/<cluster>_<scenario>.txt (status rows) and .ids (job ids).
set -eu
kind=$1 out=$2
work=$(mktemp -d)
mkdir -p "$out"
status() {  # the backend's own status command, on the ids given
  if [ "$kind" = acct ]; then sacct -X -n -P -j "$1" -o JobID,State,ExitCode
  else squeue -h -t all -j "$1" -o '%i|%T|%r'; fi
}
sub() { sbatch --parsable -o "$work/%A_%a.out" -e "$work/%A_%a.err" "$@"; }
settle() { sleep "${1:-8}"; }  # sacct records array elements on a 5 s background thread
save() { status "$2" > "$out/${kind}_$1.txt"; echo "$2" > "$out/${kind}_$1.ids"; }

# 1. held, then released: PENDING rows before anything ran
held=$(sub --hold --array=0-3%2 --wrap 'sleep 4')
sleep 1; save held "$held"
scontrol release "$held"
sleep 2; save throttled_running "$held"          # 2 running, the rest pending (throttle 2)
# 2. an array whose elements 1 and 3 exit 3
mixed=$(sub --array=0-3 --wrap 'if [ $((SLURM_ARRAY_TASK_ID % 2)) = 1 ]; then exit 3; fi')
# 3. a dependent of a failure, with and without --kill-on-invalid-dep
fail=$(sub --array=0-1 --wrap 'exit 3')
kill=$(sub --array=0-2 --kill-on-invalid-dep=yes --dependency=afterok:$fail --wrap true)
nokill=$(sub --array=0-2 --kill-on-invalid-dep=no --dependency=afterok:$fail --wrap true)
# 4. element-wise: element 1 of up fails, element 1 of down is cancelled, the rest run
up=$(sub --array=0-2 --wrap '[ "$SLURM_ARRAY_TASK_ID" != 1 ]')
down=$(sub --array=0-2 --kill-on-invalid-dep=yes --dependency=aftercorr:$up --wrap true)
# 5. scancel: one running (throttle 1), the rest pending
cancel=$(sub --array=0-2%1 --wrap 'sleep 60')
single=$(sub --wrap true)   # a plain job, not an array
settle 3
scancel "$cancel"
settle 10
save completed "$held"
save mixed "$mixed"
save dependency_killed "$fail,$kill"
save dependency_never_satisfied "$fail,$nokill"
save aftercorr "$up,$down"
save scancelled "$cancel"
save single "$single"
save run "$held,$mixed,$fail,$kill,$nokill,$up,$down,$cancel,$single"
scancel "$nokill"
scontrol show config | grep -E '^(MaxArraySize|AccountingStorageType) ' > "$out/${kind}_config.txt"
scontrol show partition -o | sed 's/^/LZ-PART /' > "$out/${kind}_partitions.txt"
rm -rf "$work"

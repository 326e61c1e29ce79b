#!/bin/bash
# lazyslurm run 20261124-120000-abcdef: submit the array jobs held, then release them
set -u
run_dir=/home/u/.lazyslurm/runs/20261124-120000-abcdef
ids=()
lz_sb=0 lz_sc=0 lz_cc=0
trap 'echo "LZ-CALLS sbatch $lz_sb scontrol $lz_sc scancel $lz_cc"; echo "sbatch $lz_sb scontrol $lz_sc scancel $lz_cc" >> "$run_dir/calls"' EXIT
fail() {
  printf '%s %s\n' LAZYSLURM-SUBMIT-FAILED "$*" >&2
  cat "$run_dir/submit.err" >&2
  if [ ${#ids[@]} -gt 0 ]; then lz_cc=1; scancel "${ids[@]}" >&2; fi
  exit 3
}
lz_sb=$((lz_sb + 1))
out=$(sbatch --parsable --hold --job-name=lz-20261124-120000-abcdef-aj0-stage1_preprocess --array=0-2 --output=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj0_%a.out --error=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj0_%a.err --kill-on-invalid-dep=yes --time=3 --mem=256M --cpus-per-task=1 -- "$run_dir/jobs/aj0.sh" 2>"$run_dir/submit.err") || fail aj0
aj0=${out%%;*}; ids+=("$aj0")
lz_sb=$((lz_sb + 1))
out=$(sbatch --parsable --hold --job-name=lz-20261124-120000-abcdef-aj1-split_dataset --array=0-0 --output=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj1_%a.out --error=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj1_%a.err --kill-on-invalid-dep=yes --time=3 --mem=256M -- "$run_dir/jobs/aj1.sh" 2>"$run_dir/submit.err") || fail aj1
aj1=${out%%;*}; ids+=("$aj1")
lz_sb=$((lz_sb + 1))
out=$(sbatch --parsable --hold --job-name=lz-20261124-120000-abcdef-aj2-stage2_transform --array=0-2 --output=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj2_%a.out --error=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj2_%a.err --kill-on-invalid-dep=yes --time=3 --mem=256M --cpus-per-task=1 "--dependency=aftercorr:${aj0}" -- "$run_dir/jobs/aj2.sh" 2>"$run_dir/submit.err") || fail aj2
aj2=${out%%;*}; ids+=("$aj2")
lz_sb=$((lz_sb + 1))
out=$(sbatch --parsable --hold --job-name=lz-20261124-120000-abcdef-aj3-process_chunk --array=0-4 --output=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj3_%a.out --error=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj3_%a.err --kill-on-invalid-dep=yes --time=3 --mem=256M --cpus-per-task=1 "--dependency=afterok:${aj1}" -- "$run_dir/jobs/aj3.sh" 2>"$run_dir/submit.err") || fail aj3
aj3=${out%%;*}; ids+=("$aj3")
lz_sb=$((lz_sb + 1))
out=$(sbatch --parsable --hold --job-name=lz-20261124-120000-abcdef-aj4-stage3_finalize --array=0-2 --output=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj4_%a.out --error=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj4_%a.err --kill-on-invalid-dep=yes --time=3 --mem=256M --cpus-per-task=1 "--dependency=aftercorr:${aj2}" -- "$run_dir/jobs/aj4.sh" 2>"$run_dir/submit.err") || fail aj4
aj4=${out%%;*}; ids+=("$aj4")
lz_sb=$((lz_sb + 1))
out=$(sbatch --parsable --job-name=lz-20261124-120000-abcdef-aj5-merge_results --array=0-0 --output=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj5_%a.out --error=/home/u/.lazyslurm/runs/20261124-120000-abcdef/logs/aj5_%a.err --kill-on-invalid-dep=yes --time=3 --mem=256M "--dependency=afterok:${aj3}" -- "$run_dir/jobs/aj5.sh" 2>"$run_dir/submit.err") || fail aj5
aj5=${out%%;*}; ids+=("$aj5")
printf '%s\n' "aj0=${aj0} aj1=${aj1} aj2=${aj2} aj3=${aj3} aj4=${aj4} aj5=${aj5}" > "$run_dir/jobids"
lz_sc=1; scontrol release "${ids[@]:0:5}" 2>"$run_dir/submit.err" || fail release aj0=${aj0} aj1=${aj1} aj2=${aj2} aj3=${aj3} aj4=${aj4} aj5=${aj5}
echo "LAZYSLURM-IDS aj0=${aj0} aj1=${aj1} aj2=${aj2} aj3=${aj3} aj4=${aj4} aj5=${aj5}"

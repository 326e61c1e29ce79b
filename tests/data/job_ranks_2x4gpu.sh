#!/bin/bash
# lazyslurm run 20261124-120000-abcdef, array job aj0 (train x1, 8 ranks)
module load cuda/12.2
source /opt/venv/bin/activate
srun --kill-on-bad-exit=1 --cpus-per-task=8 /opt/venv/bin/python -P -m lazyslurm.runner --rank /home/u/.lazyslurm/runs/20261124-120000-abcdef aj0
exec /opt/venv/bin/python -P -m lazyslurm.runner --gather /home/u/.lazyslurm/runs/20261124-120000-abcdef aj0 8

#!/bin/bash
# lazyslurm run 20261124-120000-abcdef, array job aj0 (stage1_preprocess x3)
module load python/3.11
source /opt/venv/bin/activate
exec /opt/venv/bin/python -P -m lazyslurm.runner /home/u/.lazyslurm/runs/20261124-120000-abcdef aj0

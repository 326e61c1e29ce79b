#!/bin/bash
# lazyslurm run 20261124-120000-abcdef, array job aj0 (stage1_preprocess x3)
exec apptainer exec --bind=/home/u/.lazyslurm:/home/u/.lazyslurm --pwd=/home/u/.lazyslurm --no-https docker://registry:5000/patterns@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef python3 -P -m lazyslurm.runner /home/u/.lazyslurm/runs/20261124-120000-abcdef aj0

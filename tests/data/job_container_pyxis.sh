#!/bin/bash
# lazyslurm run 20261124-120000-abcdef, array job aj0 (stage1_preprocess x3)
export ENROOT_ALLOW_HTTP=yes
exec srun --ntasks=1 '--container-image=registry:5000#patterns:sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef' --container-mounts=/home/u/.lazyslurm:/home/u/.lazyslurm --container-workdir=/home/u/.lazyslurm python3 -P -m lazyslurm.runner /home/u/.lazyslurm/runs/20261124-120000-abcdef aj0

#!/bin/bash
# lazyslurm run 20261124-120000-abcdef, array job aj0 (stage1_preprocess x3)
exec podman run --rm --network=host --tls-verify=false '--env=SLURM_*' --volume=/home/u/.lazyslurm:/home/u/.lazyslurm --workdir=/home/u/.lazyslurm registry:5000/patterns@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef python3 -P -m lazyslurm.runner /home/u/.lazyslurm/runs/20261124-120000-abcdef aj0

#!/usr/bin/env bash
# One rfx executor manager for this node, started by srun (one task per node;
# see rfx-job.sbatch): registers the node's address and its allocated CPUs
# (SLURM_CPUS_ON_NODE) with the lease manager; GPUs as Slurm made them
# visible (CUDA_VISIBLE_DEVICES is honoured by `--gpu auto`).
#
#   srun -N NODES --ntasks-per-node=1 scripts/slurm/executor-manager.sh LEASE_MANAGER_ADDR
set -euo pipefail
lm=${1:?usage: $0 LEASE_MANAGER_ADDR}
RFX=${RFX:-target/release/rfx}
ip=$(hostname -I 2>/dev/null | awk '{print $1}')
# On a single node everything stays on loopback.
[ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ] && [ -n "$ip" ] || ip=127.0.0.1
exec "$RFX" executor-manager --lease-manager "$lm" --listen "$ip:${RFX_EM_PORT:-7700}" \
    --cores "${SLURM_CPUS_ON_NODE:-$(nproc)}" --gpu auto

#!/usr/bin/env bash
# launch/gpu-bind.sh: runs a command with exactly one GPU visible: one MPI rank per GPU. The rank's
# index on its node (SLURM_LOCALID under srun, OMPI_COMM_WORLD_LOCAL_RANK under Open MPI's mpirun)
# picks an entry of the node's GPU list (CUDA_VISIBLE_DEVICES if the scheduler set one, else every GPU
# nvidia-smi lists), modulo its length, so more ranks than GPUs share them round-robin (the one-GPU debug
# mode). Under mpirun -np L learner : -np R rollout the node-local index counts both apps, so learners
# take GPUs 0..L-1 and rollouts the next R. Without GPUs the command runs unchanged (CPU backend).
# Usage: launch/gpu-bind.sh COMMAND [ARGS...]
set -euo pipefail
local_rank=${SLURM_LOCALID:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-0}}}
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null 2>&1; then
  mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
else
  gpus=()
fi
if [ ${#gpus[@]} -gt 0 ]; then
  export CUDA_VISIBLE_DEVICES=${gpus[$((local_rank % ${#gpus[@]}))]}
fi
exec "$@"

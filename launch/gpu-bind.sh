#!/usr/bin/env bash
# launch/gpu-bind.sh: runs a command with exactly one GPU visible: one MPI rank per GPU. The rank's
# index on its node (SLURM_LOCALID under srun, OMPI_COMM_WORLD_LOCAL_RANK under Open MPI's mpirun)
# picks an entry of the node's GPU list (CUDA_VISIBLE_DEVICES if the scheduler set one, else every GPU
# nvidia-smi lists), modulo its length, so more ranks than GPUs share them round-robin (the one-GPU debug
# mode). Under mpirun -np L learner : -np R rollout the node-local index counts both apps, so learners
# take GPUs 0..L-1 and rollouts the next R. Without GPUs the command runs unchanged (CPU backend).
# --pairs N (train.placement=colocated, N learner + N rollout ranks on the node, learners first): the
# index is taken modulo N, so rollout k gets learner k's GPU; fewer than N GPUs is an error.
# Usage: launch/gpu-bind.sh [--pairs N] COMMAND [ARGS...]
set -euo pipefail
pairs=0
if [ "${1:-}" = --pairs ]; then
  [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "gpu-bind.sh: --pairs needs a count, got \"${2:-}\"" >&2; exit 2; }
  pairs=$2
  shift 2
fi
local_rank=${SLURM_LOCALID:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-0}}}
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null 2>&1; then
  mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
else
  gpus=()
fi
if [ "$pairs" -gt 0 ]; then
  if [ ${#gpus[@]} -lt "$pairs" ]; then
    echo "gpu-bind.sh: train.placement=colocated: $pairs learner/rollout pairs on this node need $pairs GPUs," \
         "${#gpus[@]} visible" >&2
    exit 1
  fi
  local_rank=$((local_rank % pairs))
fi
if [ ${#gpus[@]} -gt 0 ]; then
  export CUDA_VISIBLE_DEVICES=${gpus[$((local_rank % ${#gpus[@]}))]}
fi
exec "$@"

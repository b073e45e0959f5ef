#!/usr/bin/env bash
# launch/debug.sh: one command for a single-node run. Starts the reward service on a free local port,
# waits until it answers, runs the MPI job (L learner ranks, then R rollout ranks, MPMD) with the same
# config on every rank, and tears everything down when the job ends, fails, or on Ctrl-C. SIGTERM (what
# SLURM sends before a kill) is passed to the ranks: the learners finish their step, checkpoint and stop
# with the rollouts (exit 0), then the reward service drains and stops. train.mode=sft runs learners
# only (no reward service, no rollout ranks). The exit code is the job's.
#
# Usage: launch/debug.sh CONFIG [--set section.key=value]... [--resume] [--learners L] [--rollouts R]
# Paths inside the config are relative to the current directory. Binaries come from $AQA_BUILD (default
# build/ of this checkout). On a GPU machine each rank sees one GPU (launch/gpu-bind.sh): learners first,
# then rollouts; with train.placement=colocated (L learners and L rollouts, --rollouts defaults to L)
# rollout k sees learner k's GPU, and fewer GPUs than pairs is refused. GPU learners (model.backend=cuda)
# talk NCCL, with NVLink multicast off (NCCL_NVLS_ENABLE=0 unless set).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${AQA_BUILD:-$root/build}

usage() {
  sed -n '9,10p' "$0" | sed 's/^# //'
}

if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
  usage >&2
  exit 2
fi
config=$1
shift
sets=()
learners=1
rollouts=
while [ $# -gt 0 ]; do
  case $1 in
    --set) [ $# -ge 2 ] || { echo "debug.sh: --set needs a value" >&2; exit 2; }
           sets+=(--set "$2"); shift 2 ;;
    --set=*) sets+=(--set "${1#--set=}"); shift ;;
    --resume) sets+=(--set train.resume=true); shift ;;
    --learners|--rollouts)
      [ $# -ge 2 ] || { echo "debug.sh: $1 needs a count" >&2; exit 2; }
      if [ "$1" = --learners ]; then learners=$2; else rollouts=$2; fi
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "debug.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
for n in "$learners" ${rollouts:+"$rollouts"}; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "debug.sh: --learners/--rollouts need a count, got \"$n\"" >&2; exit 2; }
done
[ "$learners" -ge 1 ] || { echo "debug.sh: need at least one learner" >&2; exit 2; }

need() {
  for exe in "$@"; do
    [ -x "$build/$exe" ] || { echo "debug.sh: $build/$exe missing: build first (launch/setup.sh)" >&2; exit 2; }
  done
}
need common/tools/config_check
# The effective config (also validates CONFIG and every --set before anything starts).
effective=$("$build/common/tools/config_check" --config "$config" "${sets[@]}")
mode=$(sed -n 's/^ *"mode": "\([a-z_]*\)".*/\1/p' <<<"$effective")
run_dir=$(sed -n 's/^ *"run_dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$effective")
placement=$(sed -n 's/^ *"placement": "\([a-z]*\)".*/\1/p' <<<"$effective")
backend=$(sed -n 's/^ *"backend": "\([a-z]*\)".*/\1/p' <<<"$effective" | head -n 1)  # model.backend
[ -n "$mode" ] || { echo "debug.sh: could not read train.mode from the effective config" >&2; exit 2; }
# colocated pairs every rollout with a learner: as many of each unless told otherwise; on GPUs rollout k
# sees learner k's GPU
bind=("$root/launch/gpu-bind.sh")
if [ "$placement" = colocated ]; then
  rollouts=${rollouts:-$learners}
  [ "$backend" != cuda ] || bind+=(--pairs "$learners")
fi
rollouts=${rollouts:-1}
# The job's shape (questions split over the learners, colocated pairs), refused before anything starts.
if [ "$mode" != sft ]; then
  "$build/common/tools/config_check" --config "$config" "${sets[@]}" --learners "$learners" \
    --rollouts "$rollouts" >/dev/null
fi
need learner/learner
[ "$mode" = sft ] || need reward/reward-server rollout/rollout

# Open MPI: allow root (containers), oversubscription (fewer cores than ranks), and no CMA single-copy
# (ptrace is forbidden in containers); an explicit setting in the environment wins.
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
# Open MPI binds each rank to one core when it starts two or fewer ranks (Cpus_allowed_list 0 and 1
# for a learner and a rollout): a learner's host AdamW (optim.offload=host) and the CPU backend's OpenMP
# loops then run on one core; the 7B optimizer step took 22.7 s on an H100 machine whose 16 cores do it
# in about 1.6 s (bench_host_adamw). The ranks share the node's cores instead.
mpi_bind=(--bind-to none)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aqa-debug.XXXXXX")
server_pid=""
job_pid=""
teardown() {
  trap - EXIT INT TERM
  # mpirun forwards SIGTERM to every rank; the reward service drains and exits on SIGTERM.
  for pid in $job_pid $server_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $job_pid $server_pid; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
on_signal() {
  echo "debug.sh: interrupted, stopping the job" >&2
  teardown
  exit 130
}
# SIGTERM to mpirun would kill the ranks at once: the ranks (mpirun's children) get it themselves.
stopping=""
on_term() {
  [ -n "$job_pid" ] || on_signal
  echo "debug.sh: SIGTERM: the learners checkpoint after their current step and stop" >&2
  stopping=1
  pkill -TERM -P "$job_pid" || true
}
trap teardown EXIT
trap on_signal INT
trap on_term TERM

learner_cmd=("${bind[@]}" "$build/learner/learner" --config "$config" "${sets[@]}")
if [ "$mode" = "sft" ]; then
  echo "debug.sh: SFT: $learners learner(s), no rollout ranks, run dir $run_dir"
  mpirun "${mpi_bind[@]}" -np "$learners" "${learner_cmd[@]}" &
  job_pid=$!
else
  [ "$rollouts" -ge 1 ] || { echo "debug.sh: GRPO needs at least one rollout rank" >&2; exit 2; }
  "$build/reward/reward-server" --listen 127.0.0.1:0 --port-file "$tmp/port" &
  server_pid=$!
  for _ in $(seq 300); do
    [ -s "$tmp/port" ] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "debug.sh: reward-server exited before listening" >&2; exit 1; }
    sleep 0.1
  done
  [ -s "$tmp/port" ] || { echo "debug.sh: reward-server did not listen within 30 s" >&2; exit 1; }
  port=$(cat "$tmp/port")
  "$root/launch/reward-wait.sh" "127.0.0.1:$port" 30 || exit 1
  reward=(--set "reward.server=127.0.0.1:$port")
  echo "debug.sh: GRPO: $learners learner(s) + $rollouts rollout(s), reward-server on 127.0.0.1:$port," \
       "run dir $run_dir"
  mpirun "${mpi_bind[@]}" -np "$learners" "${learner_cmd[@]}" "${reward[@]}" \
       : -np "$rollouts" "${bind[@]}" "$build/rollout/rollout" --config "$config" \
         "${sets[@]}" "${reward[@]}" &
  job_pid=$!
fi

# A trapped SIGTERM interrupts `wait`: wait again until the job has ended.
rc=0
wait "$job_pid" || rc=$?
while kill -0 "$job_pid" 2>/dev/null; do
  rc=0
  wait "$job_pid" || rc=$?
done
job_pid=""
[ -z "$stopping" ] || echo "debug.sh: stopped on SIGTERM (exit $rc)" >&2
if [ "$rc" -ne 0 ]; then
  echo "debug.sh: the job failed (exit $rc)" >&2
fi
exit "$rc"

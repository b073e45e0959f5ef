#!/usr/bin/env bash
# launch/r1-aqa.sh: the R1-AQA recipe (configs/r1-aqa-7b.json: GRPO, G 8, 16 questions a step, 1000 steps)
# as one command on one node with whatever GPUs it has: checks the MMAU audio, places learner and rollout
# ranks on the GPUs (place() below, from their count and memory), trains through launch/debug.sh, then
# evaluates every checkpoint (one each --eval-every steps, 100 as the reference's test_mmau.sh) on MMAU
# with aqa-eval --sweep, and ends with the results table, the accuracy-by-step plot and the training
# dashboard (aqa-plot). While training it prints the reward and accuracy sparklines every minute.
# Rerunning the same command resumes: training from its newest checkpoint, the sweep where it stopped.
#
# Usage: launch/r1-aqa.sh MODEL_DIR TRAIN.jsonl MMAU.json AUDIO_DIR [--run-dir DIR] [--steps N]
#            [--eval-every N] [--gpus N] [--gpu-gib X] [--config FILE] [--set section.key=value]... [--dry-run]
# MODEL_DIR: Qwen2-Audio-7B-Instruct (Hugging Face layout); TRAIN.jsonl: R1-AQA lines (aqa-prep avqa);
# MMAU.json + AUDIO_DIR: MMAU test-mini and the folder its audio_id paths are relative to. Without GPUs
# (or a build without CUDA) everything runs on the CPU (tests/launch/test_r1_aqa.sh, tiny model).
# --dry-run prints the placement and the checked settings, and stops.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${AQA_BUILD:-$root/build}
tools=$build/common/tools

usage() { sed -n '10,11p' "$0" | sed 's/^# //'; }

[ $# -ge 4 ] || { usage >&2; exit 2; }
model=$1 train=$2 mmau=$3 audio=$4
shift 4
run_dir=runs/r1-aqa config=$root/configs/r1-aqa-7b.json steps="" eval_every=100 gpus="" gpu_gib="" sets=()
dry_run=0
while [ $# -gt 0 ]; do
  if [ "$1" = --dry-run ]; then dry_run=1; shift; continue; fi
  [ $# -ge 2 ] || { echo "r1-aqa.sh: $1 needs a value" >&2; usage >&2; exit 2; }
  case $1 in
    --run-dir) run_dir=$2 ;;
    --steps) steps=$2 ;;
    --eval-every) eval_every=$2 ;;
    --gpus) gpus=$2 ;;
    --gpu-gib) gpu_gib=$2 ;;
    --config) config=$2 ;;
    --set) sets+=(--set "$2") ;;
    *) echo "r1-aqa.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift 2
done
for n in "$eval_every" ${steps:+"$steps"} ${gpus:+"$gpus"}; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "r1-aqa.sh: expected a count, got \"$n\"" >&2; exit 2; }
done
[ "$eval_every" -ge 1 ] || { echo "r1-aqa.sh: --eval-every must be at least 1" >&2; exit 2; }
for f in "$model/config.json" "$train" "$mmau"; do
  [ -f "$f" ] || { echo "r1-aqa.sh: $f: no such file" >&2; exit 2; }
done
[ -d "$audio" ] || { echo "r1-aqa.sh: $audio: no such folder" >&2; exit 2; }
for exe in common/tools/config_check common/tools/aqa-eval common/tools/aqa-plot learner/learner; do
  [ -x "$build/$exe" ] || { echo "r1-aqa.sh: $build/$exe missing: build first (launch/setup.sh)" >&2; exit 2; }
done

# The GPUs: count and memory of the smallest (GiB), 0 without GPUs or without a CUDA build.
if [ -z "$gpus" ]; then
  gpus=0
  if command -v nvidia-smi >/dev/null 2>&1 && grep -q "AQA_CUDA" "$build/build.ninja" 2>/dev/null; then
    gpus=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | grep -c . || true)
  fi
fi
if [ -z "$gpu_gib" ] && [ "$gpus" -gt 0 ]; then
  gpu_gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | sort -n | head -1 |
            awk '{printf "%.1f", $1 / 1024}')
fi

# The model's bf16 weights in GiB, from its safetensors (f32 files count half).
weights_gib() {
  local bytes per
  bytes=$(stat -c %s "$model"/*.safetensors | awk '{ s += $1 } END { print s + 0 }')
  per=2
  grep -q '"torch_dtype": *"float32"\|"dtype": *"float32"' "$model/config.json" && per=4
  awk -v b="$bytes" -v p="$per" 'BEGIN { printf "%.2f", b / p * 2 / 2^30 }'
}

# place GPUS GPU_GIB WEIGHTS_GIB -> "MODE LEARNERS ROLLOUTS OFFLOAD". The one place that decides where
# ranks go.
# Per GPU (docs/memory-plan.md, aqa-memplan): a learner holds the bf16 weights and gradient (2 W) plus
# its ZeRO-1 share of fp32 master weights, AdamW moments and reduced gradient (8 W / L), ~2.5 GiB of
# NCCL/CUDA reserves and ~8 GiB of activations; a rollout holds the policy and the reference (2 W) and
# ~8 GiB of KV cache and activations. L is a divisor of the recipe's 16 questions a step (so each
# micro-batch is one question's group, as the reference), the smallest that fits: the other GPUs
# generate, which is where GRPO spends its time.
#   cpu:       no GPU: 1 learner + 1 rollout on the CPU.
#   split:     L learner GPUs + (GPUS - L) rollout GPUs, weights to the rollouts over NCCL (2+ GPUs).
#   colocated: learner k and rollout k on GPU k (train.placement=colocated), the rollout reading the
#              learner's weights in place, so it holds only the reference (W); taken on 1 GPU, or when
#              split does not fit. Its learners are all GPUS (L = GPUS); when their ZeRO-1 share does
#              not fit beside the rollout, the optimizer state goes to pinned host memory
#              (optim.offload=host: 12 bytes a parameter of host memory over the node's learners).
place() {
  local gpus=$1 gib=$2 w=$3 l
  if [ "$gpus" -eq 0 ]; then echo "cpu 1 1 none"; return; fi
  fits() { awk -v g="$gib" -v need="$1" 'BEGIN { exit !(need <= g) }'; }
  learner_gib() { awk -v w="$w" -v l="$1" 'BEGIN { print 2 * w + 8 * w / l + 10.5 }'; }
  rollout_gib=$(awk -v w="$w" 'BEGIN { print 2 * w + 8 }')
  for l in 1 2 4 8 16; do
    [ "$l" -lt "$gpus" ] || break
    if fits "$(learner_gib "$l")" && fits "$rollout_gib"; then echo "split $l $((gpus - l)) none"; return; fi
  done
  local pair offloaded
  pair=$(awk -v a="$(learner_gib "$gpus")" -v w="$w" 'BEGIN { print a + w + 8 }')
  offloaded=$(awk -v w="$w" 'BEGIN { print 2 * w + 10.5 + w + 8 }')
  if fits "$pair"; then echo "colocated $gpus $gpus none"
  elif fits "$offloaded"; then echo "colocated $gpus $gpus host"
  else echo "none 0 0 none"; fi
}

w=$(weights_gib)
read -r mode learners rollouts offload <<<"$(place "$gpus" "${gpu_gib:-0}" "$w")"
if [ "$mode" = none ]; then
  echo "r1-aqa.sh: $gpus GPU(s) of $gpu_gib GiB cannot hold a learner and a rollout of this model" \
       "($w GiB of bf16 weights), apart or colocated with the optimizer on the host" >&2
  exit 2
fi
backend=cuda dtype=bf16
[ "$mode" != cpu ] || backend=cpu dtype=fp32  # the CPU backend is fp32 only
user_sets=("${sets[@]}")
sets=(--set "model.path=$model" --set "data.train=$train" --set "train.run_dir=$run_dir"
      --set "model.backend=$backend" --set "rollout.backend=$backend" --set "model.dtype=$dtype"
      --set "train.save_every=$eval_every" --set train.keep_last=0 ${steps:+--set "train.max_steps=$steps"})
offload_note=""
[ "$mode" != colocated ] || sets+=(--set train.placement=colocated --set "optim.offload=$offload")
[ "$offload" != host ] || offload_note=", optimizer state on the host (optim.offload=host)"
# One question's group per micro-batch on every learner, as the reference (8 GPUs x 1 question x 2);
# a --set of train.grad_accum still wins (it comes last). Validates the config and every --set.
effective=$("$tools/config_check" --config "$config" "${sets[@]}" "${user_sets[@]}")
qps=$(sed -n 's/^ *"questions_per_step": \([0-9]*\).*/\1/p' <<<"$effective")
if [ -z "$qps" ] || [ $((qps % learners)) -ne 0 ]; then
  echo "r1-aqa.sh: train.questions_per_step ${qps:-?} does not split over $learners learner(s)" >&2
  exit 2
fi
sets+=(--set "train.grad_accum=$((qps / learners))" "${user_sets[@]}")
"$tools/config_check" --config "$config" "${sets[@]}" >/dev/null
echo "r1-aqa.sh: $gpus GPU(s)${gpu_gib:+ of $gpu_gib GiB}, model $w GiB: $mode placement," \
     "$learners learner(s) + $rollouts rollout(s), $backend backend, $qps questions a step$offload_note"

if [ "$dry_run" = 1 ]; then
  printf '%q ' "$root/launch/debug.sh" "$config" "${sets[@]}" --learners "$learners" --rollouts "$rollouts"
  echo
  exit 0
fi

# MMAU first: a missing audio file would be scored wrong at every checkpoint.
if [ -x "$build/prep/aqa-prep" ]; then
  "$build/prep/aqa-prep" mmau --json "$mmau" --audio "$audio" ||
    { echo "r1-aqa.sh: MMAU check failed (above); fix the audio folder first" >&2; exit 2; }
else
  echo "r1-aqa.sh: aqa-prep not built (no FFmpeg libraries): MMAU audio not checked beforehand"
fi

resume=()
ls -d "$run_dir"/checkpoints/step-*/ >/dev/null 2>&1 && resume=(--resume)
mkdir -p "$run_dir"
progress_pid=""
stop_progress() { [ -z "$progress_pid" ] || kill "$progress_pid" 2>/dev/null || true; }
trap stop_progress EXIT
( while sleep 60 </dev/null >/dev/null 2>&1; do "$tools/aqa-plot" --spark "$run_dir" 2>/dev/null || true; done ) &
progress_pid=$!
"$root/launch/debug.sh" "$config" "${sets[@]}" "${resume[@]}" --learners "$learners" --rollouts "$rollouts"
stop_progress

# Every checkpoint on MMAU (those already evaluated keep their result), then the table and the plots.
"$tools/aqa-eval" --config "$config" "${sets[@]}" --sweep "$run_dir" --data "$mmau" --audio-dir "$audio" \
  --backend "$backend"
"$tools/aqa-plot" "$run_dir"
"$tools/aqa-plot" --spark "$run_dir"
echo "r1-aqa.sh: done: $run_dir (eval-mmau-sweep.png, dashboard.png, checkpoints/step-*/eval-mmau.json)"

#!/usr/bin/env bash
# tests/launch/test_scripts.sh BUILD_DIR: the launch scripts parse (bash -n; the SLURM scripts run in
# test_slurm.sh), the shipped run configs load with config_check and hold the recipe's values, debug.sh rejects
# bad use before starting anything, and gpu-bind.sh maps local ranks to GPUs.
set -uo pipefail
build=$1
src=${AQA_SRC:?}
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }
expect() { if [ "$2" = "$3" ]; then ok; else bad "$1: got \"$2\", want \"$3\""; fi; }

for f in launch/setup.sh launch/debug.sh launch/gpu-bind.sh launch/main.sh launch/r1-aqa.sh launch/reward-wait.sh \
         launch/slurm/r1-aqa.sbatch launch/slurm/single-node.sbatch tests/launch/slurm-install.sh; do
  if [ -f "$src/$f" ] && bash -n "$src/$f"; then ok; else bad "$f does not parse"; fi
  if [ -x "$src/$f" ]; then ok; else bad "$f is not executable"; fi
done

# value SECTION KEY < effective config JSON (config_check's layout: two-space sections, four-space keys)
value() {
  awk -v s="$1" -v k="$2" '
    /^  "[a-z_]+": \{/ { split($0, a, "\""); sec = a[2] }
    sec == s && $0 ~ "^    \"" k "\": " { sub("^    \"" k "\": ", ""); sub(",$", ""); gsub("\"", ""); print }'
}
check_config() {  # FILE then SECTION.KEY=VALUE ...
  local file=$1 json
  shift
  if ! json=$("$build/common/tools/config_check" --config "$src/$file"); then
    bad "config_check rejects $file"
    return
  fi
  ok
  for kv in "$@"; do
    local key=${kv%%=*}
    expect "$file $key" "$(value "${key%%.*}" "${key#*.}" <<<"$json")" "${kv#*=}"
  done
}
# The paper's hyperparameters (shared/spec/r1-aqa-recipe.md).
check_config configs/r1-aqa-7b.json rollout.num_generations=8 rollout.temperature=1.0 rollout.top_k=50 \
  rollout.top_p=1.0 rollout.repetition_penalty=1.0 rollout.max_new_tokens=256 grpo.beta=0.04 \
  grpo.loss_type=grpo grpo.scale_rewards=group grpo.num_iterations=1 optim.lr=1e-06 optim.schedule=linear \
  optim.warmup_steps=0 optim.grad_clip=1.0 optim.weight_decay=0.0 train.questions_per_step=16 \
  train.grad_accum=2 train.max_steps=1000 train.save_every=100 train.seed=42 model.dtype=bf16 \
  model.backend=cuda rollout.backend=cuda data.prompt_mode=answer data.mono=first
check_config configs/debug-tiny.json model.backend=cpu model.dtype=fp32 rollout.num_generations=4 \
  train.questions_per_step=4 train.grad_accum=1
# The paper's job shapes split the step evenly (the learners' own check, config_check_world); a shape
# that does not is refused, naming the keys.
for n in 8 4 1; do
  if "$build/common/tools/config_check" --config "$src/configs/r1-aqa-7b.json" --learners $n >/dev/null; then ok
  else bad "r1-aqa-7b.json refused for $n learners"; fi
done
out=$("$build/common/tools/config_check" --config "$src/configs/r1-aqa-7b.json" --learners 3 2>&1 >/dev/null)
expect "r1-aqa-7b.json on 3 learners" "$out" \
  "config_check: train.questions_per_step (16) must be a multiple of learners (3) x train.grad_accum (2)"

# debug.sh: bad use fails before anything starts, naming the problem.
run_debug() { AQA_BUILD=$build "$src/launch/debug.sh" "$@" 2>&1; }
expect_fail() {  # WANT ARGS...
  local want=$1 out rc
  shift
  out=$(run_debug "$@")
  rc=$?
  if [ "$rc" -ne 0 ] && grep -q -- "$want" <<<"$out"; then ok; else bad "debug.sh $* -> rc $rc: $out"; fi
}
expect_fail "Usage"
expect_fail "unknown argument --bogus" "$src/configs/debug-tiny.json" --bogus
expect_fail "need a count" "$src/configs/debug-tiny.json" --learners two
expect_fail "needs a value" "$src/configs/debug-tiny.json" --set
expect_fail "grpo.beta" "$src/configs/debug-tiny.json" --set grpo.beta=-1
expect_fail "no/such.json" /no/such.json
expect_fail "at least one learner" "$src/configs/debug-tiny.json" --learners 0
# colocated: unpaired ranks and asynchronous rollout are refused by config_check, before the reward service
expect_fail "2 learners but 1 rollouts" "$src/configs/debug-tiny.json" --set train.placement=colocated \
  --learners 2 --rollouts 1
expect_fail "colocated needs grpo.max_staleness=0" "$src/configs/debug-tiny.json" --set train.placement=colocated \
  --set grpo.max_staleness=1

# gpu-bind.sh: the local rank picks an entry of the node's GPU list, round-robin.
bind() {  # [--pairs N] VAR=VALUE...
  local pairs=()
  [ "$1" != --pairs ] || { pairs=(--pairs "$2"); shift 2; }
  env -u OMPI_COMM_WORLD_LOCAL_RANK "$@" "$src/launch/gpu-bind.sh" "${pairs[@]}" sh -c 'echo "${CUDA_VISIBLE_DEVICES-unset}"'
}
expect "SLURM_LOCALID 1 of 3,5" "$(bind SLURM_LOCALID=1 CUDA_VISIBLE_DEVICES=3,5)" 5
expect "SLURM_LOCALID 2 of 3,5" "$(bind SLURM_LOCALID=2 CUDA_VISIBLE_DEVICES=3,5)" 3
expect "Open MPI local rank 3 of 0-7" \
  "$(env -u SLURM_LOCALID OMPI_COMM_WORLD_LOCAL_RANK=3 CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
     "$src/launch/gpu-bind.sh" sh -c 'echo $CUDA_VISIBLE_DEVICES')" 3
# --pairs N (colocated): learners 0..N-1 and rollouts N..2N-1 of the node, rollout k on learner k's GPU
expect "pairs 2: rollout 1 (local rank 3)" "$(bind --pairs 2 SLURM_LOCALID=3 CUDA_VISIBLE_DEVICES=4,6,7)" 6
expect "pairs 2: learner 1 (local rank 1)" "$(bind --pairs 2 SLURM_LOCALID=1 CUDA_VISIBLE_DEVICES=4,6,7)" 6
out=$(env SLURM_LOCALID=0 CUDA_VISIBLE_DEVICES=0 "$src/launch/gpu-bind.sh" --pairs 2 true 2>&1)
expect "pairs 2 on one GPU" "$? $out" \
  "1 gpu-bind.sh: train.placement=colocated: 2 learner/rollout pairs on this node need 2 GPUs, 1 visible"
if ! command -v nvidia-smi >/dev/null 2>&1; then
  expect "no GPU: unchanged" "$(env -u CUDA_VISIBLE_DEVICES "$src/launch/gpu-bind.sh" sh -c 'echo "${CUDA_VISIBLE_DEVICES-unset}"')" unset
fi

echo "$checks checks, $fails failed"
[ "$fails" -eq 0 ]

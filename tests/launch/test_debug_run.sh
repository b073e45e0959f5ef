#!/usr/bin/env bash
# tests/launch/test_debug_run.sh BUILD_DIR: launch/debug.sh end to end on CPU with a tiny model (configs/
# model-tiny.json + the built Qwen2-Audio tokenizer) and synthetic data: a 2-step SFT run (learners only),
# a 2-step GRPO run from its checkpoint (reward service + 1 learner + 1 rollout), the same colocated with
# 2 pairs, a job that fails (the exit code comes back, nothing is left running), one stopped by SIGINT
# (Ctrl-C: exit 130, torn down) and one by SIGTERM (checkpoint, clean stop of every process, exit 0).
set -uo pipefail
set -m  # background jobs get their own process group and default signal handling (SIGINT reaches them)
build=$(cd "$1" && pwd)
src=${AQA_SRC:?}
tmp=${AQA_TMP:?}/launch_debug
export AQA_BUILD=$build
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }
# A run is gone when no process names its run directory (unique to this test) and its port is closed.
gone() {  # RUN_DIR PORT
  for _ in $(seq 100); do
    pgrep -f "$1" >/dev/null || break
    sleep 0.1
  done
  if pgrep -f "$1" >/dev/null; then bad "processes of $1 still running"; else ok; fi
  if [ -n "$2" ] && (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then bad "reward-server still on $2"; else ok; fi
}
port_of() { sed -n 's/.*reward-server on 127.0.0.1:\([0-9]*\),.*/\1/p' "$1" | head -1; }

rm -rf "$tmp"
mkdir -p "$tmp"
cd "$tmp"
. "$src/tests/lib/tiny_assets.sh"
make_tiny_assets 24 0.25
common=(--set model.path=model --set data.train=synth/train.jsonl --set data.test=synth/test.jsonl
        --set train.questions_per_step=2 --set rollout.num_generations=2 --set rollout.max_new_tokens=6
        --set train.max_steps=2 --set train.save_every=2 --set log.hdf5=false)

# SFT: learners only.
"$src/launch/debug.sh" "$src/configs/debug-tiny.json" "${common[@]}" --set train.mode=sft \
  --set train.run_dir=sft --set optim.lr=1e-3 >sft.log 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q "no rollout ranks" sft.log; then ok; else bad "SFT run: rc $rc"; cat sft.log; fi
if [ "$(grep -c '"step"' sft/metrics.jsonl 2>/dev/null)" = 2 ]; then ok; else bad "SFT metrics rows"; fi
if [ -f sft/checkpoints/step-00000002/.complete ] && [ -f sft/config.json ]; then ok; else bad "SFT checkpoint"; fi
# The ranks keep every core (mpirun alone would bind each of 2 or fewer ranks to one): the learner's
# OpenMP loops and host AdamW use them all unless OMP_NUM_THREADS says otherwise.
want=${OMP_NUM_THREADS:-$(nproc)}
if grep -q "learner 0: $want CPU threads" sft.log; then ok; else bad "SFT learner threads: want $want"; grep "CPU threads" sft.log; fi

# GRPO from the SFT checkpoint: reward service + 1 learner + 1 rollout.
"$src/launch/debug.sh" "$src/configs/debug-tiny.json" "${common[@]}" \
  --set model.path=sft/checkpoints/step-00000002/model --set train.run_dir="$tmp/grpo" >grpo.log 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then ok; else bad "GRPO run: rc $rc"; cat grpo.log; fi
if grep -q "learner 0: $want CPU threads" grpo.log && grep -q "rollout 0: $want CPU threads" grpo.log; then ok
else bad "GRPO ranks' threads: want $want"; grep "CPU threads" grpo.log; fi
if [ "$(grep -c '"reward.total_mean"' grpo/metrics.jsonl 2>/dev/null)" = 2 ]; then ok; else bad "GRPO metrics rows"; fi
if [ -f grpo/checkpoints/step-00000002/.complete ]; then ok; else bad "GRPO checkpoint"; fi
gone "$tmp/grpo" "$(port_of grpo.log)"

# Colocated: 2 pairs (the rollout count follows the learners), each rollout reading its learner's
# weights in place.
"$src/launch/debug.sh" "$src/configs/debug-tiny.json" "${common[@]}" --set train.placement=colocated \
  --learners 2 --set model.path=sft/checkpoints/step-00000002/model --set train.run_dir="$tmp/coloc" >coloc.log 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q "2 learner(s) + 2 rollout(s)" coloc.log &&
   grep -q "learner 1: weights shared in place with rollout 1" coloc.log; then ok; else bad "colocated run: rc $rc"; cat coloc.log; fi
if [ "$(grep -c '"reward.total_mean"' coloc/metrics.jsonl 2>/dev/null)" = 2 ]; then ok; else bad "colocated metrics rows"; fi
gone "$tmp/coloc" "$(port_of coloc.log)"

# A failing job (no such training data): its exit code comes back and everything is torn down.
"$src/launch/debug.sh" "$src/configs/debug-tiny.json" "${common[@]}" --set data.train=synth/none.jsonl \
  --set train.run_dir="$tmp/fail" >fail.log 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q "none.jsonl" fail.log && grep -q "the job failed" fail.log; then ok
else bad "failing job: rc $rc"; cat fail.log; fi
gone "$tmp/fail" "$(port_of fail.log)"

# signal_run NAME SIGNAL FILE PATTERN: a long run in $tmp/NAME (log NAME.log) gets SIGNAL once FILE
# holds PATTERN (at most 4 minutes: a loaded machine); sets rc (its exit code) and n (the steps logged).
signal_run() {
  "$src/launch/debug.sh" "$src/configs/debug-tiny.json" "${common[@]}" --set train.max_steps=1000 \
    --set train.save_every=0 --set train.epochs=100 --set train.run_dir="$tmp/$1" >"$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 2400); do
    grep -q "$4" "$3" 2>/dev/null && break
    sleep 0.1
  done
  kill "-$2" "$pid"
  wait "$pid"
  rc=$?
  n=$(grep -c '"step"' "$1/metrics.jsonl")
}

# Ctrl-C while training: exit 130, job and reward service gone.
signal_run int INT int/metrics.jsonl '"step"'
if [ "$rc" -eq 130 ] && grep -q "interrupted" int.log; then ok; else bad "Ctrl-C: rc $rc"; cat int.log; fi
gone "$tmp/int" "$(port_of int.log)"

# SIGTERM once training has started (SLURM's warning): the learner finishes step 0 and checkpoints,
# every rank and then the reward service (drained) stop, exit 0.
signal_run term TERM term.log "grpo: 1 learners"
if [ "$rc" -eq 0 ] && grep -q "stopped after step $((n - 1)) of [0-9]*, checkpointed" term.log &&
   [ -f "term/checkpoints/$(printf 'step-%08d' "$n")/.complete" ] && grep -q "rollout 0: done" term.log &&
   grep -q "\[reward .*stopped: " term.log; then ok
else bad "SIGTERM: rc $rc, $n steps"; cat term.log; fi
gone "$tmp/term" "$(port_of term.log)"

echo "$checks checks, $fails failed"
[ "$fails" -eq 0 ] || exit 1
# A passing test leaves nothing behind (CI runs every test twice, in two builds on one disk); a failing one
# keeps its files to look at.
cd / && rm -rf "$tmp"

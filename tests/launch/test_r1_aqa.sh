#!/usr/bin/env bash
# tests/launch/test_r1_aqa.sh BUILD_DIR: launch/r1-aqa.sh end to end on CPU with the tiny model and
# synthetic data (2 GRPO steps, a checkpoint and its MMAU evaluation every 2nd step, the results table,
# the sweep plot and the dashboard), a rerun that resumes without evaluating again, the placement chosen
# for GPU machines (--dry-run, a fake 7B-sized bf16 checkpoint) and bad use.
set -uo pipefail
build=$(cd "$1" && pwd)
src=${AQA_SRC:?}
tmp=${AQA_TMP:?}/launch_r1_aqa
export AQA_BUILD=$build
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }
is_png() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e47 ]; }

rm -rf "$tmp"
mkdir -p "$tmp"
cd "$tmp"
. "$src/tests/lib/tiny_assets.sh"
make_tiny_assets 16 0.125
small=(--set train.questions_per_step=2 --set rollout.num_generations=2 --set rollout.max_new_tokens=4)
r1aqa=("$src/launch/r1-aqa.sh" model synth/train.jsonl synth/test-mmau.json synth --run-dir run --steps 2
       --eval-every 2 "${small[@]}")

"${r1aqa[@]}" >run.log 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q "cpu placement, 1 learner(s) + 1 rollout(s), cpu backend, 2 questions a step" run.log
then ok; else bad "r1-aqa.sh: rc $rc"; cat run.log; fi
if [ -f run/checkpoints/step-00000002/eval-mmau.json ] && [ ! -e run/checkpoints/step-00000001 ]; then ok
else bad "checkpoints: every 2nd step, evaluated"; ls run/checkpoints; fi
if grep -q "^ *2 .*[0-9]\.[0-9][0-9]$" run.log &&
   grep -q "audio: 2 ok, 0 missing, 0 undecodable" run.log && grep -q "^steps 0-1  reward" run.log; then ok
else bad "results table, MMAU check or sparkline missing"; cat run.log; fi
if is_png run/eval-mmau-sweep.png && is_png run/dashboard.png; then ok; else bad "plots"; fi

# The same command again: training resumes at its end, evaluated checkpoints keep their results.
"${r1aqa[@]}" >again.log 2>&1
rc=$?
if [ "$rc" -eq 0 ] && ! grep -q "^== step" again.log && grep -q "1 evaluated" again.log; then ok
else bad "rerun: rc $rc"; cat again.log; fi

# Placement on GPU machines: a checkpoint the size of Qwen2-Audio-7B in bf16 (15.64 GiB of weights).
mkdir -p big
sed 's/"float32"/"bfloat16"/' model/config.json >big/config.json
truncate -s 16794189824 big/model.safetensors
place() {  # GPUS GIB -> the placement line
  "$src/launch/r1-aqa.sh" big synth/train.jsonl synth/test-mmau.json synth --gpus "$1" --gpu-gib "$2" --dry-run 2>&1 | head -1
}
want8="8 GPU(s) of 79.6 GiB, model 15.64 GiB: split placement, 4 learner(s) + 4 rollout(s), cuda backend, 16 questions a step"
if [[ "$(place 8 79.6)" == *"$want8" ]]; then ok; else bad "8 x 80 GB: $(place 8 79.6)"; fi
if [[ "$(place 4 139.8)" == *"split placement, 2 learner(s) + 2 rollout(s)"* ]]; then ok; else bad "4 x 141 GB: $(place 4 139.8)"; fi
# 7B on 1 or 2 x 80 GB: no split fits; colocated pairs with the optimizer state on the host
for g in 1 2; do
  if [[ "$(place $g 79.6)" == *"colocated placement, $g learner(s) + $g rollout(s), cuda backend, 16 questions a step, optimizer state on the host (optim.offload=host)" ]]
  then ok; else bad "$g x 80 GB: $(place $g 79.6)"; fi
done
if "$src/launch/r1-aqa.sh" big synth/train.jsonl synth/test-mmau.json synth --gpus 1 --gpu-gib 79.6 --dry-run |
   grep -q -- "--set train.placement=colocated --set optim.offload=host "; then ok; else bad "1 GPU: colocated keys"; fi
if [[ "$(place 1 40)" == *"cannot hold a learner and a rollout"* ]]; then ok; else bad "1 x 40 GB: $(place 1 40)"; fi
# the tiny model on 1 GPU: colocated, its optimizer state on the GPU
line=$("$src/launch/r1-aqa.sh" model synth/train.jsonl synth/test-mmau.json synth --gpus 1 --gpu-gib 79.6 --dry-run 2>&1 | head -1)
if [[ "$line" == *"colocated placement, 1 learner(s) + 1 rollout(s), cuda backend, 16 questions a step" ]]; then ok; else bad "tiny on 1 GPU: $line"; fi
if "$src/launch/r1-aqa.sh" big synth/train.jsonl synth/test-mmau.json synth --gpus 8 --gpu-gib 79.6 --dry-run |
   grep -q -- "--set train.grad_accum=4 "; then ok; else bad "8 GPUs: grad_accum"; fi

# Bad use: exit 2 with a message.
"$src/launch/r1-aqa.sh" model synth/train.jsonl synth/none.json synth >bad.log 2>&1
rc=$?
if [ "$rc" -eq 2 ] && grep -q "none.json: no such file" bad.log; then ok; else bad "missing MMAU: rc $rc"; fi
"$src/launch/r1-aqa.sh" model synth/train.jsonl synth/test-mmau.json synth --eval-every 0 >bad.log 2>&1
rc=$?
if [ "$rc" -eq 2 ] && grep -q "eval-every" bad.log; then ok; else bad "--eval-every 0: rc $rc"; fi

echo "test_r1_aqa: $((checks - fails)) passed, $fails failed"
[ "$fails" -eq 0 ] || exit 1
# A passing test leaves nothing behind (CI runs every test twice, in two builds on one disk); a failing one
# keeps its files to look at.
cd / && rm -rf "$tmp"

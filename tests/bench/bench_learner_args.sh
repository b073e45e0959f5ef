#!/bin/bash
# bench_learner refuses bad options with exit 2 and a message naming the option (before any GPU work),
# and takes good ones (exit 0 with a GPU, 77 without).
set -u
exe=$1
cd "${AQA_SRC:-.}"
fails=0
refuse() {  # expected message fragment, then the arguments
    local want=$1
    shift
    out=$("$exe" "$@" 2>&1 >/dev/null)
    rc=$?
    if [ $rc -ne 2 ] || [[ "$out" != *"$want"* ]]; then
        echo "FAIL: bench_learner $* -> rc $rc, stderr: $out (wanted rc 2 and \"$want\")"
        fails=$((fails + 1))
    else
        echo "ok   bench_learner $* -> $want"
    fi
}
refuse '--layers "x": not an integer' --layers x
refuse '--layers 0 outside' --layers 0
refuse '--layers needs a value' --layers
refuse '--layers 33: configs/model-7b.json has 32 decoder layers' --layers 33
refuse '--audio-layers 40: configs/model-7b.json has 32 encoder layers' --audio-layers 40
refuse '--reps 0 outside 1..1000' --reps 0
refuse '--peak-tflops -1: must be positive' --peak-tflops -1
refuse '--json needs an output path' --json
refuse 'unknown option --bogus' --bogus
refuse 'second config path b.json (already a.json)' a.json b.json
refuse 'no/such.json' no/such.json
short="${AQA_TMP:-/tmp}/bench_learner_short_clip.json"
sed 's/"max_source_positions": 1500/"max_source_positions": 750/' configs/model-tiny.json >"$short"
refuse 'max_source_positions 750, the benchmark'"'"'s clip needs 1500' "$short"
"$exe" configs/model-tiny.json --reps 1 --components --json "${AQA_TMP:-/tmp}/bench_learner_tiny.json" >/dev/null
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    echo "FAIL: bench_learner on the tiny config: rc $rc"
    fails=$((fails + 1))
fi
[ $fails -eq 0 ] && echo "bench_learner_args: all passed"
exit $((fails ? 1 : 0))

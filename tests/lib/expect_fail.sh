#!/bin/sh
# expect_fail.sh WANT CMD [ARGS...]: a refusal test. CMD must exit with a failure status (1..125: not 0,
# not a crash by signal) and say WANT (a fixed string) on stdout or stderr; exit 77 (skipped) is passed
# on. Any non-zero exit is not enough: a crash or an unrelated error would pass that.
want=$1
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
[ "$rc" -ne 77 ] || exit 77
if [ "$rc" -eq 0 ] || [ "$rc" -gt 125 ]; then
    echo "FAIL: exit status $rc, want a refusal"
    exit 1
fi
printf '%s\n' "$out" | grep -qF -- "$want" || { echo "FAIL: no \"$want\" in the output"; exit 1; }
echo "PASS: refused with \"$want\""

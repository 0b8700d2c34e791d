#!/bin/sh
# run-unit.sh: run each unit-test binary (cmocka), then print one summary
# line "N passed, N failed" counting binaries' tests as cmocka reports them.
set -u
passed=0
failed=0
failed_bins=""
for bin in "$@"; do
    out=$("$bin" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ]; then
        [ "$f" -eq 0 ] && failed=$((failed + 1))
        failed_bins="$failed_bins $(basename "$bin")"
    fi
done
[ -n "$failed_bins" ] && echo "failing:$failed_bins"
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

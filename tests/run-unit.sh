#!/bin/sh
# run-unit.sh: run each unit-test binary (cmocka), then print one summary
# line "N passed, N failed" counting binaries' tests as cmocka reports them.
# Each binary's wall time follows its output ("time  NAME  S.Ss"), and the
# slowest are listed again before the summary, so a CI log shows where the
# time goes.
set -u
passed=0
failed=0
failed_bins=""
times=""
now() { date +%s%N; }
for bin in "$@"; do
    t0=$(now)
    out=$("$bin" 2>&1)
    rc=$?
    ms=$(( ($(now) - t0) / 1000000 ))
    printf '%s\n' "$out"
    name=$(basename "$bin")
    secs=$(printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)))
    echo "time  $name  ${secs}s"
    times="$times$ms $name
"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ]; then
        [ "$f" -eq 0 ] && failed=$((failed + 1))
        failed_bins="$failed_bins $(basename "$bin")"
    fi
done
printf '%s' "$times" | awk '{ t += $1 } END { printf "unit time: %.1fs in all; slowest:\n", t / 1000 }'
printf '%s' "$times" | sort -rn | head -n 8 | awk '{ printf "  %6.1fs  %s\n", $1 / 1000, $2 }'
[ -n "$failed_bins" ] && echo "failing:$failed_bins"
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

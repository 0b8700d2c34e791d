#!/bin/sh
# run-all.sh: run every end-to-end test (tests/e2e/t_*.sh) and print one
# closing line "e2e: N passed, N failed, N skipped".
set -u
here=$(cd "$(dirname "$0")" && pwd)
passed=0 failed=0 skipped=0 failing=""
for t in "$here"/t_*.sh; do
    name=$(basename "$t" .sh)
    if [ -n "${E2E_ONLY:-}" ]; then
        want=0
        for pat in $E2E_ONLY; do case "$name" in *"$pat"*) want=1 ;; esac; done
        [ "$want" -eq 1 ] || continue
    fi
    start=$(date +%s)
    out=$(sh "$t" 2>&1)
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1)); echo "ok    $name (${secs}s)"
    elif [ "$rc" -eq 77 ]; then
        skipped=$((skipped + 1)); echo "skip  $name: $(printf '%s\n' "$out" | grep '^SKIP' | head -n1)"
    else
        failed=$((failed + 1)); failing="$failing $name"; echo "FAIL  $name (${secs}s)"
        printf '%s\n' "$out" | tail -n 40 | sed 's/^/      /'
    fi
    [ -n "${E2E_VERBOSE:-}" ] && printf '%s\n' "$out" | sed 's/^/      /'
done
[ -n "$failing" ] && echo "failing:$failing"
echo "e2e: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

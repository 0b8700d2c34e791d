#!/bin/sh
# run-all.sh: run every end-to-end test (tests/e2e/t_*.sh), each with its
# wall and CPU time, and print one closing line "e2e: N passed, N failed, N
# skipped".
#
# E2E_ONLY="a b": only the tests whose names contain one of the words.
# E2E_JOBS=N (default 1): run up to N tests at once (make check runs two:
# most tests drive one worker, one core, and wait on children, sleeps and
# ffmpeg). Each test's output is kept until it ends and printed whole, so
# the log stays readable. E2E_FIRST="a b": start these (the longest) first.
# E2E_VERBOSE=1: print every test's output, not only a failing one's.
set -u
here=$(cd "$(dirname "$0")" && pwd)

# one NAME SCRIPT OUTDIR: run one test; its result line, and on failure the
# tail of its output, go to OUTDIR/NAME.res; its status to OUTDIR/NAME.rc.
if [ "${1:-}" = "--one" ]; then
    name=$2 t=$3 dir=$4
    t0=$(date +%s%N)
    out=$(sh "$t" 2>&1)
    rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    # and its CPU time, user and system, of every process it waited for
    # (times' second line, "0m1.230000s 0m0.040000s"; into a file, as
    # $(times) would run in a child of its own): the wall time of a test
    # beside another, or on a busy machine, says less
    times >"$dir/$name.times"
    cpu=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%.1f", t }' "$dir/$name.times")
    echo "$cpu" >"$dir/$name.cpu"
    secs="$(printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)))s, cpu ${cpu}s"
    {
        if [ "$rc" -eq 0 ]; then
            echo "ok    $name (${secs})"
        elif [ "$rc" -eq 77 ]; then
            echo "skip  $name (${secs}): $(printf '%s\n' "$out" | grep '^SKIP' | head -n1)"
        else
            echo "FAIL  $name (${secs})"
            printf '%s\n' "$out" | tail -n 40 | sed 's/^/      /'
        fi
        [ -n "${E2E_VERBOSE:-}" ] && printf '%s\n' "$out" | sed 's/^/      /'
    } >"$dir/$name.res"
    echo "$rc" >"$dir/$name.rc"
    # print the whole block at once (one writer at a time)
    { flock 9; cat "$dir/$name.res"; } 9>"$dir/.lock"
    exit 0
fi

jobs=${E2E_JOBS:-1}
dir=$(mktemp -d "${TMPDIR:-/tmp}/tapedeck-e2e-run.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
all=""
for t in "$here"/t_*.sh; do
    name=$(basename "$t" .sh)
    if [ -n "${E2E_ONLY:-}" ]; then
        want=0
        for pat in $E2E_ONLY; do case "$name" in *"$pat"*) want=1 ;; esac; done
        [ "$want" -eq 1 ] || continue
    fi
    all="$all $name"
done
# the order to start them in: E2E_FIRST's, then the rest
order=""
for f in ${E2E_FIRST:-}; do
    for name in $all; do [ "$name" = "$f" ] && order="$order $name"; done
done
for name in $all; do
    case " $order " in *" $name "*) ;; *) order="$order $name" ;; esac
done
start=$(date +%s)
for name in $order; do printf '%s\n' "$name"; done |
    xargs -P "$jobs" -I{} sh "$0" --one {} "$here/{}.sh" "$dir"
passed=0 failed=0 skipped=0 failing=""
for name in $all; do
    rc=$(cat "$dir/$name.rc" 2>/dev/null || echo 1)
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    elif [ "$rc" -eq 77 ]; then
        skipped=$((skipped + 1))
    else
        failed=$((failed + 1)); failing="$failing $name"
    fi
done
cpu=$(for name in $all; do cat "$dir/$name.cpu" 2>/dev/null; done | awk '{ t += $1 } END { printf "%.0f", t }')
echo "e2e time: $(( $(date +%s) - start ))s (${jobs} at a time), ${cpu}s CPU"
[ -n "$failing" ] && echo "failing:$failing"
echo "e2e: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

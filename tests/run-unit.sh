#!/bin/sh
# run-unit.sh BIN...: run each unit-test binary (cmocka), then print one
# summary line "N passed, N failed" counting binaries' tests as cmocka
# reports them. Each binary's output is printed whole when it ends,
# followed by its wall time and its CPU time, user and system, its
# threads' and children's ("time  NAME  S.Ss  cpu S.Ss"); the totals and
# the slowest are listed again before the summary, so a CI log shows where
# the time goes. The CPU time tells more than the wall time where binaries
# share the cores (lavapipe's, the CPU backend's threads) or the machine
# is busy with something else.
#
# UNIT_JOBS=N (default 1): run up to N binaries at once, in the order
# given (the Makefile lists the longest first). Most binaries use one
# core; the Vulkan ones on lavapipe and the CPU backend's use more.
# UNIT_ALONE="NAME ...": these run by themselves after the others
# (test_vulkan_backend: one lavapipe submission, the tiny encoder, must end
# within the backend's 2-minute hung-device limit).
# BIN:PATTERN runs BIN's tests matching PATTERN (TEST_FILTER), and
# BIN:!PATTERN[,PATTERN...] the others (TEST_SKIP; test_vulkan_backend
# reads it), so that one long binary can run on both cores (its name in
# the summary: NAME:PATTERN).
set -u

# --one BIN DIR: run one binary, keep its output, print it whole (one
# writer at a time), record status, wall and CPU milliseconds in DIR.
if [ "${1:-}" = "--one" ]; then
    bin=${2%%:*} dir=$3
    name=$(basename "$2")
    pat=""
    case "$2" in *:*) pat=${2#*:} ;; esac
    t0=$(date +%s%N)
    case "$pat" in
    "") "$bin" >"$dir/$name.out" 2>&1 ;;
    !*) TEST_SKIP=${pat#!} "$bin" >"$dir/$name.out" 2>&1 ;;
    *) TEST_FILTER=$pat "$bin" >"$dir/$name.out" 2>&1 ;;
    esac
    echo $? >"$dir/$name.rc"
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "$ms" >"$dir/$name.ms"
    # the shell's children's user and system time (times' second line,
    # "0m1.230000s 0m0.040000s"), in milliseconds
    # (into a file: in a pipe or $(...) it would run in a child of its own)
    times >"$dir/$name.times"
    cpu=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%d", t * 1000 }' "$dir/$name.times")
    echo "${cpu:-0}" >"$dir/$name.cpu"
    {
        flock 9
        cat "$dir/$name.out"
        printf 'time  %s  %d.%ds  cpu %d.%ds\n' "$name" $((ms / 1000)) $((ms % 1000 / 100)) \
            $((${cpu:-0} / 1000)) $((${cpu:-0} % 1000 / 100))
    } 9>"$dir/.lock"
    exit 0
fi

jobs=${UNIT_JOBS:-1}
dir=$(mktemp -d "${TMPDIR:-/tmp}/tapedeck-unit.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
t0=$(date +%s%N)
pool="" alone=""
for bin in "$@"; do
    case " ${UNIT_ALONE:-} " in
    *" $(basename "$bin") "*) alone="$alone $bin" ;;
    *) pool="$pool $bin" ;;
    esac
done
for bin in $pool; do printf '%s\n' "$bin"; done | xargs -P "$jobs" -I{} sh "$0" --one {} "$dir"
for bin in $alone; do sh "$0" --one "$bin" "$dir"; done
wall=$(( ($(date +%s%N) - t0) / 1000000 ))

passed=0
failed=0
failed_bins=""
times=""
for bin in "$@"; do
    name=$(basename "$bin")
    out="$dir/$name.out"
    rc=$(cat "$dir/$name.rc" 2>/dev/null || echo 1)
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" 2>/dev/null | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" 2>/dev/null | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ]; then
        [ "$f" -eq 0 ] && failed=$((failed + 1))
        failed_bins="$failed_bins $name"
    fi
    times="$times$(cat "$dir/$name.ms" 2>/dev/null || echo 0) $(cat "$dir/$name.cpu" 2>/dev/null || echo 0) $name
"
done
printf '%s' "$times" | awk -v wall="$wall" -v jobs="$jobs" \
    '{ t += $1; c += $2 } END { printf "unit time: %.1fs wall (%d at a time), %.1fs summed, %.1fs CPU; slowest (wall, CPU):\n", wall / 1000, jobs, t / 1000, c / 1000 }'
printf '%s' "$times" | sort -rn | head -n 8 | awk '{ printf "  %6.1fs  %6.1fs  %s\n", $1 / 1000, $2 / 1000, $3 }'
[ -n "$failed_bins" ] && echo "failing:$failed_bins"
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

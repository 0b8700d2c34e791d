# t_crash_supervisor: SIGKILL of the supervisor mid-run; the rerun redoes
# only the unfinished scenes, and every output is valid.
. "$(dirname "$0")/lib.sh"

a="$T/a"
mkdir -p "$a"
for i in 1 2 3 4 5 6; do speech_scene "$a/scene_$i.mp4" "This is scene $i. The family is in the garden."; done
long_scene "$a/scene_7.mp4" 40

"$TD" run "$a" --workers 1 -v >"$T/log" 2>&1 &
BG_PID=$!
wait_for_log "$T/log" '\[checkpoint\] scene_2.mp4' 120 || fail "no progress: $(cat "$T/log")"
kill -9 "$BG_PID"; wait "$BG_PID" 2>/dev/null; BG_PID=
# the orphaned worker notices and exits (it dies with its parent)
i=0
while pgrep -f "tapedeck worker .*--archive $a" >/dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "worker survived its supervisor"
    sleep 0.1
done
done_before=$(ls -A "$a" | grep -c '\.done$')
[ "$done_before" -ge 2 ] && [ "$done_before" -lt 7 ] || fail "done before rerun: $done_before"

"$TD" run "$a" >"$T/log2" 2>&1 || fail "rerun exit $?: $(tail "$T/log2")"
grep -q "\[summary\] processed: $((7 - done_before)) | skipped: $done_before | failed: 0" "$T/log2" ||
    fail "rerun summary (done before: $done_before): $(grep summary "$T/log2")"
for i in 1 2 3 4 5 6 7; do assert_done "$a/scene_$i.mp4"; done
"$TD" status "$a" | grep -q "done 7 | failed 0 | pending 0" || fail "status after rerun"
assert_no_temp "$a"
exit 0

# t_crash_worker: a worker killed mid-scene (fault hook and a real kill -9):
# the scene is requeued and finished once, nothing partial is left.
. "$(dirname "$0")/lib.sh"

a="$T/a"
mkdir -p "$a" "$T/faults"
for i in 1 2 3 4; do speech_scene "$a/scene_$i.mp4" "Scene number $i of the tape."; done

# 1. The worker dies with scene_2's SRT written to a temporary file but not
#    yet renamed (SIGKILL at the "write" point), the first time only.
TAPEDECK_FAULT="once-kill:write:scene_2" TAPEDECK_FAULT_DIR="$T/faults" \
    "$TD" run "$a" --workers 2 >"$T/log" 2>&1 || fail "run exit $?: $(tail "$T/log")"
grep -q '\[worker-exit\] PID=[0-9]*: worker killed by signal 9' "$T/log" || fail "no worker-exit line"
grep -q '\[retry\] scene_2.mp4: worker killed by signal 9' "$T/log" || fail "no retry line: $(cat "$T/log")"
for i in 1 2 3 4; do assert_done "$a/scene_$i.mp4"; done
grep -q '\[summary\] processed: 4 | skipped: 0 | failed: 0' "$T/log" || fail "summary"
[ "$(grep -c '\[checkpoint\] scene_2.mp4' "$T/log")" = 1 ] || fail "scene_2 finished more than once"
assert_no_temp "$a"
[ "$(ls -A "$a" | grep -c 'scene_2')" = 3 ] || fail "scene_2 files: $(ls -A "$a" | grep scene_2)"

# 2. A real kill -9 from outside while a long scene is being transcribed.
rm -f "$a"/*.srt "$a"/.*.done
long_scene "$a/scene_5.mp4" 60
"$TD" run "$a" --workers 1 -v >"$T/log2" 2>&1 &
BG_PID=$!
wait_for_log "$T/log2" '\[dispatch\] scene_5.mp4' 60 || fail "scene_5 never dispatched"
pid=$(sed -n 's/.*\[dispatch\] scene_5.mp4 -> worker PID=\([0-9]*\).*/\1/p' "$T/log2" | head -n1)
sleep 1
kill -9 "$pid" || fail "could not kill worker $pid"
wait "$BG_PID"; rc=$?; BG_PID=
[ "$rc" -eq 0 ] || fail "run after kill exit $rc: $(tail "$T/log2")"
grep -q "\[retry\] scene_5.mp4" "$T/log2" || fail "scene_5 not requeued"
for i in 1 2 3 4 5; do assert_done "$a/scene_$i.mp4"; done
assert_no_temp "$a"
exit 0

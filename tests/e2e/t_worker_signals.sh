# t_worker_signals: signals that reach workers directly.
# 1. SIGTERM to the whole process group (what `timeout`, a service stop or
#    `kill -TERM -PGID` send) means what one SIGTERM to the supervisor
#    means: the scene in flight finishes, nothing new starts.
# 2. A worker that gets SIGUSR1 from outside abandons its scene and exits;
#    that scene costs its attempt, and the exiting worker must not be
#    handed the next scene (it would be charged the worker's exit without
#    ever being tried).
. "$(dirname "$0")/lib.sh"

command -v setsid >/dev/null 2>&1 || skip "no setsid (util-linux)"
a="$T/a"
mkdir -p "$a"
long_scene "$a/scene_1.mp4" 40
speech_scene "$a/scene_2.mp4" "Scene two."
speech_scene "$a/scene_3.mp4" "Scene three."

# 1. group SIGTERM
setsid "$TD" run "$a" --workers 1 -v >"$T/log" 2>&1 &
BG_PID=$!
wait_for_log "$T/log" '\[dispatch\] scene_1.mp4' 60 || fail "scene_1 never dispatched"
sleep 1
kill -TERM "-$BG_PID" || fail "could not signal the process group"
wait "$BG_PID"; rc=$?; BG_PID=
[ "$rc" -eq 130 ] || fail "group SIGTERM: exit $rc, want 130: $(tail "$T/log")"
assert_done "$a/scene_1.mp4"
[ -e "$(done_marker "$a/scene_2.mp4")" ] && fail "scene_2 started after the SIGTERM"
grep -q 'stopping now' "$T/log" && fail "one group SIGTERM counted as two"
assert_no_temp "$a"

# 2. SIGUSR1 to the worker alone
rm -f "$a"/*.srt "$a"/.*.done
"$TD" run "$a" --workers 1 --retries 0 -v >"$T/log2" 2>&1 &
BG_PID=$!
wait_for_log "$T/log2" '\[dispatch\] scene_1.mp4' 60 || fail "scene_1 never dispatched (2)"
pid=$(sed -n 's/.*\[dispatch\] scene_1.mp4 -> worker PID=\([0-9]*\).*/\1/p' "$T/log2" | head -n1)
sleep 1
kill -USR1 "$pid" || fail "could not signal worker $pid"
wait "$BG_PID"; rc=$?; BG_PID=
grep -q 'during the scene' "$T/log2" && fail "a scene was charged the aborted worker's exit: $(grep -E 'failed|retry' "$T/log2")"
[ -e "$(failed_marker "$a/scene_1.mp4")" ] || fail "scene_1 was not charged its abandoned attempt"
[ -e "$(failed_marker "$a/scene_2.mp4")" ] && fail "scene_2 failed without being tried"
assert_done "$a/scene_2.mp4"
assert_done "$a/scene_3.mp4"
[ "$rc" -eq 1 ] || fail "exit $rc, want 1 (scene_1 abandoned with --retries 0): $(tail "$T/log2")"
assert_no_temp "$a"
exit 0

# t_signals: first SIGINT lets scenes in flight finish; a second stops now.
# Either way nothing half-written remains and a rerun finishes the rest.
. "$(dirname "$0")/lib.sh"

a="$T/a"
mkdir -p "$a"
long_scene "$a/scene_1.mp4" 30
long_scene "$a/scene_2.mp4" 30
for i in 3 4 5; do speech_scene "$a/scene_$i.mp4" "Scene $i."; done

# one SIGINT while scene_1 is in flight: it finishes, nothing new starts
"$TD" run "$a" --workers 1 -v >"$T/log" 2>&1 &
BG_PID=$!
wait_for_log "$T/log" '\[dispatch\] scene_1.mp4' 60 || fail "never dispatched"
sleep 0.5
kill -INT "$BG_PID"
wait "$BG_PID"; rc=$?; BG_PID=
[ "$rc" -eq 130 ] || fail "exit $rc after one SIGINT, want 130: $(tail "$T/log")"
grep -q '\[interrupt\]' "$T/log" || fail "no interrupt line"
assert_done "$a/scene_1.mp4"
[ -e "$(done_marker "$a/scene_2.mp4")" ] && fail "scene_2 started after the interrupt"
assert_no_temp "$a"

# two SIGINTs while scene_2 is in flight: stop now, scene_2 left for later
"$TD" run "$a" --workers 1 -v >"$T/log2" 2>&1 &
BG_PID=$!
wait_for_log "$T/log2" '\[dispatch\] scene_2.mp4' 60 || fail "never dispatched (2)"
sleep 0.5
kill -INT "$BG_PID"; sleep 0.3; kill -INT "$BG_PID"
wait "$BG_PID"; rc=$?; BG_PID=
[ "$rc" -eq 130 ] || fail "exit $rc after two SIGINTs, want 130"
grep -q 'stopping now' "$T/log2" || fail "no stop-now line"
[ -e "$(done_marker "$a/scene_2.mp4")" ] && fail "scene_2 marked done though stopped"
[ -e "$(failed_marker "$a/scene_2.mp4")" ] && fail "scene_2 marked failed though stopped"
[ -e "$a/scene_2.srt" ] && fail "scene_2 has output though stopped"
assert_no_temp "$a"

# SIGTERM behaves as SIGINT; then a plain rerun finishes everything
"$TD" run "$a" >"$T/log3" 2>&1 || fail "rerun exit $?"
for i in 1 2 3 4 5; do assert_done "$a/scene_$i.mp4"; done
grep -q '\[summary\] processed: 4 | skipped: 1 | failed: 0' "$T/log3" || fail "rerun summary: $(grep summary "$T/log3")"
exit 0

# t_always_crash: a scene that always kills its worker, and one that stalls,
# end .failed after the retries; the rest finish.
. "$(dirname "$0")/lib.sh"

a="$T/a"
mkdir -p "$a"
for i in 1 2 3 4; do speech_scene "$a/scene_$i.mp4" "Scene $i is here."; done

TAPEDECK_FAULT="kill:scene:scene_2,stall:scene:scene_3" \
    "$TD" run "$a" --workers 2 --retries 2 --stall-timeout 2 >"$T/log" 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "exit $rc, want 1: $(tail -n 20 "$T/log")"
assert_done "$a/scene_1.mp4"
assert_done "$a/scene_4.mp4"
m=$(failed_marker "$a/scene_2.mp4")
[ -f "$m" ] || fail "scene_2 not failed"
[ "$(json_get "$m" 'd["attempts"]')" = 3 ] || fail "scene_2 attempts $(json_get "$m" 'd["attempts"]')"
json_get "$m" 'd["error"]' | grep -q "signal 9" || fail "scene_2 reason"
m=$(failed_marker "$a/scene_3.mp4")
[ -f "$m" ] || fail "scene_3 not failed"
json_get "$m" 'd["error"]' | grep -q "stalled" || fail "scene_3 reason: $(json_get "$m" 'd["error"]')"
[ "$(json_get "$m" 'd["kind"]')" = stall ] || fail "scene_3 kind"
grep -q '\[stall\] PID=' "$T/log" || fail "no stall log line"
grep -q '\[summary\] processed: 2 | skipped: 0 | failed: 2' "$T/log" || fail "summary: $(grep summary "$T/log")"
# a rerun without the fault finishes them and clears the .failed markers
"$TD" run "$a" >"$T/log2" 2>&1 || fail "rerun exit $?"
for i in 1 2 3 4; do assert_done "$a/scene_$i.mp4"; done
[ -e "$(failed_marker "$a/scene_2.mp4")" ] && fail ".failed marker survived success"
exit 0

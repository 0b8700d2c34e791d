# t_run_basic: a run, markers and outputs, rerun skips, stale markers, --force, --limit, status.
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/a/tape1" "$T/a/tape2"
speech_scene "$T/a/tape1/tape1_scene_0001.mp4" "Happy birthday to you. Make a wish."
speech_scene "$T/a/tape1/tape1_scene_0002.mp4" "We went to the beach today." en-gb
speech_scene "$T/a/tape2/tape2_scene_0001.mp4" "Look at the snow in the garden." en-us+f3
silent_scene "$T/a/tape2/tape2_scene_0002.mp4" 3

"$TD" run "$T/a" --workers 2 --formats srt,vtt,json >"$T/log1" 2>&1 || fail "run exit $?: $(tail "$T/log1")"
for s in tape1/tape1_scene_0001 tape1/tape1_scene_0002 tape2/tape2_scene_0001 tape2/tape2_scene_0002; do
    assert_done "$T/a/$s.mp4"
    [ -f "$T/a/$s.vtt" ] && [ -f "$T/a/$s.json" ] || fail "$s: vtt/json missing"
    head -n1 "$T/a/$s.vtt" | grep -q '^WEBVTT' || fail "$s.vtt header"
    python3 -m json.tool "$T/a/$s.json" >/dev/null || fail "$s.json is not JSON"
done
assert_no_temp "$T/a"
# the silent scene is done with an empty (valid) SRT
[ ! -s "$T/a/tape2/tape2_scene_0002.srt" ] || fail "silent scene has cues: $(cat "$T/a/tape2/tape2_scene_0002.srt")"
# speech was recognised: at least one expected word per scene
grep -qi "birthday\|wish\|happy" "$T/a/tape1/tape1_scene_0001.srt" || fail "scene 1 text: $(cat "$T/a/tape1/tape1_scene_0001.srt")"
grep -Eq '^[0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3} --> [0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3}$' \
    "$T/a/tape1/tape1_scene_0001.srt" || fail "SRT timing line"
m=$(done_marker "$T/a/tape1/tape1_scene_0001.mp4")
[ "$(json_get "$m" 'd["task"]')" = subtitles ] || fail "marker task"
[ "$(json_get "$m" 'd["engine"]')" = sphinx ] || fail "marker engine"
[ "$(json_get "$m" 'len(d["outputs"])')" = 3 ] || fail "marker outputs"
[ "$(json_get "$m" 'd["input"]["size"]')" = "$(stat -c %s "$T/a/tape1/tape1_scene_0001.mp4")" ] || fail "marker size"
grep -q '\[worker-start\] PID=[0-9]* | device_idx=cpu0' "$T/log1" || fail "worker-start line"
grep -q '\[worker-done\] PID=[0-9]* | Processed: [0-9]* | Skipped: 0 | Failed: 0' "$T/log1" || fail "worker-done line"
grep -q '\[summary\] processed: 4 | skipped: 0 | failed: 0' "$T/log1" || fail "summary: $(grep summary "$T/log1")"

# rerun: everything skipped, nothing rewritten
srt_mtime=$(stat -c %Y.%y "$T/a/tape1/tape1_scene_0001.srt")
"$TD" run "$T/a" --formats srt,vtt,json >"$T/log2" 2>&1 || fail "rerun exit $?"
[ "$(grep -c '\[skip\] Already processed:' "$T/log2")" = 4 ] || fail "rerun skip lines: $(cat "$T/log2")"
grep -q '\[worker-start\]' "$T/log2" && fail "rerun started workers for nothing"
[ "$(stat -c %Y.%y "$T/a/tape1/tape1_scene_0001.srt")" = "$srt_mtime" ] || fail "rerun rewrote an output"

# an altered output, a touched input, a removed output: those scenes (only) are redone
printf '1\n00:00:00,000 --> 00:00:01,000\nedited\n\n' >"$T/a/tape1/tape1_scene_0001.srt"
touch -d '2001-01-01' "$T/a/tape1/tape1_scene_0002.mp4"
rm "$T/a/tape2/tape2_scene_0001.vtt"
"$TD" status "$T/a" -v >"$T/st" || fail "status exit"
grep -q "done 1 | failed 0 | pending 3" "$T/st" || fail "status counts: $(cat "$T/st")"
grep -q "output.*changed\|changed" "$T/st" || fail "status reason for the edited output: $(cat "$T/st")"
"$TD" run "$T/a" --formats srt,vtt,json >"$T/log3" 2>&1 || fail "third run exit $?"
grep -q '\[summary\] processed: 3 | skipped: 1 | failed: 0' "$T/log3" || fail "third run: $(grep summary "$T/log3")"
grep -q edited "$T/a/tape1/tape1_scene_0001.srt" && fail "edited SRT was not redone"
[ -f "$T/a/tape2/tape2_scene_0001.vtt" ] || fail "removed VTT was not redone"

# --force redoes all; --limit 1 takes one
"$TD" run "$T/a" --force --limit 1 >"$T/log4" 2>&1 || fail "--force --limit exit $?"
grep -q '\[summary\] processed: 1 |' "$T/log4" || fail "--force --limit 1: $(grep summary "$T/log4")"
"$TD" status "$T/a" | grep -q "done 4 | failed 0 | pending 0" || fail "final status"

# formats asked for later are added; asking for fewer redoes nothing
mkdir -p "$T/b"
cp "$T/a/tape1/tape1_scene_0001.mp4" "$T/b/one.mp4"
"$TD" run "$T/b" -q || fail "srt-only run"
[ -e "$T/b/one.json" ] && fail "json written without --formats json"
"$TD" run "$T/b" --formats srt,json >"$T/log5" 2>&1 || fail "srt,json run"
grep -q '\[summary\] processed: 1 |' "$T/log5" || fail "new format did not redo the scene: $(grep summary "$T/log5")"
python3 -m json.tool "$T/b/one.json" >/dev/null || fail "json missing after --formats srt,json"
"$TD" run "$T/b" --formats srt >"$T/log6" 2>&1 || fail "srt run"
grep -q '\[summary\] processed: 0 | skipped: 1 |' "$T/log6" || fail "fewer formats redid the scene"
exit 0

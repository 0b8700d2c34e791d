# t_dry_run: --dry-run prints the plan and writes nothing.
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/a/tape1"
speech_scene "$T/a/tape1/scene_2.mp4" "Hello there."
speech_scene "$T/a/tape1/scene_10.mp4" "Goodbye now."
speech_scene "$T/a/tape1/scene_1.mp4" "Good morning."
before=$(cd "$T/a" && find . -printf '%p %s %T@\n' | sort)
"$TD" run "$T/a" --dry-run --formats srt,vtt,json >"$T/out" 2>"$T/err" || fail "dry run exit $?"
after=$(cd "$T/a" && find . -printf '%p %s %T@\n' | sort)
[ "$before" = "$after" ] || fail "dry run changed the archive"
grep -q "3 to process" "$T/out" || fail "plan does not count 3 scenes: $(cat "$T/out")"
grep -q "worker" "$T/out" || fail "plan lacks workers"
grep -q "engine:  sphinx" "$T/out" || fail "plan lacks the engine"
# natural order: scene_1, scene_2, scene_10
order=$(grep -o 'scene_[0-9]*\.mp4' "$T/out" | tr '\n' ' ')
[ "$order" = "scene_1.mp4 scene_2.mp4 scene_10.mp4 " ] || fail "order: $order"
# --limit counts pending scenes
"$TD" run "$T/a" --dry-run --limit 2 >"$T/out2" || fail "dry run --limit"
grep -q "2 to process" "$T/out2" || fail "--limit 2: $(cat "$T/out2")"
grep -q "1 beyond --limit" "$T/out2" || fail "--limit 2 later count"
exit 0

# t_streams: a worker that decodes two scenes at once (--streams 2, whisper's
# batched decoding, random-weight model): the plan and READY say so, the
# supervisor hands it a second scene before the first is done, every scene
# finishes once; a worker killed while holding two charges neither (each
# reruns alone), and a scene that kills every worker it runs on is charged
# only when alone and ends .failed after its retries while the rest finish.
. "$(dirname "$0")/lib.sh"

MK=${TAPEDECK_MKMODEL:-$(dirname "$TD")/tapedeck-mkmodel}
[ -x "$MK" ] || skip "tapedeck-mkmodel not built ($MK)"
SMALL="--n-audio-state 64 --n-audio-head 2 --n-audio-layer 2 --n-text-state 64 --n-text-head 2 --n-text-layer 2"
# shellcheck disable=SC2086
"$MK" $SMALL --vocab synthetic --seed 7 --out "$TAPEDECK_MODELS_DIR/ggml-tiny.bin" >"$T/mk" 2>&1 ||
    fail "mkmodel exit $?: $(cat "$T/mk")"

a="$T/a"
mkdir -p "$a"
for i in 1 2 3 4; do speech_scene "$a/scene_$i.mp4" "Scene number $i of the tape."; done

"$TD" run "$a" --dry-run --streams 2 >"$T/dry" 2>&1 || fail "dry run exit $?: $(cat "$T/dry")"
grep -q 'decode batched, batch [0-9]* ([^)]*), 2 scenes at once' "$T/dry" ||
    fail "plan line: $(grep engine "$T/dry")"
"$TD" run "$a" --dry-run --streams 1 >"$T/dry1" 2>&1 || fail "dry run exit $?"
grep -q ', 1 scene at once' "$T/dry1" || fail "plan line, --streams 1: $(grep engine "$T/dry1")"
"$TD" run "$a" --dry-run --streams 9 >"$T/dry9" 2>&1 && fail "--streams 9 accepted"
grep -q -- '--streams needs a number from 1 to 8' "$T/dry9" || fail "--streams 9: $(cat "$T/dry9")"

# 1. Two at once: the second scene goes out before the first is done.
"$TD" run "$a" --workers 1 --threads 1 --streams 2 --beam-size 1 -v >"$T/log1" 2>&1 ||
    fail "run exit $?: $(tail "$T/log1")"
grep -q '\[worker-ready\] PID=[0-9]* | 2 scenes at once' "$T/log1" || fail "READY: $(grep worker-ready "$T/log1")"
d2=$(grep -n '\[dispatch\] scene_2.mp4' "$T/log1" | head -n1 | cut -d: -f1)
c1=$(grep -n '\[checkpoint\] scene_1.mp4' "$T/log1" | head -n1 | cut -d: -f1)
[ -n "$d2" ] && [ -n "$c1" ] && [ "$d2" -lt "$c1" ] ||
    fail "scene_2 was not handed out while scene_1 ran (lines $d2, $c1)"
for i in 1 2 3 4; do
    assert_done "$a/scene_$i.mp4"
    [ "$(grep -c "\[checkpoint\] scene_$i.mp4" "$T/log1")" = 1 ] || fail "scene_$i finished more than once"
done
grep -q '\[summary\] processed: 4 | skipped: 0 | failed: 0' "$T/log1" || fail "summary: $(grep summary "$T/log1")"
assert_no_temp "$a"

# 2. scene_2 kills its worker whenever it starts. The first death happens
#    with scene_1 in flight too: neither is charged; scene_1 then finishes
#    alone, scene_2 is charged alone until its retries run out.
rm -f "$a"/*.srt "$a"/.*.done
TAPEDECK_FAULT="kill:scene:scene_2" \
    "$TD" run "$a" --workers 1 --threads 1 --streams 2 --beam-size 1 --retries 1 >"$T/log2" 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "exit $rc, want 1: $(tail -n 20 "$T/log2")"
grep -q '\[retry\] scene_1.mp4: .* with 2 scenes in flight; requeued to run alone, not charged' "$T/log2" ||
    fail "scene_1 was charged or not requeued: $(grep -E 'retry|failed' "$T/log2")"
grep -q '\[retry\] scene_2.mp4: .* with 2 scenes in flight; requeued to run alone, not charged' "$T/log2" ||
    fail "scene_2's first death was charged: $(grep -E 'retry|failed' "$T/log2")"
m=$(failed_marker "$a/scene_2.mp4")
[ -f "$m" ] || fail "scene_2 not failed"
[ "$(json_get "$m" 'd["attempts"]')" = 2 ] || fail "scene_2 attempts $(json_get "$m" 'd["attempts"]'), want 2"
for i in 1 3 4; do
    assert_done "$a/scene_$i.mp4"
    [ "$(grep -c "\[checkpoint\] scene_$i.mp4" "$T/log2")" = 1 ] || fail "scene_$i finished more than once"
done
grep -q '\[summary\] processed: 3 | skipped: 0 | failed: 1' "$T/log2" || fail "summary: $(grep summary "$T/log2")"
assert_no_temp "$a"
exit 0

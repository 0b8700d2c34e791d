# t_vram_oom: out of memory in the middle of a scene ([vram-safety], README
# "GPU memory"), on Mesa's lavapipe. TAPEDECK_TEST_VK_FAIL_SUBMIT makes the
# N-th Vulkan queue submission after the worker's engine opened fail as out
# of device memory, inside a scene's encoder or decoder (t_vram injects
# into the open itself). One scene at a time, and two at once sharing one
# backend: every scene in flight stops, the engine is freed and reopened a
# step down (the batch halved, then the next smaller model), each scene
# runs again from its start, and all end done on the smaller configuration
# with no attempt charged and no temporary file left.
. "$(dirname "$0")/lib.sh"

MK=${TAPEDECK_MKMODEL:-$(dirname "$TD")/tapedeck-mkmodel}
[ -x "$MK" ] || skip "tapedeck-mkmodel not built ($MK)"
"$TD" devices --backend vulkan 2>/dev/null | grep -q 'backend vulkan' || skip "built without Vulkan"
ls /usr/share/vulkan/icd.d/ 2>/dev/null | grep -q lvp || skip "no lavapipe (mesa-vulkan-drivers)"

# Small random-weight models under release names (base.en one decoder
# layer larger). Each decoder step costs lavapipe seconds (the logits'
# 51864 rows), and a random model's windows are improbable, so each would
# be decoded again at every fallback temperature: t_vram_oom_silent.py
# makes each model hear silence (no-speech probability about 1, the end of
# text at the second step), so a window takes two decoder steps and is
# skipped with no fallback, as a real model's silent window is. Scenes end
# done with no cues; the encoder, the decoder's and the sampler's
# dispatches and the out-of-memory steps run as for speech.
M="$T/m"
mkdir -p "$M" "$T/v"
small="--dims tiny.en --n-audio-state 32 --n-audio-head 1 --n-audio-layer 1 --n-text-state 32 --n-text-head 1 --n-text-ctx 12"
# shellcheck disable=SC2086
"$MK" $small --n-text-layer 2 --seed 9 --out "$M/ggml-base.en.bin" >"$T/mk" 2>&1 || fail "mkmodel: $(cat "$T/mk")"
# shellcheck disable=SC2086
"$MK" $small --n-text-layer 1 --seed 8 --out "$M/ggml-tiny.en.bin" >"$T/mk" 2>&1 || fail "mkmodel: $(cat "$T/mk")"
for m in base.en tiny.en; do
    python3 "$(dirname "$0")/t_vram_oom_silent.py" "$M/ggml-$m.bin" >"$T/mk" 2>&1 || fail "silent $m: $(cat "$T/mk")"
done
speech_scene "$T/v/s1.mp4" "Hello there."
speech_scene "$T/v/s2.mp4" "Good morning."

vk() { TAPEDECK_MODELS_DIR="$M" "$TD" run "$T/v" --force --devices cpu --workers 1 --engine whisper \
    --backend vulkan --decode batched --batch 4 --beam-size 1 --language en --no-progress -v "$@"; }

# check LOG WANT STEPS: both scenes done once on WANT ("model batch backend"),
# STEPS step-downs logged, nothing charged
check() {
    grep -q '\[summary\] processed: 2 | skipped: 0 | failed: 0' "$1" || fail "summary: $(grep -E 'vram|summary|retry|failed' "$1")"
    grep -q '\[retry\]\|\[failed\]' "$1" && fail "an attempt was charged: $(grep -E 'vram|retry|failed' "$1")"
    got=$(grep -c '\[vram-safety\] out of memory with model .*: freed; now model' "$1")
    [ "$got" = "$3" ] || fail "$got step-downs, want $3: $(grep vram "$1")"
    for s in s1 s2; do
        m=$(done_marker "$T/v/$s.mp4")
        [ -f "$m" ] || fail "$s not done: $(grep -E 'vram|checkpoint' "$1")"
        got="$(json_get "$m" 'd["model"]') $(json_get "$m" 'd["batch"]') $(json_get "$m" 'd["backend"]')"
        [ "$got" = "$2" ] || fail "$s marker: $got, want $2: $(grep vram "$1")"
        [ "$(grep -c "\[checkpoint\] $s.mp4" "$1")" = 1 ] || fail "$s finished more than once"
    done
    assert_no_temp "$T/v"
}

# 1. One scene at a time: the 3rd submission after the open (s1's first
#    decoder step, which runs in its sampling's submission: the encoder
#    makes two) fails, then the 3rd after the reopen: batch 4,
#    2, 1; s1 is retried each time, s2 runs on batch 1.
TAPEDECK_TEST_VK_FAIL_SUBMIT=3,3 vk --streams 1 >"$T/one" 2>&1 || fail "--streams 1: exit $?: $(tail "$T/one")"
check "$T/one" "base.en 1 vulkan" 2
grep -q '\[vram-safety\] out of memory with model base.en batch 4 (s1.mp4: whisper vulkan \(decoder\|sample\): .*out of device memory.*): freed; now model base.en batch 2' "$T/one" ||
    fail "--streams 1, first step: $(grep vram "$T/one")"
[ "$(grep -c '\[vram-safety\] s1.mp4: retrying the scene' "$T/one")" = 2 ] || fail "--streams 1 retries: $(grep vram "$T/one")"
note "--streams 1: out of memory mid-scene twice: batch 4 -> 2 -> 1, both scenes done"

# 2. Two scenes at once: the 5th submission, then the 5th after each of
#    two reopens (a scene makes four: two of the encoder, then a decoder
#    step with its sampling twice; so the 5th comes before either scene
#    can end, and both are in flight):
#    batch 4, 2, 1, then tiny.en; both scenes stop, wait and run again each
#    time, on one reopened engine and its clone.
rm -f "$T/v"/*.srt "$T/v"/.*.done
TAPEDECK_TEST_VK_FAIL_SUBMIT=5,5,5 vk --streams 2 >"$T/two" 2>&1 || fail "--streams 2: exit $?: $(tail "$T/two")"
check "$T/two" "tiny.en 1 vulkan" 3
grep -q '\[vram-safety\] out of memory with 2 scenes in flight (.*out of device memory.*): stopping them for a reopen' "$T/two" ||
    fail "--streams 2: not both in flight: $(grep vram "$T/two")"
grep -q '\[vram-safety\] reopened: model tiny.en batch 1 for 2 scenes at once' "$T/two" ||
    fail "--streams 2: reopen: $(grep vram "$T/two")"
for s in s1 s2; do
    grep -q "\[vram-safety\] $s.mp4: retrying the scene" "$T/two" || fail "--streams 2: $s not retried: $(grep vram "$T/two")"
done
note "--streams 2: out of memory mid-scene three times: batch 4 -> 2 -> 1 -> tiny.en, both scenes stopped and rerun each time, done"
exit 0

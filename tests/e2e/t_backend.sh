# t_backend: which Whisper backend a worker computes with (--backend).
# CI has no GPU, so GPU workers come from a recorded sysfs tree (two Arc
# A770 cards, tests/fixtures/devices) through the real discovery code:
#  - auto on a GPU worker tries Vulkan on that card; where it cannot run
#    (no loader, no driver, or, with Mesa's lavapipe, no such card) the
#    worker says why and computes on the CPU, and the scene is done, its
#    marker saying backend cpu;
#  - --backend vulkan on such a worker is an error that names the reason,
#    and nothing is written for the scene;
#  - --backend cpu computes on the CPU without trying Vulkan;
#  - the plan line says which backend was asked for.
# The model is a small random-weight one (what it transcribes is noise).
. "$(dirname "$0")/lib.sh"

MK=${TAPEDECK_MKMODEL:-$(dirname "$TD")/tapedeck-mkmodel}
[ -x "$MK" ] || skip "tapedeck-mkmodel not built ($MK)"
fx="$(cd "$(dirname "$0")/../fixtures/devices" && pwd)"
[ -d "$fx/two-a770/sys" ] || skip "no recorded sysfs tree in $fx"
"$MK" --n-audio-state 64 --n-audio-head 2 --n-audio-layer 2 --n-text-state 64 --n-text-head 2 \
    --n-text-layer 2 --seed 7 --out "$TAPEDECK_MODELS_DIR/ggml-tiny.bin" >"$T/mk" 2>&1 ||
    fail "mkmodel exit $?: $(cat "$T/mk")"
mkdir -p "$T/a"
silent_scene "$T/a/scene_0001.mp4" 2

# auto on a GPU worker: Vulkan cannot open the recorded card here
TAPEDECK_SYSFS="$fx/two-a770/sys" "$TD" run "$T/a" --devices 0 --beam-size 1 \
    --no-progress -v >"$T/auto" 2>&1 || fail "auto: exit $?: $(tail "$T/auto")"
grep -q 'backend auto (vulkan on GPU workers where it can run)' "$T/auto" ||
    fail "the plan line does not name the backend: $(grep -m1 engine "$T/auto")"
grep -q '\[backend\] vulkan cannot run on 0000:' "$T/auto" ||
    fail "no reason logged for the CPU fallback: $(cat "$T/auto")"
grep -q 'using the CPU backend' "$T/auto" || fail "fallback not said: $(cat "$T/auto")"
assert_done "$T/a/scene_0001.mp4"
m=$(done_marker "$T/a/scene_0001.mp4")
[ "$(json_get "$m" 'd["backend"]')" = cpu ] || fail "marker backend: $(cat "$m")"

# --backend vulkan on that worker: an error with the reason, no scene done
TAPEDECK_SYSFS="$fx/two-a770/sys" "$TD" run "$T/a" --devices 0 --backend vulkan --force \
    --beam-size 1 --no-progress >"$T/vk" 2>&1
rc=$?
[ "$rc" -eq 3 ] || fail "--backend vulkan without a usable card: exit $rc, want 3: $(tail "$T/vk")"
grep -qi 'vulkan' "$T/vk" || fail "the error does not say why: $(tail "$T/vk")"

# --backend cpu: no Vulkan attempt
TAPEDECK_SYSFS="$fx/two-a770/sys" "$TD" run "$T/a" --devices 0 --backend cpu --force \
    --beam-size 1 --no-progress -v >"$T/cpu" 2>&1 || fail "cpu: exit $?: $(tail "$T/cpu")"
grep -q '\[backend\]' "$T/cpu" && fail "--backend cpu tried Vulkan: $(grep backend "$T/cpu")"
grep -q 'backend cpu' "$T/cpu" || fail "the plan line does not say cpu: $(grep -m1 engine "$T/cpu")"

# a bad value is a usage error
"$TD" run "$T/a" --backend opencl >"$T/bad" 2>&1
[ $? -eq 2 ] || fail "--backend opencl: want exit 2"
grep -q -- '--backend needs auto, cpu or vulkan' "$T/bad" || fail "bad value: $(cat "$T/bad")"
exit 0

# t_vram: the model and batch per GPU ([vram-check], README "GPU memory"),
# and out of memory at run time ([vram-safety]).
# CI has no GPU: the cards come from TAPEDECK_DEVICES (free = total there)
# and the recorded sysfs tree of a card with 2 GB free; the models are
# random-weight files of the released tiny.en and base.en dimensions
# (their exact needs are what is planned with). Out of memory is injected
# into the Vulkan backend on Mesa's lavapipe (TAPEDECK_TEST_VK_FAIL_ALLOC):
# at each of its allocations in turn, the scene ends done on a smaller
# batch; where nothing fits, the scene goes to a CPU worker uncharged.
. "$(dirname "$0")/lib.sh"

MK=${TAPEDECK_MKMODEL:-$(dirname "$TD")/tapedeck-mkmodel}
[ -x "$MK" ] || skip "tapedeck-mkmodel not built ($MK)"
"$TD" devices --backend vulkan 2>/dev/null | grep -q 'backend vulkan' || skip "built without Vulkan"
fx="$(cd "$(dirname "$0")/../fixtures/devices" && pwd)"
for n in tiny.en base.en; do
    "$MK" --dims "$n" --seed 3 --out "$TAPEDECK_MODELS_DIR/ggml-$n.bin" >"$T/mk" 2>&1 ||
        fail "mkmodel $n: $(cat "$T/mk")"
done

# three cards: 4 GiB (base.en, a large batch), 700 MiB (tiny.en: base.en,
# 0.59 GiB with the room for products split along K and the encoder's
# group of 4 windows,
# does not fit 700 MiB less the 256 MiB margin), 400 MiB (nothing fits: no worker)
cards="nvidia/0000:17:00.0/GPU-a/4096/big,nvidia/0000:65:00.0/GPU-b/700/mid,nvidia/0000:b3:00.0/GPU-c/400/small"
TAPEDECK_DEVICES=$cards "$TD" devices --language en >"$T/d" 2>&1 || fail "devices: $(cat "$T/d")"
grep -Eq '^    \[vram-check\] model base.en, batch ([2-9]|[1-4][0-9]): base.en batch [0-9]+: needs [0-9.]+ GiB of 4.00 GiB free \(margin 0.25 GiB\)$' "$T/d" ||
    fail "4 GiB card: $(cat "$T/d")"
grep -Eq '^    \[vram-check\] model tiny.en, batch [0-9]+: .* of 0.68 GiB free .*; base.en needs 0.59 GiB$' "$T/d" ||
    fail "700 MiB card: $(cat "$T/d")"
grep -q '\[vram-check\] nvidia 0000:b3:00.0: no worker: no model fits: even the smallest, tiny.en batch 1' "$T/d" ||
    fail "400 MiB card: $(cat "$T/d")"
[ "$(grep -c '^  worker [0-9]: nvidia' "$T/d")" = 2 ] || fail "want two GPU workers: $(cat "$T/d")"

# sequential decoding: batch 1
TAPEDECK_DEVICES=$cards "$TD" devices --language en --decode sequential >"$T/s" 2>&1 || fail "devices seq"
grep -q 'model base.en, batch 1: base.en batch 1: needs' "$T/s" || fail "sequential: $(cat "$T/s")"

# --model base.en pinned: refused on the 700 MiB card, with the sizes ...
TAPEDECK_DEVICES=$cards "$TD" devices --language en --model base.en --devices 0,1 >"$T/p" 2>&1
[ $? -ne 0 ] || fail "pinned base.en on 700 MiB accepted: $(cat "$T/p")"
grep -q -- '--model base.en does not fit nvidia 0000:65:00.0: no model fits: base.en batch 1 needs 0.59 GiB, 0.68 GiB free less margin 0.25 GiB (--allow-downgrade' "$T/p" ||
    fail "refusal: $(cat "$T/p")"
mkdir -p "$T/a"
silent_scene "$T/a/scene_0001.mp4" 1
TAPEDECK_DEVICES=$cards "$TD" run "$T/a" --language en --model base.en --devices 0,1 --no-progress >"$T/r" 2>&1
[ $? -eq 3 ] || fail "run with a pinned model that does not fit: want exit 3: $(tail "$T/r")"
[ -z "$(ls "$T/a" | grep -v '^scene_0001.mp4$')" ] || fail "the refused run wrote: $(ls "$T/a")"
# ... and with --allow-downgrade, tiny.en there, base.en on the 4 GiB card
TAPEDECK_DEVICES=$cards "$TD" devices --language en --model base.en --allow-downgrade --devices 0,1 >"$T/p" 2>&1 ||
    fail "downgrade: $(cat "$T/p")"
grep -q 'model base.en, batch' "$T/p" || fail "downgrade, 4 GiB card: $(cat "$T/p")"
grep -q 'model tiny.en, batch [0-9]*: .*; --model base.en needs 0.59 GiB' "$T/p" || fail "downgrade, 700 MiB: $(cat "$T/p")"

# the recorded A770 with 2 GiB free, beside an integrated GPU without memory figures
TAPEDECK_SYSFS="$fx/one-2gb-free/sys" "$TD" devices --language en >"$T/f" 2>&1 || fail "2 GB tree"
grep -q 'model base.en, batch [0-9]*: base.en batch [0-9]*: needs [0-9.]* GiB of 2.00 GiB free (margin 0.64 GiB)' "$T/f" ||
    fail "2 GB free card: $(cat "$T/f")"
grep -q 'model base.en, batch 1: base.en batch 1: the card reports no memory size, not checked' "$T/f" ||
    fail "integrated GPU: $(cat "$T/f")"
# no GPU: no [vram-check]
TAPEDECK_SYSFS="$fx/no-gpu/sys" "$TD" devices --language en >"$T/n" 2>&1 || fail "no-GPU tree"
grep -q 'vram-check' "$T/n" && fail "vram-check without a GPU: $(cat "$T/n")"

# ---- out of memory at run time, on lavapipe: small models of two sizes
# under release names (lavapipe is slow with real dimensions)
ls /usr/share/vulkan/icd.d/ 2>/dev/null | grep -q lvp || skip "no lavapipe (mesa-vulkan-drivers)"
M2="$T/m2"
mkdir -p "$M2" "$T/v"
"$MK" --dims tiny.en --n-audio-state 64 --n-audio-head 2 --n-audio-layer 2 --n-text-state 64 --n-text-head 2 \
    --n-text-layer 2 --seed 7 --out "$M2/ggml-base.en.bin" >"$T/mk" 2>&1 || fail "mkmodel: $(cat "$T/mk")"
"$MK" --dims tiny.en --n-audio-state 64 --n-audio-head 2 --n-audio-layer 1 --n-text-state 64 --n-text-head 2 \
    --n-text-layer 1 --seed 8 --out "$M2/ggml-tiny.en.bin" >"$T/mk" 2>&1 || fail "mkmodel: $(cat "$T/mk")"
silent_scene "$T/v/s1.mp4" 1
vk() { TAPEDECK_MODELS_DIR="$M2" "$TD" run "$T/v" --force --devices cpu --workers 1 --backend vulkan \
    --decode batched --batch 4 --beam-size 1 --language en --no-progress "$@"; }
# the N-th allocation of the backend's open fails, then the (N+1)-th of
# the reopen at batch 2, then the (N+2)-th of the one at batch 1, for every
# N until the open makes fewer: each time freed and stepped down (batch 4,
# 2, 1, then tiny.en), the scene done on what was reached, no attempt spent
n=1
while :; do
    TAPEDECK_TEST_VK_FAIL_ALLOC=$n,$((n + 1)),$((n + 2)) vk >"$T/o$n" 2>&1 || fail "allocation $n: exit $?: $(tail "$T/o$n")"
    grep -q '\[summary\] processed: 1 | skipped: 0 | failed: 0' "$T/o$n" || fail "allocation $n: $(tail "$T/o$n")"
    grep -q '\[retry\]' "$T/o$n" && fail "allocation $n charged an attempt: $(cat "$T/o$n")"
    m=$(done_marker "$T/v/s1.mp4")
    steps=$(grep -c '\[vram-safety\] out of memory with model .*: freed; now model' "$T/o$n")
    got="$(json_get "$m" 'd["model"]') $(json_get "$m" 'd["batch"]') $(json_get "$m" 'd["backend"]')"
    case $steps in
    0) [ "$got" = "base.en 4 vulkan" ] || fail "no injection, marker: $got"; break ;;
    1) want="base.en 2 vulkan" ;;
    2) want="base.en 1 vulkan" ;;
    *) want="tiny.en 1 vulkan" ;;
    esac
    [ "$got" = "$want" ] || fail "allocations $n..$((n + 2)): $steps step(s), marker $got, want $want: $(grep vram "$T/o$n")"
    n=$((n + 3))
    [ $n -le 600 ] || fail "the open never stops failing"
done
[ $n -gt 20 ] || fail "only $((n - 1)) allocations before the open made none: $(cat "$T/o$n")"
note "out of memory injected at each of the Vulkan open's allocations (fewer than $((n + 2))): every scene done, stepped down"

# a GPU worker that nothing fits any more: its scenes go to a CPU worker
# (one is added: the plan had none), no attempt charged, none lost
cp "$T/v/s1.mp4" "$T/v/s2.mp4"
TAPEDECK_MODELS_DIR="$M2" TAPEDECK_DEVICES=nvidia/0000:17:00.0/GPU-aaaa/4096/card \
    TAPEDECK_TEST_VK_FAIL_ALLOC=1,1,1,1,1,1,1,1,1,1,1,1 "$TD" run "$T/v" --force --language en --no-progress \
    >"$T/cpu" 2>&1 || fail "to CPU: exit $?: $(tail "$T/cpu")"
grep -q 'no smaller batch or model' "$T/cpu" || fail "chain not exhausted: $(grep vram "$T/cpu")"
grep -q '\[vram-safety\] s[12].mp4: .*; requeued for a CPU worker (no attempt charged)' "$T/cpu" || fail "no requeue: $(cat "$T/cpu")"
grep -q '\[vram-safety\] CPU worker slot 1 added' "$T/cpu" || fail "no CPU worker: $(cat "$T/cpu")"
grep -q '\[summary\] processed: 2 | skipped: 0 | failed: 0' "$T/cpu" || fail "summary: $(tail "$T/cpu")"
grep -q '\[retry\]\|\[failed\]' "$T/cpu" && fail "an attempt was charged: $(cat "$T/cpu")"
for s in s1 s2; do
    [ "$(json_get "$(done_marker "$T/v/$s.mp4")" 'd["device"]')" = cpu ] || fail "$s not done by the CPU worker"
done
exit 0

# t_vram: the model and batch per GPU ([vram-check], README "GPU memory").
# CI has no GPU: the cards come from TAPEDECK_DEVICES (free = total there)
# and the recorded sysfs tree of a card with 2 GB free; the models are
# random-weight files of the released tiny.en and base.en dimensions
# (their exact needs are what is planned with).
. "$(dirname "$0")/lib.sh"

MK=${TAPEDECK_MKMODEL:-$(dirname "$TD")/tapedeck-mkmodel}
[ -x "$MK" ] || skip "tapedeck-mkmodel not built ($MK)"
"$TD" devices --backend vulkan 2>/dev/null | grep -q 'backend vulkan' || skip "built without Vulkan"
fx="$(cd "$(dirname "$0")/../fixtures/devices" && pwd)"
for n in tiny.en base.en; do
    "$MK" --dims "$n" --seed 3 --out "$TAPEDECK_MODELS_DIR/ggml-$n.bin" >"$T/mk" 2>&1 ||
        fail "mkmodel $n: $(cat "$T/mk")"
done

# three cards: 4 GiB (base.en, a large batch), 600 MiB (tiny.en: base.en
# does not fit 600 MiB less the 256 MiB margin), 400 MiB (nothing fits: no worker)
cards="nvidia/0000:17:00.0/GPU-a/4096/big,nvidia/0000:65:00.0/GPU-b/600/mid,nvidia/0000:b3:00.0/GPU-c/400/small"
TAPEDECK_DEVICES=$cards "$TD" devices --language en >"$T/d" 2>&1 || fail "devices: $(cat "$T/d")"
grep -Eq '^    \[vram-check\] model base.en, batch ([2-9]|[1-4][0-9]): base.en batch [0-9]+: needs [0-9.]+ GiB of 4.00 GiB free \(margin 0.25 GiB\)$' "$T/d" ||
    fail "4 GiB card: $(cat "$T/d")"
grep -Eq '^    \[vram-check\] model tiny.en, batch [0-9]+: .* of 0.59 GiB free .*; base.en needs 0.37 GiB$' "$T/d" ||
    fail "600 MiB card: $(cat "$T/d")"
grep -q '\[vram-check\] nvidia 0000:b3:00.0: no worker: no model fits: even the smallest, tiny.en batch 1' "$T/d" ||
    fail "400 MiB card: $(cat "$T/d")"
[ "$(grep -c '^  worker [0-9]: nvidia' "$T/d")" = 2 ] || fail "want two GPU workers: $(cat "$T/d")"

# sequential decoding: batch 1
TAPEDECK_DEVICES=$cards "$TD" devices --language en --decode sequential >"$T/s" 2>&1 || fail "devices seq"
grep -q 'model base.en, batch 1: base.en batch 1: needs' "$T/s" || fail "sequential: $(cat "$T/s")"

# --model base.en pinned: refused on the 600 MiB card, with the sizes ...
TAPEDECK_DEVICES=$cards "$TD" devices --language en --model base.en --devices 0,1 >"$T/p" 2>&1
[ $? -ne 0 ] || fail "pinned base.en on 600 MiB accepted: $(cat "$T/p")"
grep -q -- '--model base.en does not fit nvidia 0000:65:00.0: no model fits: base.en batch 1 needs 0.37 GiB, 0.59 GiB free less margin 0.25 GiB (--allow-downgrade' "$T/p" ||
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
grep -q 'model tiny.en, batch [0-9]*: .*; --model base.en needs 0.37 GiB' "$T/p" || fail "downgrade, 600 MiB: $(cat "$T/p")"

# the recorded A770 with 2 GiB free, beside an integrated GPU without memory figures
TAPEDECK_SYSFS="$fx/one-2gb-free/sys" "$TD" devices --language en >"$T/f" 2>&1 || fail "2 GB tree"
grep -q 'model base.en, batch [0-9]*: base.en batch [0-9]*: needs [0-9.]* GiB of 2.00 GiB free (margin 0.64 GiB)' "$T/f" ||
    fail "2 GB free card: $(cat "$T/f")"
grep -q 'model base.en, batch 1: base.en batch 1: the card reports no memory size, not checked' "$T/f" ||
    fail "integrated GPU: $(cat "$T/f")"
# no GPU: no [vram-check]
TAPEDECK_SYSFS="$fx/no-gpu/sys" "$TD" devices --language en >"$T/n" 2>&1 || fail "no-GPU tree"
grep -q 'vram-check' "$T/n" && fail "vram-check without a GPU: $(cat "$T/n")"
exit 0

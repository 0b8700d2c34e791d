#!/bin/bash
# whisper-oracle-device.sh: regenerate the Whisper golden fixtures
# (tests/fixtures/whisper/) on a machine that has python3 with torch and
# transformers (the device machine; never CI). From the repo root:
#
#   OUT=/some/dir scripts/whisper-oracle-device.sh
#
# It builds tapedeck-mkmodel alone with cc (no media libraries there),
# writes the deterministic test audio, generates each model with seeded
# random weights, runs scripts/whisper-oracle.py on it, and leaves
# $OUT/fixtures.tar (whisper/...: copy its files into tests/fixtures/whisper/)
# and $OUT/oracle.log. One model failing does not stop the others.
#
# A real model instead (no recipe to regenerate it from, so the file is
# brought along and its SHA-256 recorded; the test re-imports it):
#
#   OUT=/some/dir scripts/whisper-oracle-device.sh --real MODEL.bin AUDIO.wav NAME SOURCE [SHA256]
#
# runs the oracle once on MODEL.bin (checked against SHA256 when given) with
# the WAV, teacher-forcing the logits on the greedy transcript, and leaves
# NAME.json, NAME.enc.f32, NAME.logits.f32 and NAME.mel80.f32 in the tar.
#
# Word alignment fixtures (issue 13) for existing sets instead:
#
#   OUT=/some/dir scripts/whisper-oracle-device.sh --align [PRUNED.bin.gz]
#
# rebuilds tiny-f16 from its recipe and writes tiny-f16.align.{f32,json}
# (teacher-forced tokens, tiny's heads); with PRUNED.bin.gz (`whisper-oracle.py
# prune` of the real tiny.en model, gzipped to fit the carry) also
# tiny.en-real.align.{f32,json} (its greedy transcript, tiny.en's heads).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
work=$(mktemp -d)
fix=$work/whisper
mkdir -p "$fix"
exec > >(tee "$OUT/oracle.log") 2>&1
export PYTHONUNBUFFERED=1

echo "== versions"
uname -m; cc --version | head -1
python3 -c 'import sys, numpy, torch, transformers; print(sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__, "transformers", transformers.__version__)' || exit 1

if [ "${1:-}" = --align ]; then
    fx=$root/tests/fixtures/whisper
    failed=0
    echo "== build tapedeck-mkmodel"
    cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/src" "$root/tools/mkmodel.c" "$root/src/whisper/mkmodel.c" \
        "$root/src/whisper/ggml_writer.c" "$root/src/util/error.c" -lm -o "$work/tapedeck-mkmodel" || exit 1
    args=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mkmodel"]["argv"])' "$fx/tiny-f16.json")
    echo "== tiny-f16: tapedeck-mkmodel $args"
    # shellcheck disable=SC2086  # args is a flat option list
    "$work/tapedeck-mkmodel" $args --out "$work/tiny-f16.bin" || exit 1
    timeout 200 python3 "$root/scripts/whisper-oracle.py" align --model "$work/tiny-f16.bin" \
        --fixtures "$fx" --name tiny-f16 --heads tiny --tokens teacher --out "$fix" || failed=$((failed + 1))
    if [ -n "${2:-}" ]; then
        echo "== tiny.en-real (pruned copy)"
        gunzip -c "$2" > "$work/tiny.en-pruned.bin" || exit 1
        sha=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_sha256"])' "$fx/tiny.en-real.json")
        timeout 200 python3 "$root/scripts/whisper-oracle.py" align --model "$work/tiny.en-pruned.bin" \
            --fixtures "$fx" --name tiny.en-real --heads tiny.en --tokens greedy --pruned-from "$sha" \
            --out "$fix" || failed=$((failed + 1))
    fi
    ls -l "$fix"
    tar -C "$work" -cf "$OUT/fixtures.tar" whisper
    rm -rf "$work"
    echo "failed: $failed"
    exit $((failed > 0))
fi

if [ "${1:-}" = --real ]; then
    [ $# -ge 5 ] || { echo "usage: $0 --real MODEL.bin AUDIO.wav NAME SOURCE [SHA256]"; exit 2; }
    model=$2 wav=$3 name=$4 source=$5 want=${6:-}
    have=$(sha256sum "$model" | cut -d' ' -f1)
    echo "== $name: $model sha256 $have"
    if [ -n "$want" ] && [ "$have" != "$want" ]; then
        echo "FAILED: $model hashes to $have, expected $want"
        exit 1
    fi
    sha256sum "$wav"
    t0=$SECONDS
    # Rows and columns subsampled as for the random sets (every 5th encoder
    # row; every 8th logit column below eot, all from eot): a few MB.
    timeout 500 python3 "$root/scripts/whisper-oracle.py" oracle --model "$model" --audio "$wav" \
        --out "$fix" --name "$name" --real "$source" --mel-name "$name.mel80.f32" \
        --teacher greedy --enc-row-step 5 --logit-col-step 8 --max-new 96
    rc=$?
    echo "== $name took $((SECONDS - t0)) s, rc $rc"
    ls -l "$fix"
    tar -C "$work" -cf "$OUT/fixtures.tar" whisper
    rm -rf "$work"
    exit $rc
fi

echo "== build tapedeck-mkmodel"
cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/src" "$root/tools/mkmodel.c" "$root/src/whisper/mkmodel.c" "$root/src/whisper/ggml_writer.c" \
    "$root/src/util/error.c" -lm -o "$work/tapedeck-mkmodel" || exit 1

echo "== audio"
python3 "$root/scripts/whisper-oracle.py" audio "$fix/audio.s16" || exit 1
sha256sum "$fix/audio.s16"

failed=0
# one NAME SEED ENC_ROW_STEP MKMODEL_ARGS...
one() {
    local name=$1 seed=$2 step=$3
    shift 3
    local args="$* --seed $seed"
    echo "== $name: tapedeck-mkmodel $args"
    local t0=$SECONDS
    # shellcheck disable=SC2086  # args is a flat option list
    if ! "$work/tapedeck-mkmodel" $args --out "$work/$name.bin"; then
        echo "FAILED: $name: mkmodel"
        failed=$((failed + 1))
        return
    fi
    sha256sum "$work/$name.bin"
    if ! timeout 240 python3 "$root/scripts/whisper-oracle.py" oracle --model "$work/$name.bin" \
        --audio "$fix/audio.s16" --out "$fix" --name "$name" --seed "$seed" \
        --mkmodel-argv "$args" --enc-row-step "$step" --max-new 48; then
        echo "FAILED: $name: oracle"
        failed=$((failed + 1))
    fi
    rm -f "$work/$name.bin"
    echo "== $name took $((SECONDS - t0)) s"
}

# (A) small custom shape, English-only, F32.
one en-d64-f32 1 1 --dims tiny.en --n-audio-state 64 --n-text-state 64 --n-audio-head 4 \
    --n-text-head 4 --n-audio-layer 2 --n-text-layer 2 --ftype f32
# (B) the real tiny shape, multilingual, F16 weights (as released).
one tiny-f16 2 5 --dims tiny --ftype f16
# (C) the real tiny shape, multilingual, F32.
one tiny-f32 3 5 --dims tiny --ftype f32

echo "== fixtures"
ls -l "$fix"
du -sh "$fix"
tar -C "$work" -cf "$OUT/fixtures.tar" whisper
echo "failed: $failed"
rm -rf "$work"
exit $((failed > 0))

#!/bin/sh
# decode-accuracy.sh: word error rate of batched against sequential decoding,
# per model and compute type, on real speech with known utterance times
# (bench/RESULTS.md, "Batched decoding: accuracy").
#
#   TAPEDECK_BIN=build/tapedeck bench/decode-accuracy.sh [MODELS] [COMPUTES]
#
# MODELS (default "tiny.en base") must be installed (`tapedeck models`);
# COMPUTES defaults to "int8 f32"; BEAM (default: tapedeck's, 5) the beam
# size (1: greedy); MODES (default "sequential batched") the modes. Three
# inputs:
#   - the five LibriVox utterances of pocketsphinx-testdata, one scene each;
#   - ../shared/whisper/jfk.wav;
#   - a 10-minute scene made of those clips with 1-3 s pauses and, between
#     some, tones, hiss and hum (tests/e2e/longscene.py, seed 1), scored for
#     lost and doubled utterances and words where nobody speaks.
# Prints one line per (input, model, compute, mode).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
TD=${TAPEDECK_BIN:-$here/../build/tapedeck}
models=${1:-tiny.en base}
computes=${2:-int8 f32}
beam=${BEAM:+--beam-size $BEAM}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
LV=/usr/share/pocketsphinx/test/data/librivox
SHARED=$here/../../shared/whisper

python3 "$here/../tests/e2e/longscene.py" make "$work/scene10.wav" 600 1 >/dev/null

for m in $models; do
    for c in $computes; do
        for mode in ${MODES:-sequential batched}; do
            tag="$m $c $mode"
            # the long scene
            d="$work/long-$m-$c-$mode"
            mkdir -p "$d"
            cp "$work/scene10.wav" "$d/scene10.wav"
            # shellcheck disable=SC2086  # beam is empty or one option with its value
            "$TD" run "$d" --engine whisper --model "$m" --compute "$c" --decode "$mode" \
                $beam --language en --formats json --no-progress -q ||
                { echo "$tag: run failed"; continue; }
            python3 "$here/../tests/e2e/longscene.py" score "$work/scene10.wav.json" \
                "$d/scene10.json" "10-min scene, $tag" | sed -n 1p
            # the LibriVox clips and jfk.wav
            if [ -d "$LV" ]; then
                d="$work/lv-$m-$c-$mode"
                mkdir -p "$d"
                cp "$LV"/*.wav "$d/"
                # shellcheck disable=SC2086
                "$TD" run "$d" --engine whisper --model "$m" --compute "$c" --decode "$mode" \
                    $beam --language en --no-progress -q || true
                python3 "$here/../tests/e2e/wer.py" "$d" "$LV/transcription" 1 "LibriVox, $tag" |
                    tail -n 1
            fi
            if [ -f "$SHARED/jfk.wav" ]; then
                d="$work/jfk-$m-$c-$mode"
                mkdir -p "$d"
                cp "$SHARED/jfk.wav" "$d/jfk.wav"
                # shellcheck disable=SC2086
                "$TD" run "$d" --engine whisper --model "$m" --compute "$c" --decode "$mode" \
                    $beam --language en --no-progress -q || true
                printf '%s\n' "jfk.wav, $tag: $(grep -v -- '-->' "$d/jfk.srt" | grep -v '^[0-9]*$' | tr '\n' ' ')"
            fi
        done
    done
done

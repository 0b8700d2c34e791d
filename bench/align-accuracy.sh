#!/bin/sh
# align-accuracy.sh: where tapedeck puts the words of a long scene of real
# speech, and what it loses or doubles there (issue 13; bench/RESULTS.md,
# "Word times by alignment").
#
#   TAPEDECK_BIN=build/tapedeck [BEFORE_BIN=old/tapedeck] [FW_PYTHON=venv/bin/python] \
#       [MODELS_DIR=dir] bench/align-accuracy.sh [MODELS] [COMPUTES] [MODES]
#
# The input is tests/e2e/longscene.py's 10-minute scene (seed 1: 64 real
# utterances at known offsets, 1-3 s pauses, tones, hiss and hum between
# some). Each (model, compute, mode) runs through TAPEDECK_BIN and, when
# given, BEFORE_BIN (a build from before word alignment, for the "before"
# column); with FW_PYTHON (a throwaway virtual environment holding
# faster-whisper 1.2.1) each (model, compute) also runs through
# bench/fw-words.py with word_timestamps=True, on the CTranslate2 weights
# in the weights cache. Every transcript is scored by longscene.py: WER,
# utterances lost and doubled, words where nobody speaks, matched words
# whose time lies more than 0.5 s outside their own utterance, and matched
# words out of time order. One line per run, and its JSON to $OUT (default
# ./align-accuracy.jsonl).
#
# MODELS default "tiny.en base", COMPUTES "int8 f32", MODES "sequential
# batched"; MODELS_DIR is passed as --models-dir; SKIP lists runs to leave
# out, as TAG-MODEL-COMPUTE-MODE (before-base-f32-batched ...).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
TD=${TAPEDECK_BIN:-$here/../build/tapedeck}
models=${1:-tiny.en base}
computes=${2:-int8 f32}
modes=${3:-sequential batched}
out=${OUT:-$PWD/align-accuracy.jsonl}
cache=${TAPEDECK_WEIGHTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/weights}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
md=""
[ -n "${MODELS_DIR:-}" ] && md="--models-dir $MODELS_DIR"

python3 "$here/../tests/e2e/longscene.py" make "$work/scene10.wav" 600 1 >/dev/null

score() { # LABEL JSON
    python3 "$here/../tests/e2e/longscene.py" score "$work/scene10.wav.json" "$2" "$1" >"$work/s"
    sed -n 1p "$work/s"
    tail -n 1 "$work/s" >>"$out"
}

run_td() { # BIN TAG MODEL COMPUTE MODE
    case " ${SKIP:-} " in *" $2-$3-$4-$5 "*) return 0 ;; esac
    d="$work/$2-$3-$4-$5"
    mkdir -p "$d"
    cp "$work/scene10.wav" "$d/scene10.wav"
    t0=$(date +%s)
    # shellcheck disable=SC2086  # md is empty or one option with its value
    if "$1" run "$d" --engine whisper --model "$3" --compute "$4" --decode "$5" $md \
        --language en --formats json --no-progress -q; then
        score "tapedeck $2, $3 $4 $5 ($(($(date +%s) - t0)) s)" "$d/scene10.json"
    else
        echo "tapedeck $2, $3 $4 $5: run failed"
    fi
}

for m in $models; do
    for c in $computes; do
        for mode in $modes; do
            run_td "$TD" after "$m" "$c" "$mode"
            [ -n "${BEFORE_BIN:-}" ] && run_td "$BEFORE_BIN" before "$m" "$c" "$mode"
        done
        if [ -n "${FW_PYTHON:-}" ] && [ -d "$cache/ct2/$m" ]; then
            "$FW_PYTHON" "$here/fw-words.py" "$cache/ct2/$m" "$c" 2 "$work/scene10.wav" \
                "$work/fw-$m-$c.json" >"$work/fwlog" 2>&1 &&
                score "faster-whisper 1.2.1 word_timestamps, $m $c ($(tail -n 1 "$work/fwlog"))" \
                    "$work/fw-$m-$c.json" ||
                { echo "faster-whisper, $m $c: failed"; tail -n 3 "$work/fwlog"; }
        fi
    done
done

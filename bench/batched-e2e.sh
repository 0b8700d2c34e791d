#!/bin/sh
# batched-e2e.sh: whole-process speed of tapedeck's sequential and batched
# decoding, beside faster-whisper's, on real speech (bench/RESULTS.md,
# "Batched decoding: speed").
#
#   TAPEDECK_BIN=build/tapedeck FW_PYTHON=/path/to/venv/bin/python \
#       bench/batched-e2e.sh [ROUNDS] [THREADS]
#
# PARTS (default "long short small") picks the inputs; BEAMS (default
# "5 1") the beam sizes; MODES (default "sequential batched streams1
# before") tapedeck's columns.
#
# Inputs: the 10-minute scene of tests/e2e/longscene.py (seed 1: 64 real
# utterances, 1-3 s pauses, tones, hiss and hum between some), and an
# archive of twenty one-minute scenes cut from a 20-minute one (seed 2);
# tapedeck's batched mode runs it with one scene at a time per worker
# (--streams 1) and with two (--streams 2, the default), whose windows
# share each decoder step.
# Model: base, int8, the same CTranslate2 weights for all (tapedeck imports
# them; faster-whisper reads them); beam 5 and greedy; THREADS threads
# (default 2); language en; rounds interleaved (default 3), the median
# reported. faster-whisper (1.2, in a throwaway virtual environment: never a
# dependency of tapedeck) is skipped when FW_PYTHON is unset.
# small: no complete real weights exist on the package index, so it runs
# with random weights of small's dimensions and 64 scripted tokens per
# window (the CPU backend's TD_WHISPER_BENCH_TOKENS hook), tapedeck only.
# Each cell gives wall seconds and CPU seconds (user + sys, /usr/bin/time)
# of the whole process: on a shared machine the CPU seconds are what the
# load does not change. TAPEDECK_BEFORE_BIN (optional): another tapedeck
# whose batched mode runs in the same rounds (a "before" column).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
TD=${TAPEDECK_BIN:-$here/../build/tapedeck}
MK=${MKMODEL_BIN:-$(dirname "$TD")/tapedeck-mkmodel}
rounds=${1:-3}
threads=${2:-2}
parts=${PARTS:-long short small}
beams=${BEAMS:-5 1}
has() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
cache=${TAPEDECK_WEIGHTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/weights}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TAPEDECK_MODELS_DIR="$work/models"
mkdir -p "$TAPEDECK_MODELS_DIR"
[ -f "$cache/ct2/base/model.bin" ] || { echo "batched-e2e: no base weights in $cache"; exit 1; }
"$TD" models import "$cache/ct2/base" >/dev/null

python3 "$here/../tests/e2e/longscene.py" make "$work/scene10.wav" 600 1 >/dev/null
python3 "$here/../tests/e2e/longscene.py" make "$work/scene20.wav" 1200 2 >/dev/null
mkdir -p "$work/long" "$work/short"
cp "$work/scene10.wav" "$work/long/"
for i in $(seq 0 19); do
    ffmpeg -nostdin -loglevel error -y -ss $((i * 60)) -t 60 -i "$work/scene20.wav" \
        "$work/short/scene_$(printf %02d "$i").wav"
done
short_files=$(ls "$work"/short/*.wav)

# time_it LABEL COMMAND...: wall seconds of the whole command into
# $work/t.LABEL, its CPU seconds (user + sys) into $work/c.LABEL
time_it() {
    label=$1
    shift
    /usr/bin/time -f '%e %U %S' -o "$work/time.$label" "$@" >"$work/out.$label" 2>&1 ||
        { echo "$label failed: $(tail -n 3 "$work/out.$label")"; return 0; }
    awk '{print $1}' "$work/time.$label" >>"$work/t.$label"
    awk '{printf "%.2f\n", $2 + $3}' "$work/time.$label" >>"$work/c.$label"
}

for _ in $(seq 1 "$rounds"); do
    for beam in $beams; do
        for input in long short; do
            has "$input" || continue
            for mode in ${MODES:-sequential batched streams1 before}; do
                [ "$mode" = streams1 ] && [ "$input" = long ] && continue
                [ "$mode" = before ] && [ -z "${TAPEDECK_BEFORE_BIN:-}" ] && continue
                dm=$mode streams=2 bin=$TD
                [ "$mode" = streams1 ] && dm=batched streams=1
                [ "$mode" = before ] && dm=batched bin=$TAPEDECK_BEFORE_BIN
                time_it "$input-b$beam-td-$mode" "$bin" run "$work/$input" --model base --compute int8 \
                    --decode "$dm" --streams "$streams" --beam-size "$beam" --threads "$threads" \
                    --workers 1 --language en --force --no-progress -q
            done
            if [ -n "${FW_PYTHON:-}" ]; then
                files=$work/scene10.wav
                [ "$input" = short ] && files=$short_files
                # shellcheck disable=SC2086
                time_it "$input-b$beam-fw-batched" "$FW_PYTHON" "$here/fw-run.py" "$cache/ct2/base" \
                    "$threads" "$beam" batched $files
            fi
        done
    done
done

# small, random weights of its dimensions, scripted 64 tokens per window
has small && "$MK" --dims small --out "$TAPEDECK_MODELS_DIR/ggml-small.bin" >/dev/null
for _ in $(seq 1 "$rounds"); do
    has small || break
    for beam in $beams; do
        for mode in sequential batched; do
            TD_WHISPER_BENCH_TOKENS=64 time_it "long-b$beam-small-$mode" "$TD" run "$work/long" \
                --model small --compute int8 --decode "$mode" --beam-size "$beam" \
                --threads "$threads" --workers 1 --language en --force --no-progress -q
        done
    done
done

median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# cell LABEL: "WALL s / CPU s" (medians), or "-"
cell() {
    if [ -f "$work/t.$1" ]; then
        echo "$(median "$work/t.$1") s / $(median "$work/c.$1") s"
    else
        echo "-"
    fi
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
echo "wall / CPU (user + sys) seconds, median of $rounds round(s)"
echo "| input | model | beam | tapedeck sequential | tapedeck batched, before | tapedeck batched, 1 scene at once | tapedeck batched | batched speed-up (wall, CPU) | faster-whisper batched |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for input in long short; do
    has "$input" || continue
    for beam in $beams; do
        p=$work/t.$input-b$beam-td
        q=$work/c.$input-b$beam-td
        up="$(ratio "$(median "$p-sequential")" "$(median "$p-batched")"), $(ratio "$(median "$q-sequential")" "$(median "$q-batched")")"
        name="10-min scene"
        [ "$input" = short ] && name="20 one-minute scenes"
        echo "| $name | base (real) | $beam | $(cell "$input-b$beam-td-sequential") | $(cell "$input-b$beam-td-before") | $(cell "$input-b$beam-td-streams1") | $(cell "$input-b$beam-td-batched") | $up | $(cell "$input-b$beam-fw-batched") |"
    done
done
for beam in $beams; do
    has small || break
    echo "| 10-min scene | small (random, 64 tokens/window) | $beam | $(cell "long-b$beam-small-sequential") | - | - | $(cell "long-b$beam-small-batched") | $(ratio "$(median "$work/c.long-b$beam-small-sequential")" "$(median "$work/c.long-b$beam-small-batched")") (CPU) | - |"
done

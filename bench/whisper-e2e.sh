#!/bin/sh
# whisper-e2e.sh: end-to-end real-time factor of a Whisper subtitle run on
# the CPU, for tiny, base and small.
#
#   bench/whisper-e2e.sh [MINUTES] [TOKENS] [MODELS] [BEAMS] [COMPUTES]
#       (defaults: 10, 64, "tiny base small", "5 1", "int8 f32")
#
# One scene of MINUTES of real speech (pocketsphinx-testdata's LibriVox
# utterances looped, AAC, under generated 160x120 H.264 video in mp4) is
# run through the whole job: `tapedeck run DIR --engine whisper --model M
# --threads 2 --devices cpu --workers 1 --beam-size B --compute C` (media decode,
# voice-activity detector, log-mel, language detection, encoder, decoder,
# subtitle files), with random-weight F16 models of the standard sizes
# written by tapedeck-mkmodel.
#
# Random weights decode garbage of any length (the 224-token cap, then
# every temperature fallback), so the script sets TD_WHISPER_BENCH_TOKENS
# (see cpu.c, bench_script): the whole network still runs for every token,
# but the logits are replaced by a confident script of TOKENS ordinary
# tokens and then the end of text, so every 30-s window decodes about
# TOKENS tokens at temperature 0, without fallback, as clear speech does.
# The hook's counts (encoder windows, decode calls, tokens) are printed
# with the row, so what was timed is on record.
#
# Prints one Markdown table row per model and beam size: wall seconds,
# real-time factor (audio seconds per wall second), worker peak RSS
# (VmHWM, sampled every 0.2 s), and the counts.
set -eu
bin=${TAPEDECK_BIN:-build/tapedeck}
mk=${MKMODEL_BIN:-build/tapedeck-mkmodel}
minutes=${1:-10}
tokens=${2:-64}
models=${3:-tiny base small}
beams=${4:-5 1}
computes=${5:-int8 f32}
src=/usr/share/pocketsphinx/test/data/librivox
[ -d "$src" ] || { echo "whisper-e2e.sh: needs pocketsphinx-testdata" >&2; exit 1; }
[ -x "$bin" ] && [ -x "$mk" ] || { echo "whisper-e2e.sh: build first (make)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ls "$src"/*.wav | sed "s/^/file '/; s/$/'/" >"$work/list"
ffmpeg -nostdin -loglevel error -f concat -safe 0 -i "$work/list" -c copy "$work/speech.wav"
secs=$((minutes * 60))
mkdir -p "$work/scene" "$work/models"
ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=160x120:rate=5" \
    -stream_loop -1 -i "$work/speech.wav" -t "$secs" -map 0:v -map 1:a \
    -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -b:a 64k "$work/scene/scene.mp4"

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
echo "machine: $(nproc) CPUs, $cpu; $(date +%Y-%m-%d)"
echo "scene: $minutes min of looped LibriVox speech (mp4, AAC); $tokens scripted tokens per window"
echo
echo "| model | compute | beam | wall s | real-time factor | worker peak RSS MiB | encoder windows | decode calls | tokens (rows) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for m in $models; do
    "$mk" --dims "$m" --seed 1 --out "$work/models/ggml-$m.bin" >/dev/null
    for c in $computes; do
    for beam in $beams; do
        rm -f "$work"/scene/*.srt "$work"/scene/.*.done "$work"/scene/.*.failed
        log="$work/run-$m-$beam.log"
        : >"$log" # exists before the run starts writing it (the sampler reads it)
        start=$(date +%s.%N)
        TD_WHISPER_BENCH_TOKENS=$tokens "$bin" run "$work/scene" --engine whisper --model "$m" \
            --models-dir "$work/models" --threads 2 --workers 1 --devices cpu \
            --beam-size "$beam" --compute "$c" --no-progress -v >"$log" 2>&1 &
        sup=$!
        peak=0
        wpid=""
        while kill -0 "$sup" 2>/dev/null; do
            [ -z "$wpid" ] && wpid=$(sed -n 's/.*\[worker-start\] PID=\([0-9]*\).*/\1/p' "$log" | head -n1)
            if [ -n "$wpid" ]; then
                hwm=$(awk '/VmHWM/ {print $2}' "/proc/$wpid/status" 2>/dev/null || true)
                [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
            fi
            sleep 0.2
        done
        rc=0
        wait "$sup" || rc=$?
        end=$(date +%s.%N)
        if [ "$rc" -ne 0 ]; then
            echo "whisper-e2e.sh: $m beam $beam failed (exit $rc); log:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        hook=$(grep -h 'whisper-bench-hook' "$log" | tail -n1)
        enc=$(echo "$hook" | sed -n 's/.*encodes=\([0-9]*\).*/\1/p')
        calls=$(echo "$hook" | sed -n 's/.*decode_calls=\([0-9]*\).*/\1/p')
        toks=$(echo "$hook" | sed -n 's/.*tokens=\([0-9]*\).*/\1/p')
        awk -v s="$start" -v e="$end" -v d="$secs" -v m="$m" -v c="$c" -v b="$beam" -v p="$peak" \
            -v en="${enc:-?}" -v calls="${calls:-?}" -v t="${toks:-?}" 'BEGIN {
            w = e - s
            printf "| %s (random F16) | %s | %d | %.1f | %.1fx | %d | %s | %s | %s |\n",
                m, c, b, w, d / w, p / 1024, en, calls, t }'
    done
    done
done

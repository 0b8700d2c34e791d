#!/bin/sh
# subtitles-throughput.sh: how fast and how lean a subtitle run is.
#
#   bench/subtitles-throughput.sh [SCENES] [SCENE_SECONDS] [LONG_MINUTES]
#
# 1. Throughput: SCENES scenes (default 8) of SCENE_SECONDS (default 60) of
#    real speech (pocketsphinx-testdata's LibriVox utterances, looped) in
#    small generated video, run with one worker per core: scenes per
#    minute and audio seconds per wall second.
# 2. Memory on a long capture: one scene of LONG_MINUTES (default 20) with
#    one worker, sampling the worker's peak resident memory (VmHWM): it
#    must not grow with the length of the scene (streaming decode, bounded
#    utterances).
# Prints one Markdown table row per measurement, for bench/RESULTS.md.
set -eu
bin=${TAPEDECK_BIN:-build/tapedeck}
scenes=${1:-8}
secs=${2:-60}
long_min=${3:-20}
src=/usr/share/pocketsphinx/test/data/librivox
[ -d "$src" ] || { echo "needs pocketsphinx-testdata" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# all five utterances back to back, as one speech file to loop
ls "$src"/*.wav | sed "s/^/file '/; s/$/'/" >"$work/list"
ffmpeg -nostdin -loglevel error -f concat -safe 0 -i "$work/list" -c copy "$work/speech.wav"

make_scene() { # OUT SECONDS
    ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=160x120:rate=5" \
        -stream_loop -1 -i "$work/speech.wav" -t "$2" -map 0:v -map 1:a \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -b:a 64k "$1"
}

mkdir -p "$work/a"
i=1
while [ "$i" -le "$scenes" ]; do
    make_scene "$work/a/scene_$i.mp4" "$secs"
    i=$((i + 1))
done
cores=$(nproc)
start=$(date +%s.%N)
"$bin" run "$work/a" -q --no-progress
end=$(date +%s.%N)
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
awk -v s="$start" -v e="$end" -v n="$scenes" -v d="$secs" -v c="$cores" -v cpu="$cpu" 'BEGIN {
    w = e - s
    printf "| throughput | %d scenes x %d s, %d workers | %.1f s wall | %.1f scenes/min | %.1f audio s per wall s | %s |\n",
        n, d, c, w, n * 60 / w, n * d / w, cpu }'

# long capture, one worker, peak RSS sampled from /proc
mkdir -p "$work/long"
make_scene "$work/long/capture.mp4" $((long_min * 60))
: >"$work/long.log"
"$bin" run "$work/long" --workers 1 --no-progress >"$work/long.log" 2>&1 &
sup=$!
peak=0
wpid=""
while kill -0 "$sup" 2>/dev/null; do
    [ -z "$wpid" ] && wpid=$(sed -n 's/.*\[worker-start\] PID=\([0-9]*\).*/\1/p' "$work/long.log" | head -n1)
    if [ -n "$wpid" ]; then
        hwm=$(awk '/VmHWM/ {print $2}' "/proc/$wpid/status" 2>/dev/null || true)
        [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    fi
    sleep 0.5
done
wait "$sup"
rate=$(sed -n 's/.*\[checkpoint\].*| \([0-9.]*\)x real time.*/\1/p' "$work/long.log")
printf '| long capture | 1 scene x %d min, 1 worker | worker peak RSS %d MiB | %sx real time | | %s |\n' \
    "$long_min" $((peak / 1024)) "$rate" "$cpu"

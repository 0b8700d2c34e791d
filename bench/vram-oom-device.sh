#!/bin/sh
# vram-oom-device.sh: out of memory in the middle of a run ([vram-safety])
# on an NVIDIA machine, for bench/RESULTS.md ("GPU memory per card").
#
#   ./bench/vram-oom-device.sh pack BIN MKMODEL DIR   (here: bundle, scenes)
#   ./bench/vram-oom-device.sh run DIR OUT            (on the GPU machine,
#       with Vulkan's loader installed and VK_DRIVER_FILES set)
#
# run makes random-weight base.en and tiny.en (the released dimensions)
# with the bundled tapedeck-mkmodel and decodes four one-minute speech
# scenes with one GPU worker (base.en, batch 16, two scenes at once, beam
# 5). A second process (PyTorch, grab.py) waits until the worker decodes
# (a scene handed out and the card busy), takes all but GRAB_LEAVE_MIB of
# the card's free memory, holds it GRAB_HOLD_S seconds (the worker's
# memory was all allocated at open: nothing should fail), then makes the
# worker's next Vulkan submission fail as out of device memory
# (TAPEDECK_TEST_VK_FAIL_SUBMIT=usr2: what a driver returns when it finds
# no memory for the work) and from then on takes whatever memory comes
# free beyond GRAB_LEAVE_MIB, as another program would: the worker's
# reopens meet a card really taken. nvidia-smi is sampled every 200 ms
# (the card) and every second (each process). Logs go to OUT.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:?usage: vram-oom-device.sh pack BIN MKMODEL DIR | run DIR OUT}
fail() { echo "vram-oom-device: $*" >&2; exit 1; }

if [ "$mode" = pack ]; then
    bin=${2:?BIN} mk=${3:?MKMODEL} dir=${4:?DIR}
    mkdir -p "$dir/scenes"
    PACK=bundle "$here/restore-device.sh" pack "$bin" "$dir" >/dev/null
    cp "$mk" "$dir/mkmodel"
    patchelf --set-interpreter /tmp/tapedeck-bundle/lib/$(basename "$(patchelf --print-interpreter "$mk")") \
        --force-rpath --set-rpath /tmp/tapedeck-bundle/lib "$dir/mkmodel"
    T=$(mktemp -d)
    trap 'rm -rf "$T"' EXIT
    i=0
    for text in "The quick brown fox jumps over the lazy dog while the children play in the garden." \
        "We drove to the lake on Sunday and everybody went swimming before lunch." \
        "Grandmother told the story of the winter when the river froze over." \
        "Happy birthday, blow out the candles and make a wish before the cake melts."; do
        i=$((i + 1))
        espeak-ng -v en-us -s 150 -w "$T/s.wav" "$text" || fail "espeak-ng"
        # the sentence, then a second of silence, again and again for 60 s
        ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=160x120:rate=5" \
            -stream_loop -1 -i "$T/s.wav" -t 60 -filter_complex "[1:a]apad=pad_dur=1[a]" -map 0:v -map "[a]" \
            -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -b:a 32k "$dir/scenes/scene_$i.mp4" ||
            fail "ffmpeg"
    done
    cp "$0" "$dir/vram-oom-device.sh"
    cp "$here/vram-oom-grab.py" "$dir/grab.py"
    du -sh "$dir"
    exit 0
fi

[ "$mode" = run ] || fail "unknown mode $mode"
dir=$(cd "${2:?DIR}" && pwd)
out=${3:?OUT}
mkdir -p /tmp/tapedeck-bundle "$out"
tar xJf "$dir/bundle.tar.xz" -C /tmp/tapedeck-bundle
TD=/tmp/tapedeck-bundle/tapedeck
M=/tmp/vram-models A=/tmp/vram-archive
rm -rf "$M" "$A"
mkdir -p "$M" "$A"
"$dir/mkmodel" --dims base.en --seed 1 --out "$M/ggml-base.en.bin" >/dev/null
"$dir/mkmodel" --dims tiny.en --seed 2 --out "$M/ggml-tiny.en.bin" >/dev/null
cp "$dir/scenes/"*.mp4 "$A/"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nvidia-smi --query-gpu=timestamp,memory.used,memory.free,utilization.gpu --format=csv,noheader -lms 200 \
    >"$out/smi.csv" 2>&1 &
smi=$!
(while :; do
    echo "$(date +%T.%N | cut -c1-12) $(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | tr '\n' ';')"
    sleep 1
done) >"$out/apps.txt" 2>&1 &
apps=$!
# the grabber's CUDA context first, so that the plan sees what it leaves
PYTHONUNBUFFERED=1 python3 "$dir/grab.py" "$out/run.log" >"$out/grab.log" 2>&1 &
grab=$!
i=0
while ! grep -q '^ready' "$out/grab.log" 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 300 ] || fail "grabber not ready: $(cat "$out/grab.log")"
    sleep 0.1
done
t0=$(date +%s.%N)
TAPEDECK_MODELS_DIR=$M TAPEDECK_TEST_VK_FAIL_SUBMIT=usr2 "$TD" run "$A" --language en --model base.en \
    --allow-downgrade --batch 16 --cpu-workers 0 --no-progress -v >"$out/run.log" 2>&1 || echo "run: exit $?"
echo "run: $(python3 -c "import sys; print('%.1f' % ($(date +%s.%N) - $t0))") s"
wait "$grab" || echo "grab: exit $?"
kill "$smi" "$apps" 2>/dev/null || true
for s in "$A"/scene_*.mp4; do
    m="$A/.$(basename "$s" .mp4).subtitles.done"
    if [ -f "$m" ]; then
        python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], 'done:', d['device'], d['backend'], d['model'], 'batch', d['batch'])" "$m" "$(basename "$s")"
    else
        echo "$(basename "$s"): NOT DONE"
    fi
done
grep -E 'vram-check|vram-safety|affinity-verify\] PID=[0-9]* \| runtime|checkpoint|summary|retry|failed' "$out/run.log" | cut -c1-400
echo "--- grab"
cat "$out/grab.log"

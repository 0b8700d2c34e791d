# lib.sh: helpers for the end-to-end tests (sourced by each t_*.sh).
#
# Each test runs the real tapedeck binary ($TAPEDECK_BIN) on media made at
# test time in its own temporary directory, and exits 0 (pass), 77 (skip,
# with a one-line reason) or anything else (fail, with what went wrong).

set -u
TD=${TAPEDECK_BIN:?TAPEDECK_BIN must point at the tapedeck binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/tapedeck-e2e.XXXXXX")
# With a sanitizer build, every report (from the supervisor or any worker)
# lands in a file, and any report fails the test even if the run recovered.
# verify_asan_link_order=0: make asan-e2e preloads tests/lsan-keep-drivers.c
# (before the sanitizer's runtime).
mkdir -p "$T/.sanitizer"
chmod 1777 "$T/.sanitizer"
export ASAN_OPTIONS="log_path=$T/.sanitizer/asan:detect_leaks=1:verify_asan_link_order=0"
export UBSAN_OPTIONS="log_path=$T/.sanitizer/ubsan:print_stacktrace=1"
# Hermetic engine choice: Whisper models installed on this machine are not
# seen (tests that want Whisper make their own model and point here).
mkdir -p "$T/.models"
export TAPEDECK_MODELS_DIR="$T/.models"
cleanup() {
    rc=$?
    # kill anything this test left running, then remove its files
    if [ -n "${BG_PID:-}" ]; then kill -9 "$BG_PID" 2>/dev/null; fi
    if [ -n "$(ls -A "$T/.sanitizer" 2>/dev/null)" ]; then
        echo "FAIL: sanitizer reports:" >&2
        cat "$T/.sanitizer"/* | head -n 60 >&2
        rc=1
    fi
    chmod -R u+rwX "$T" ${EXTRA_CLEAN:-} 2>/dev/null
    rm -rf "$T" ${EXTRA_CLEAN:-}
    exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
note() { echo "  $*"; }

# speech_scene OUT TEXT [VOICE] [LEAD_SILENCE_S]: video + espeak-ng speech
speech_scene() {
    out=$1 text=$2 voice=${3:-en-us} lead=${4:-0.5}
    espeak-ng -v "$voice" -s 160 -w "$T/.speech.wav" "$text" || fail "espeak-ng failed"
    ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=160x120:rate=10" \
        -i "$T/.speech.wav" \
        -filter_complex "[1:a]adelay=delays=$(awk "BEGIN{print int($lead*1000)}"):all=1,apad=pad_dur=0.5[a]" \
        -map 0:v -map "[a]" -shortest -c:v libx264 -preset ultrafast -pix_fmt yuv420p \
        -c:a aac -b:a 48k "$out" || fail "ffmpeg failed making $out"
    rm -f "$T/.speech.wav"
}

# LibriVox utterances of pocketsphinx-testdata (71 words, transcribed in
# $LIBRIVOX/transcription), muxed into video with AAC audio as scenes are.
LIBRIVOX=/usr/share/pocketsphinx/test/data/librivox

# librivox_archive DIR: DIR/<utterance-id>.mp4 for each utterance
librivox_archive() {
    mkdir -p "$1"
    for wav in "$LIBRIVOX"/*.wav; do
        id=$(basename "$wav" .wav)
        ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=160x120:rate=10" -i "$wav" \
            -map 0:v -map 1:a -shortest -c:v libx264 -preset ultrafast -pix_fmt yuv420p \
            -c:a aac -b:a 64k "$1/$id.mp4" || fail "mux $id"
    done
}

# silent_scene OUT SECONDS
silent_scene() {
    ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc=size=160x120:rate=10" \
        -f lavfi -i anullsrc=r=22050:cl=mono -t "$2" -c:v libx264 -preset ultrafast \
        -pix_fmt yuv420p -c:a aac "$1" || fail "ffmpeg failed making $1"
}

# long_scene OUT SECONDS: a long scene with speech repeated (for crash tests)
long_scene() {
    espeak-ng -v en-us -s 160 -w "$T/.speech.wav" \
        "The quick brown fox jumps over the lazy dog while the children play in the garden." ||
        fail "espeak-ng failed"
    ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=160x120:rate=5" \
        -stream_loop -1 -i "$T/.speech.wav" -t "$2" -map 0:v -map 1:a \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -b:a 48k "$1" ||
        fail "ffmpeg failed making $1"
    rm -f "$T/.speech.wav"
}

# marker paths
done_marker() { d=$(dirname "$1"); b=$(basename "$1"); echo "$d/.${b%.*}.subtitles.done"; }
failed_marker() { d=$(dirname "$1"); b=$(basename "$1"); echo "$d/.${b%.*}.subtitles.failed"; }

assert_done() {
    [ -f "$(done_marker "$1")" ] || fail "no .done marker for $1"
    [ -s "${1%.*}.srt" ] || [ -f "${1%.*}.srt" ] || fail "no SRT for $1"
}

# no temporary files anywhere under a directory
assert_no_temp() {
    left=$(find "$1" -name '.tdtmp.*' | head -n 5)
    [ -z "$left" ] || fail "temporary files left: $left"
}

# json_get FILE EXPR: print a field of a JSON file (python3 is in setup)
json_get() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1],"rb")); print(eval(sys.argv[2],{"d":d}))' "$1" "$2"
}

# wait_for_log FILE PATTERN TIMEOUT_S
wait_for_log() {
    i=0
    while ! grep -q -- "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -gt $(($3 * 10)) ] && return 1
        sleep 0.1
    done
    return 0
}

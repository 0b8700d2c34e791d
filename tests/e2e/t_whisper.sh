# t_whisper: the Whisper engine end to end, with random-weight models made
# by tapedeck-mkmodel (what it transcribes is noise; the path is what is
# tested): `auto` takes whisper once a model is installed and says which,
# `tapedeck models` lists it, a run writes subtitles and markers naming the
# model, a bad model file is a clear error, and with ../shared's real
# vocabulary the whole path runs over jfk.wav.
. "$(dirname "$0")/lib.sh"

MK=${TAPEDECK_MKMODEL:-$(dirname "$TD")/tapedeck-mkmodel}
[ -x "$MK" ] || skip "tapedeck-mkmodel not built ($MK)"
SMALL="--n-audio-state 64 --n-audio-head 2 --n-audio-layer 2 --n-text-state 64 --n-text-head 2 --n-text-layer 2"

mkdir -p "$T/a"
speech_scene "$T/a/scene_0001.mp4" "Happy birthday to you. Make a wish."
silent_scene "$T/a/scene_0002.mp4" 3

# No model: auto is sphinx, and says why.
"$TD" run "$T/a" --dry-run >"$T/dry0" 2>&1 || fail "dry run exit $?: $(cat "$T/dry0")"
grep -q 'engine: *sphinx (auto: whisper cannot run: no Whisper model installed' "$T/dry0" ||
    fail "auto without a model: $(grep engine "$T/dry0")"
"$TD" models >"$T/models0" || fail "models exit $?"
grep -q 'No Whisper model installed' "$T/models0" || fail "models with none: $(cat "$T/models0")"

# A model installed in the (test's) model folder: auto takes it.
# shellcheck disable=SC2086
"$MK" $SMALL --vocab synthetic --seed 7 --out "$TAPEDECK_MODELS_DIR/ggml-tiny.bin" >"$T/mk" 2>&1 ||
    fail "mkmodel exit $?: $(cat "$T/mk")"
"$TD" models >"$T/models1" || fail "models exit $?: $(cat "$T/models1")"
grep -q '^\* tiny .*F16 .*custom 64x2 .*99 languages .*MiB' "$T/models1" ||
    fail "models listing: $(cat "$T/models1")"
"$TD" run "$T/a" --dry-run >"$T/dry1" 2>&1 || fail "dry run exit $?"
grep -q 'engine: *whisper, model tiny (auto: a Whisper model is installed)' "$T/dry1" ||
    fail "auto with a model: $(grep engine "$T/dry1")"

"$TD" run "$T/a" --beam-size 1 --formats srt,json >"$T/log1" 2>&1 || fail "run exit $?: $(tail "$T/log1")"
assert_done "$T/a/scene_0001.mp4"
assert_done "$T/a/scene_0002.mp4"
assert_no_temp "$T/a"
m=$(done_marker "$T/a/scene_0001.mp4")
[ "$(json_get "$m" 'd["engine"]')" = whisper ] || fail "marker engine: $(cat "$m")"
[ "$(json_get "$m" 'd["model"]')" = tiny ] || fail "marker model: $(cat "$m")"
python3 -m json.tool "$T/a/scene_0001.json" >/dev/null || fail "JSON output"
lang=$(json_get "$T/a/scene_0001.json" 'd["language"]')
[ -n "$lang" ] && [ "$lang" != None ] || fail "no language detected: $(head -c 300 "$T/a/scene_0001.json")"
note "random-weight model detected language '$lang' for scene 1"
# the silent scene never reaches the model: no cues
[ ! -s "$T/a/scene_0002.srt" ] || fail "silent scene has cues: $(head "$T/a/scene_0002.srt")"

# --language de with an English-only model is refused before any work.
# shellcheck disable=SC2086
"$MK" $SMALL --n-vocab 51864 --vocab synthetic --seed 8 --out "$T/ggml-small.en.bin" >/dev/null 2>&1 ||
    fail "mkmodel .en"
rc=0
"$TD" run "$T/a" --engine whisper --model "$T/ggml-small.en.bin" --language de --force \
    >"$T/log2" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "English-only model with --language de: exit $rc, want 2 (a bad value): $(tail -3 "$T/log2")"
grep -q "English-only" "$T/log2" || fail "message: $(tail -3 "$T/log2")"

# A damaged model file: a clear error naming it, exit 3, nothing written.
head -c 1000000 "$TAPEDECK_MODELS_DIR/ggml-tiny.bin" >"$T/ggml-cut.bin"
rc=0
"$TD" run "$T/a" --engine whisper --model "$T/ggml-cut.bin" --force >"$T/log3" 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "cut model: exit $rc, want 3: $(tail -3 "$T/log3")"
grep -q "ggml-cut.bin" "$T/log3" || fail "cut model message: $(tail -3 "$T/log3")"

# The real vocabulary (from ../shared) over real speech: audio, mel,
# decode, segments, SRT.
SHARED=${TAPEDECK_SHARED:-$(cd "$(dirname "$0")/../../.." && pwd)/shared}
if [ -f "$SHARED/whisper/jfk.wav" ] && [ -f "$SHARED/whisper/tiny.en.header.bin" ]; then
    mkdir -p "$T/j"
    cp "$SHARED/whisper/jfk.wav" "$T/j/jfk.wav"
    "$MK" --dims tiny.en --vocab "$SHARED/whisper/tiny.en.header.bin" --seed 3 \
        --out "$T/ggml-tiny.en.bin" >/dev/null 2>&1 || fail "mkmodel with the real vocabulary"
    "$TD" run "$T/j" --engine whisper --model "$T/ggml-tiny.en.bin" --beam-size 1 \
        --formats srt,vtt,json >"$T/log4" 2>&1 || fail "jfk run exit $?: $(tail "$T/log4")"
    assert_done "$T/j/jfk.wav"
    [ "$(json_get "$T/j/jfk.json" 'd["language"]')" = en ] || fail "jfk language"
    n=$(json_get "$T/j/jfk.json" 'len(d["segments"])')
    note "jfk.wav with a random tiny.en model (real vocabulary): $n segment(s)"
    if [ -s "$T/j/jfk.srt" ]; then
        grep -Eq '^[0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3} --> ' "$T/j/jfk.srt" || fail "jfk SRT timing"
        note "first cue: $(sed -n 3p "$T/j/jfk.srt" | cut -c1-60)"
    fi
else
    note "jfk.wav path skipped: no $SHARED/whisper (the reference data is not part of a checkout)"
fi

# t_recognition: real speech (pocketsphinx-testdata's LibriVox utterances)
# muxed into video; the SRT text's word error rate against the reference
# transcriptions stays below a measured bound.
. "$(dirname "$0")/lib.sh"

src=/usr/share/pocketsphinx/test/data/librivox
[ -f "$src/transcription" ] || skip "pocketsphinx-testdata not installed"
# Measured through the whole path (AAC in mp4, libav* decode, resample,
# sphinx with Debian 12's en-us model, cues, SRT): 0.282 over the 71 words
# (20 errors); README, Accuracy. The bound allows two more errors, for
# small numeric differences between machines and library builds.
BOUND=${WER_BOUND:-0.31}

mkdir -p "$T/a"
for wav in "$src"/*.wav; do
    id=$(basename "$wav" .wav)
    ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=160x120:rate=10" -i "$wav" \
        -map 0:v -map 1:a -shortest -c:v libx264 -preset ultrafast -pix_fmt yuv420p \
        -c:a aac -b:a 64k "$T/a/$id.mp4" || fail "mux $id"
done
"$TD" run "$T/a" --engine sphinx >"$T/log" 2>&1 || fail "run exit $?: $(tail "$T/log")"
python3 "$(dirname "$0")/wer.py" "$T/a" "$src/transcription" "$BOUND" "sphinx" ||
    fail "word error rate above bound"
exit 0

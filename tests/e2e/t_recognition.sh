# t_recognition: real speech (pocketsphinx-testdata's LibriVox utterances)
# muxed into video; the SRT text's word error rate against the reference
# transcriptions stays below a measured bound.
. "$(dirname "$0")/lib.sh"

[ -f "$LIBRIVOX/transcription" ] || skip "pocketsphinx-testdata not installed"
# Measured through the whole path (AAC in mp4, libav* decode, resample,
# sphinx with Debian 12's en-us model, cues, SRT): 0.282 over the 71 words
# (20 errors); README, Accuracy. The bound allows two more errors, for
# small numeric differences between machines and library builds.
BOUND=${WER_BOUND:-0.31}

librivox_archive "$T/a"
"$TD" run "$T/a" --engine sphinx >"$T/log" 2>&1 || fail "run exit $?: $(tail "$T/log")"
python3 "$(dirname "$0")/wer.py" "$T/a" "$LIBRIVOX/transcription" "$BOUND" "sphinx" ||
    fail "word error rate above bound"
exit 0

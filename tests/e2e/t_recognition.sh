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
python3 - "$T/a" "$src/transcription" "$BOUND" <<'PY' || fail "word error rate above bound"
import re, sys, os
archive, trans, bound = sys.argv[1], sys.argv[2], float(sys.argv[3])
def words(s):
    return re.sub(r"[^a-z' ]", " ", s.lower()).split()
def distance(r, h):
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)]
errors = total = 0
for line in open(trans):
    m = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
    ref, uid = words(m.group(1)), m.group(2)
    srt = open(os.path.join(archive, uid + ".srt"), encoding="utf-8").read()
    text = " ".join(l for l in srt.splitlines() if l and not l.isdigit() and "-->" not in l)
    hyp = words(text)
    e = distance(ref, hyp)
    errors += e; total += len(ref)
    print(f"  {uid}: WER {e/len(ref):.3f}  hyp: {' '.join(hyp)}")
wer = errors / total
print(f"  overall WER {wer:.3f} over {total} words (bound {bound})")
sys.exit(0 if wer <= bound else 1)
PY
exit 0

#!/usr/bin/env python3
"""longscene.py: a long scene of real speech with known utterance times, and
the scores of a transcript of it.

  longscene.py make OUT.wav SECONDS [SEED]
      Rotates through pocketsphinx-testdata's LibriVox utterances and
      ../shared/whisper/jfk.wav (when present), with pauses of 1-3 s between
      them and, every few utterances, 2-6 s of something that is not speech:
      music-like tones (a chord of sines), hiss (white noise) or hum. Writes
      OUT.wav (16 kHz mono) and OUT.wav.json: each utterance's id, start, end
      and reference words, and each non-speech stretch.

  longscene.py score OUT.wav.json SCENE.json [LABEL]
      Scores tapedeck's JSON output (segments with word times) against the
      manifest and prints one line of figures:
        WER over the whole file (Levenshtein over words, case and punctuation
        ignored), utterances lost (more than half of their words deleted),
        utterances doubled (a run of inserted words that is itself one of the
        utterances, at most 30 % wrong), words emitted where nobody speaks (a
        word whose middle lies more than 1 s from every utterance), and words
        placed outside their own utterance's span (matched words whose middle
        lies more than 0.5 s outside it), and matched words whose time is
        earlier than the matched word before them (out of order).
      The same figures as JSON on the last line, for scripts.

Only ffmpeg and the standard library: no numpy, so it runs where the tests do.
"""
import array
import json
import math
import os
import random
import re
import subprocess
import sys

RATE = 16000
LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                      "whisper")
JFK_TEXT = ("and so my fellow americans ask not what your country can do for you "
            "ask what you can do for your country")


def words(s):
    return re.sub(r"[^a-z' ]", " ", s.lower().replace("-", " ")).split()


def pcm(path):
    out = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", path, "-f", "s16le",
                          "-ac", "1", "-ar", str(RATE), "-"], check=True,
                         stdout=subprocess.PIPE).stdout
    a = array.array("h")
    a.frombytes(out)
    return a


def clips():
    """(id, samples, reference words) of every test clip there is."""
    out = []
    trans = os.path.join(LIBRIVOX, "transcription")
    if os.path.exists(trans):
        for line in open(trans, encoding="utf-8"):
            m = re.match(r"<s>(.*)</s>\s*\((.*)\)", line.strip())
            if m:
                uid = m.group(2).strip()
                out.append((uid, pcm(os.path.join(LIBRIVOX, uid + ".wav")),
                            words(m.group(1))))
    jfk = os.path.join(SHARED, "jfk.wav")
    if os.path.exists(jfk):
        out.append(("jfk", pcm(jfk), words(JFK_TEXT)))
    return out


def nonspeech(kind, n, rng):
    a = array.array("h", bytes(2 * n))
    if kind == "tones":
        notes = [rng.choice([220.0, 261.6, 293.7, 329.6, 392.0, 440.0]) for _ in range(3)]
        for i in range(n):
            t = i / RATE
            env = min(1.0, t * 4, (n - i) / RATE * 4)
            v = sum(math.sin(2 * math.pi * f * t) for f in notes) / 3
            a[i] = int(6000 * env * v)
    elif kind == "hiss":
        for i in range(n):
            a[i] = int(rng.gauss(0, 1200))
    else:  # hum: mains hum and its harmonics
        for i in range(n):
            t = i / RATE
            a[i] = int(1500 * math.sin(2 * math.pi * 50 * t) + 700 * math.sin(2 * math.pi * 150 * t))
    return a


def make(out, seconds, seed):
    rng = random.Random(seed)
    cs = clips()
    if not cs:
        sys.exit("longscene: no test clips (pocketsphinx-testdata, ../shared/whisper)")
    total = int(seconds * RATE)
    audio = array.array("h")
    utts, others = [], []
    k = 0
    while True:
        uid, s, ref = cs[k % len(cs)]
        gap = int(rng.uniform(1.0, 3.0) * RATE)
        if k % 4 == 3:  # something that is not speech, between pauses
            kind = ("tones", "hiss", "hum")[(k // 4) % 3]
            n = int(rng.uniform(2.0, 6.0) * RATE)
            if len(audio) + gap + n + gap + len(s) > total:
                break
            audio.extend(array.array("h", bytes(2 * gap)))
            others.append({"kind": kind, "start": len(audio) / RATE,
                           "end": (len(audio) + n) / RATE})
            audio.extend(nonspeech(kind, n, rng))
        if len(audio) + gap + len(s) > total:
            break
        audio.extend(array.array("h", bytes(2 * gap)))
        utts.append({"id": uid, "start": len(audio) / RATE, "end": (len(audio) + len(s)) / RATE,
                     "words": ref})
        audio.extend(s)
        k += 1
    audio.extend(array.array("h", bytes(2 * (total - len(audio)))))
    raw = out + ".raw"
    with open(raw, "wb") as f:
        audio.tofile(f)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "s16le", "-ar",
                    str(RATE), "-ac", "1", "-i", raw, out], check=True)
    os.remove(raw)
    with open(out + ".json", "w") as f:
        json.dump({"seconds": seconds, "utterances": utts, "nonspeech": others}, f, indent=1)
    n_words = sum(len(u["words"]) for u in utts)
    print(f"{out}: {seconds} s, {len(utts)} utterances, {n_words} words, "
          f"{len(others)} non-speech stretches")


def align(ref, hyp):
    """Levenshtein alignment: list of (op, i, j), op in = S D I."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        ri = ref[i - 1]
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (ri != hyp[j - 1]))
    ops, i, j = [], n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("=" if ref[i - 1] == hyp[j - 1] else "S", i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            ops.append(("D", i - 1, None))
            i -= 1
        else:
            ops.append(("I", None, j - 1))
            j -= 1
    return d[n][m], ops[::-1]


def wer_of(ref, hyp):
    return align(ref, hyp)[0] / max(1, len(ref))


def score(manifest, scene_json, label):
    man = json.load(open(manifest))
    utts = man["utterances"]
    ref, ref_utt = [], []
    for k, u in enumerate(utts):
        ref += u["words"]
        ref_utt += [k] * len(u["words"])
    doc = json.load(open(scene_json))
    hyp, hyp_t = [], []
    for seg in doc.get("segments", []):
        for w in seg.get("words", []):
            for piece in words(w.get("word", w.get("text", ""))):
                hyp.append(piece)
                hyp_t.append((w["start"] + w["end"]) / 2)
    errors, ops = align(ref, hyp)
    deleted = [0] * len(utts)
    placed_out = placed = out_of_order = 0
    last_t = None
    inserted_runs, run = [], []
    for op, i, j in ops:
        if op == "D":
            deleted[ref_utt[i]] += 1
        if op in "=S":
            u = utts[ref_utt[i]]
            placed += 1
            t = hyp_t[j]
            if t < u["start"] - 0.5 or t > u["end"] + 0.5:
                placed_out += 1
            if last_t is not None and t < last_t - 0.01:
                out_of_order += 1
            last_t = t
        if op == "I":
            run.append(j)
        elif run:
            inserted_runs.append(run)
            run = []
    if run:
        inserted_runs.append(run)
    lost = sum(1 for k, u in enumerate(utts) if deleted[k] * 2 > len(u["words"]))
    doubled = 0
    for r in inserted_runs:
        if len(r) < 4:
            continue
        text = [hyp[j] for j in r]
        if any(wer_of(u["words"], text) <= 0.3 for u in utts):
            doubled += 1
    silent_words = sum(1 for t in hyp_t
                       if all(t < u["start"] - 1.0 or t > u["end"] + 1.0 for u in utts))
    res = {"label": label, "words": len(ref), "errors": errors, "wer": errors / max(1, len(ref)),
           "utterances": len(utts), "lost": lost, "doubled": doubled,
           "words_where_silent": silent_words, "placed": placed, "placed_outside": placed_out,
           "out_of_order": out_of_order}
    print(f"{label}: WER {res['wer']:.4f} ({errors} errors / {len(ref)} words), "
          f"{lost} of {len(utts)} utterances lost, {doubled} doubled, "
          f"{silent_words} words where nobody speaks, "
          f"{placed_out} of {placed} words outside their utterance, "
          f"{out_of_order} out of time order")
    print(json.dumps(res))


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "make":
        make(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    elif len(sys.argv) >= 4 and sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "score")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

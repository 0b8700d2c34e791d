#!/usr/bin/env python3
"""wer.py ARCHIVE TRANSCRIPTION BOUND [LABEL]: word error rate of tapedeck's
SRT output against pocketsphinx-testdata's reference transcriptions.

TRANSCRIPTION holds lines "<s> words </s> (utterance-id)"; ARCHIVE holds
utterance-id.srt for each. Words are lower-cased letters and apostrophes
(punctuation and case are not errors). Prints each utterance's WER and
hypothesis, then "LABEL: WER x over N words (E errors)", and exits 1 when the
overall WER is above BOUND.
"""
import os
import re
import sys


def words(s):
    return re.sub(r"[^a-z' ]", " ", s.lower().replace("-", " ")).split()


def distance(r, h):
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)]


def srt_text(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    return " ".join(l for l in lines if l and not l.isdigit() and "-->" not in l)


def main():
    archive, trans, bound = sys.argv[1], sys.argv[2], float(sys.argv[3])
    label = sys.argv[4] if len(sys.argv) > 4 else "overall"
    errors = total = 0
    with open(trans) as f:
        for line in f:
            m = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
            if not m:
                continue
            ref, uid = words(m.group(1)), m.group(2)
            hyp = words(srt_text(os.path.join(archive, uid + ".srt")))
            e = distance(ref, hyp)
            errors += e
            total += len(ref)
            print(f"  {uid}: WER {e / len(ref):.3f}  hyp: {' '.join(hyp)}")
    wer = errors / total
    print(f"  {label}: WER {wer:.3f} over {total} words ({errors} errors; bound {bound})")
    sys.exit(0 if wer <= bound else 1)


if __name__ == "__main__":
    main()

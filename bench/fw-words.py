#!/usr/bin/env python3
"""fw-words.py MODEL_DIR COMPUTE THREADS FILE OUT.json: faster-whisper's
transcript of FILE with word_timestamps=True, written as tapedeck's JSON
output lays segments and words out ({"segments": [{"start", "end", "text",
"words": [{"start", "end", "word", "prob"}]}]}), so that
tests/e2e/longscene.py scores both alike (bench/align-accuracy.sh).

Sequential WhisperModel.transcribe with its Silero VAD filter (tapedeck
cuts silence with its own VAD too), beam 5, language en, the model's
default temperatures and thresholds. Never a dependency of tapedeck: the
benchmark runs it from a throwaway virtual environment with
faster-whisper 1.2.1. Prints the seconds the run took."""
import json
import sys
import time

t0 = time.monotonic()
from faster_whisper import WhisperModel  # noqa: E402

model_dir, compute, threads, path, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
compute = {"f32": "float32"}.get(compute, compute)
model = WhisperModel(model_dir, device="cpu", compute_type=compute, cpu_threads=threads,
                     num_workers=1)
segs, _ = model.transcribe(path, language="en", beam_size=5, vad_filter=True,
                           word_timestamps=True)
doc = {"segments": []}
for s in segs:
    doc["segments"].append({
        "start": s.start, "end": s.end, "text": s.text.strip(),
        "words": [{"start": w.start, "end": w.end, "word": w.word.strip(), "prob": w.probability}
                  for w in (s.words or [])]})
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
print(f"faster-whisper {compute}: {sum(len(s['words']) for s in doc['segments'])} words, "
      f"{time.monotonic() - t0:.2f} s")

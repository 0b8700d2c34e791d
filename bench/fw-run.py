#!/usr/bin/env python3
"""fw-run.py MODEL_DIR THREADS BEAM MODE FILE...: faster-whisper's run of the
same files, for bench/batched-e2e.sh (never a dependency of tapedeck: the
benchmark installs faster-whisper in a throwaway virtual environment).

MODE is "batched" (BatchedInferencePipeline, its Silero VAD, batch 16) or
"sequential" (WhisperModel.transcribe with its VAD filter). int8 on the CPU.
Prints the words it wrote per file and the seconds the whole run took, model
load included (the same as tapedeck's whole-process timing)."""
import sys
import time

t0 = time.monotonic()
from faster_whisper import BatchedInferencePipeline, WhisperModel  # noqa: E402

model_dir, threads, beam, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads,
                     num_workers=1)
words = 0
for path in sys.argv[5:]:
    if mode == "batched":
        pipe = BatchedInferencePipeline(model=model)
        segs, _ = pipe.transcribe(path, language="en", beam_size=beam, batch_size=16)
    else:
        segs, _ = model.transcribe(path, language="en", beam_size=beam, vad_filter=True)
    words += sum(len(s.text.split()) for s in segs)
print(f"faster-whisper {mode}: {words} words, {time.monotonic() - t0:.2f} s")

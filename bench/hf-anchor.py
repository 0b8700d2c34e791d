#!/usr/bin/env python3
"""hf-anchor.py: the transformers anchor of issue 11's GPU benchmark, run
beside build/benchbin/vulkan-bench in the same device call: Hugging Face
transformers' Whisper in fp16 with PyTorch's sdpa attention, on random
weights of the standard dimensions (speed does not depend on the values),
measured the way vulkan-bench measures tapedeck:

  - encoder: ms per 30-s window (median of --runs after a warm-up), B
    windows per call: this is issue 11's anchor ("438x at batch 16, 4.0 ms
    encoder per window"), where vulkan-bench encodes --windows windows a
    call (1 unless asked), so at B > 1 compare with its --windows B row;
  - decoder: B sequences, a 4-token prompt, then --tokens single-token
    steps with the KV cache (the greedy token of each step fed back, as
    a transcription does); ms per step and per token per sequence, the
    best of --runs after a warm-up, as vulkan-bench takes its steps;
  - x real time for a 30-s window with --tokens tokens: 30 s over
    (encoder per window + tokens x step / B).

    python3 bench/hf-anchor.py [--dims base,small,medium,large-v3]
                               [--batch 1,16] [--tokens 64] [--runs 3]

Needs a CUDA GPU, torch and transformers (the device machine's python3
has both); never run in CI, never imported by tapedeck. Prints Markdown
table rows for bench/RESULTS.md.
"""
import argparse
import statistics
import sys
import time

# name: (n_mels, n_vocab, d_model, heads, encoder layers, decoder layers)
DIMS = {
    "tiny": (80, 51865, 384, 6, 4, 4),
    "base": (80, 51865, 512, 8, 6, 6),
    "small": (80, 51865, 768, 12, 12, 12),
    "medium": (80, 51865, 1024, 16, 24, 24),
    "large-v3": (128, 51866, 1280, 20, 32, 32),
}
SOT, EN, TRANSCRIBE, NOTS = 50258, 50259, 50359, 50363


def build(torch, name):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    n_mels, n_vocab, d, heads, enc_l, dec_l = DIMS[name]
    cfg = WhisperConfig(
        vocab_size=n_vocab, num_mel_bins=n_mels, d_model=d,
        encoder_layers=enc_l, encoder_attention_heads=heads,
        decoder_layers=dec_l, decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d,
        max_source_positions=1500, max_target_positions=448,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        tie_word_embeddings=True,
    )
    with torch.device("cuda"):
        model = WhisperForConditionalGeneration(cfg)
    model = model.half().eval()
    try:
        model.set_attn_implementation("sdpa")
    except Exception as e:  # noqa: BLE001 - older versions: the config's default
        print(f"  (set_attn_implementation: {e})", file=sys.stderr)
    return model, n_mels


def timed(torch, fn, runs):
    """Median wall-clock ms of runs calls of fn after one warm-up, the GPU
    drained before and after each."""
    fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def bench(torch, name, batches, tokens, runs):
    model, n_mels = build(torch, name)
    impl = getattr(model.config, "_attn_implementation", "?")
    rows = []
    for b in batches:
        feats = torch.randn(b, n_mels, 3000, dtype=torch.float16, device="cuda")
        with torch.inference_mode():
            enc_ms = timed(torch, lambda: model.model.encoder(input_features=feats), runs) / b
            enc = model.model.encoder(input_features=feats).last_hidden_state
            prompt = torch.tensor([[SOT, EN, TRANSCRIBE, NOTS]] * b, device="cuda")

            def decode():
                out = model(encoder_outputs=(enc,), decoder_input_ids=prompt, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(tokens):
                    out = model(encoder_outputs=(enc,), decoder_input_ids=nxt,
                                past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
                return (time.perf_counter() - t0) * 1e3 / tokens

            decode()  # warm-up
            step_ms = min(decode() for _ in range(runs))
        rtf = 30000.0 / (enc_ms + tokens * step_ms / b)
        rows.append((b, enc_ms, step_ms, rtf))
        print(f"  {name} B={b}: encoder {enc_ms:.2f} ms/window, step {step_ms:.3f} ms "
              f"({step_ms / b:.3f} per token per sequence), {rtf:.0f}x real time",
              file=sys.stderr, flush=True)
        del feats, enc
        torch.cuda.empty_cache()
    del model
    torch.cuda.empty_cache()
    cells = " | ".join(f"B={b}: {e:.2f} ms + {s:.3f} ms/step, {r:.0f}x" for b, e, s, r in rows)
    print(f"| {name} (random fp16, {impl}) | {torch.cuda.get_device_name()} | {cells} |",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="base,small,medium,large-v3")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    names = a.dims.split(",")
    for n in names:
        if n not in DIMS:
            ap.error(f"--dims: {n} is not one of {', '.join(DIMS)}")
    batches = [int(x) for x in a.batch.split(",")]
    if any(b < 1 or b > 256 for b in batches) or not 1 <= a.tokens <= 400 or a.runs < 1:
        ap.error("--batch 1..256, --tokens 1..400, --runs 1 or more")
    import torch
    import transformers

    if not torch.cuda.is_available():
        print("hf-anchor: no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"hf-anchor: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}, {a.tokens} tokens a window", flush=True)
    for n in names:
        bench(torch, n, batches, a.tokens, a.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

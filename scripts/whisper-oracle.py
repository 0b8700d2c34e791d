#!/usr/bin/env python3
"""whisper-oracle.py: reference outputs of HF transformers' Whisper for a
tapedeck-mkmodel model file, or for a real model imported by `tapedeck
models import`, written as the golden fixtures that
tests/unit/test_whisper_golden.c compares tapedeck's own C Whisper with.

Never run in CI: it needs torch and transformers, which only the device
machine has (scripts/whisper-oracle-device.sh drives it there). numpy alone
is enough for the other subcommands (audio, parse, suppress, npcheck), so
the parser, the suppression rule and the fixtures can be checked anywhere.

Independence is the point: the ggml file is parsed here with numpy from the
format description (not with tapedeck's loader), the weights are loaded
strictly into transformers' WhisperForConditionalGeneration, and the
reference runs in float64 on the CPU, so that what the C code's float32
arithmetic loses is measured against an essentially exact answer. A float32
run of the same HF model is compared too, to show what float32 itself gives.

Subcommands:
  audio OUT.s16                     write the deterministic test audio
  parse MODEL                       print hparams, special ids, tensor count
  suppress MODEL_OR_HEADER          print the suppressed-token list
  oracle --model M --audio A --out DIR --name NAME --seed N --mkmodel-argv S
                                    write NAME.json, NAME.enc.f32,
                                    NAME.logits.f32 and melN.f32 into DIR
  oracle --model M --audio A.wav --out DIR --name NAME --real SOURCE
         [--mel-name F] [--teacher greedy] [--logit-col-step K]
                                    the same for a real model (no recipe: the
                                    meta records SOURCE and the file's SHA-256)
                                    and a 16 kHz mono s16 WAV; with --teacher
                                    greedy the logits are those of the greedy
                                    transcript, teacher-forced
  npcheck --model M --fixtures DIR --name NAME
                                    recompute a fixture set with a numpy-only
                                    float64 forward pass (openai's model.py
                                    written out) and print the differences:
                                    checks the HF name mapping without torch
  align --model M --fixtures DIR --name NAME --heads MODEL --out DIR
        [--tokens greedy|teacher] [--pruned-from SHA256]
                                    word alignment (issue 13): the alignment
                                    heads' cross-attention over [sot sequence,
                                    notimestamps, text, eot] for set NAME's mel
                                    and text, and HF's own token and word
                                    timestamps from it: NAME.align.f32 and
                                    NAME.align.json
  npalign --model M --fixtures DIR --name NAME --heads MODEL --out DIR
        [--tokens greedy|teacher]
                                    the same cross-attention from the
                                    numpy-only forward pass (no torch, no HF
                                    timestamps): the backend test's reference
  prune --model M --keep-json F --out OUT
                                    a copy of M whose token-embedding rows are
                                    zero except for the tokens of set F's
                                    alignment sequence (cross-attention of
                                    those tokens is unchanged; the copy
                                    compresses to fit the device's carry)

Fixture files are raw little-endian float32, row-major; the meta JSON says
their shapes and how rows and columns were subsampled.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import time
import traceback

import numpy as np

GGML_MAGIC = 0x67676D6C
RATE = 16000
N_FFT = 400
HOP = 160
WINDOW_SAMPLES = 480000
WINDOW_FRAMES = 3000

# openai-whisper's language codes, in token order (large-v3 adds "yue").
LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su yue"
).split()

# The non-speech symbols of openai-whisper's tokenizer.non_speech_tokens.
NS_SYMBOLS = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + (
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
NS_MISC = list("♩♪♫♬♭♮♯")


def log(*a):
    print("[oracle]", *a, flush=True)


# --------------------------------------------------------------------------
# The ggml file, parsed independently of tapedeck's loader


class GgmlModel:
    pass


def parse_ggml(path, want_tensors=True):
    """Header, hparams, filters, vocabulary and (optionally) tensors.

    Tensors come back as numpy arrays in numpy order: ne reversed, so a
    linear weight with ne = {n_in, n_out} is (n_out, n_in) as torch has it.
    """
    data = open(path, "rb").read()
    m = GgmlModel()
    off = 0

    def i32():
        nonlocal off
        (v,) = struct.unpack_from("<i", data, off)
        off += 4
        return v

    magic = struct.unpack_from("<I", data, 0)[0]
    off = 4
    if magic != GGML_MAGIC:
        raise ValueError(f"{path}: bad magic {magic:#x}")
    names = ("n_vocab n_audio_ctx n_audio_state n_audio_head n_audio_layer n_text_ctx "
             "n_text_state n_text_head n_text_layer n_mels ftype").split()
    m.hp = {k: i32() for k in names}
    n_mel, n_fft = i32(), i32()
    if n_mel != m.hp["n_mels"] or n_fft != 201:
        raise ValueError(f"{path}: filters {n_mel}x{n_fft}")
    m.filters = np.frombuffer(data, "<f4", n_mel * n_fft, off).reshape(n_mel, n_fft).copy()
    off += n_mel * n_fft * 4
    count = i32()
    if not 0 < count <= m.hp["n_vocab"]:
        raise ValueError(f"{path}: vocabulary count {count}")
    vocab = []
    for _ in range(count):
        (n,) = struct.unpack_from("<I", data, off)
        off += 4
        vocab.append(bytes(data[off:off + n]))
        off += n
    m.vocab = vocab
    m.n_file_tokens = count
    m.tensors = {}
    m.tensor_types = {}
    m.sha256 = hashlib.sha256(data).hexdigest()
    m.size = len(data)
    if want_tensors:
        while off < len(data):
            n_dims, name_len, ttype = struct.unpack_from("<iii", data, off)
            off += 12
            if not 1 <= n_dims <= 4 or ttype not in (0, 1):
                raise ValueError(f"{path}: tensor record at {off - 12}: dims {n_dims} type {ttype}")
            ne = list(struct.unpack_from(f"<{n_dims}i", data, off))
            off += 4 * n_dims
            name = data[off:off + name_len].decode()
            off += name_len
            n = int(np.prod(ne))
            dt = "<f4" if ttype == 0 else "<f2"
            arr = np.frombuffer(data, dt, n, off).reshape(list(reversed(ne)))
            off += n * (4 if ttype == 0 else 2)
            if name in m.tensors:
                raise ValueError(f"{path}: tensor {name} twice")
            m.tensors[name] = arr
            m.tensor_types[name] = ttype
    m.special = special_ids(m.hp["n_vocab"])
    m.multilingual = m.hp["n_vocab"] >= 51865
    m.blank = token_id(m, b" ")
    return m


def special_ids(n_vocab):
    """Special token ids as whisper.cpp derives them from n_vocab."""
    multi = n_vocab >= 51865
    n_langs = n_vocab - 51765 - (1 if multi else 0) if multi else 0
    eot, sot = 50256, 50257
    rest = dict(translate=50357, transcribe=50358, solm=50359, prev=50360, nospeech=50361,
                notimestamps=50362, ts_begin=50363)
    if multi:
        eot += 1
        sot += 1
        dt = n_langs - 98
        rest = {k: v + dt for k, v in rest.items()}
    sp = dict(eot=eot, sot=sot, **rest)
    sp["lang_begin"] = sot + 1
    sp["n_langs"] = n_langs
    return sp


def token_bytes(m, i):
    return m.vocab[i] if i < len(m.vocab) else None


def token_id(m, b):
    for i, t in enumerate(m.vocab):
        if t == b:
            return i
    return -1


# Stock vocabularies whose whisper.cpp files spell the partial UTF-8 pieces
# E2 99 and " E2 99" (the first BPE tokens of the musical symbols) as U+FFFD:
# eot -> (anchor tokens that identify the vocabulary, {id: real bytes}).
STOCK_VOCABS = {
    50257: ({359: b" -", 3961: "\u266a".encode()}, {3268: b"\xe2\x99", 873: b" \xe2\x99"}),
    50256: ({532: b" -", 705: b" '"}, {17992: b"\xe2\x99", 20724: b" \xe2\x99"}),
}


def suppress_tokens(m):
    """openai-whisper's suppress_tokens="-1" set, from the vocabulary bytes.

    openai takes encode(s) for each non-speech symbol s and for " " + s and
    suppresses single-token encodings (here: an exact byte match); for the
    musical symbols it suppresses the first token of the encoding whatever
    its length (here: the exact token, else the longest token that is a
    byte prefix of s and longer than its leading space, so that the blank
    " " never stands in for a symbol); then " -" and " '". The stock
    vocabularies lost the bytes of the two partial tokens those symbols
    begin with (whisper.cpp spelled them U+FFFD); they are restored by id
    when the file is recognisably stock. This reproduces HF's
    NON_SPEECH_TOKENS lists exactly on the real tiny and tiny.en
    vocabularies. Then the task and special tokens: translate, transcribe,
    sot, startofprev, startoflm, nospeech. decode.c's td_wsuppress_tokens
    follows the same rules.
    """
    sp = m.special
    text = list(m.vocab[:sp["eot"]])
    stock = STOCK_VOCABS.get(sp["eot"])
    if stock:
        anchors, lost = stock
        fffd = "\ufffd".encode()
        if all(i < len(text) and text[i] == b for i, b in anchors.items()) and all(
                i < len(text) and text[i].strip(b" ") == fffd for i in lost):
            for i, b in lost.items():
                text[i] = b
    exact = {}
    for i, t in enumerate(text):
        exact.setdefault(t, i)

    def prefix_token(b, min_len):
        best, best_len = None, min_len
        for i, t in enumerate(text):
            if best_len < len(t) <= len(b) and b.startswith(t):
                best, best_len = i, len(t)
        return best

    out = set()
    for s in [" -", " '"] + [pre + sym for sym in NS_SYMBOLS for pre in ("", " ")]:
        t = exact.get(s.encode())
        if t is not None:
            out.add(t)
    for sym in NS_MISC:
        for pre in ("", " "):
            b = (pre + sym).encode()
            t = exact.get(b)
            if t is None:
                t = prefix_token(b, len(pre))
            if t is not None:
                out.add(t)
    out.update([sp["translate"], sp["transcribe"], sp["sot"], sp["prev"], sp["solm"],
                sp["nospeech"]])
    return sorted(out)


# --------------------------------------------------------------------------
# Audio and the float64 log-mel


def make_audio():
    """6 s, 16 kHz: a chirp, amplitude-modulated tones, a tone pair, and
    seeded noise at -30 dBFS RMS, as int16. Deterministic by construction
    (the result is committed, so the C test reads the very same samples)."""
    n = 6 * RATE
    t = np.arange(n) / RATE
    x = np.zeros(n)

    def seg(t0, t1):
        g = ((t >= t0) & (t < t1)).astype(float)
        ramp = 0.01
        g *= np.clip((t - t0) / ramp, 0, 1) * np.clip((t1 - t) / ramp, 0, 1)
        return g

    f0, f1, d = 200.0, 2000.0, 2.0  # linear chirp over 0..2 s
    x += 0.30 * seg(0.0, 2.0) * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * d) * t * t))
    x += 0.25 * seg(1.5, 4.0) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) * np.sin(2 * np.pi * 440 * t)
    x += 0.15 * seg(3.5, 5.5) * (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 2500 * t))
    x += 0.20 * seg(4.8, 5.8) * (0.5 + 0.5 * np.sin(2 * np.pi * 7.0 * t)) * np.sin(2 * np.pi * 180 * t)
    rng = np.random.default_rng(20240601)
    x += 10 ** (-30 / 20) * rng.standard_normal(n)
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")


def read_audio(path):
    """s16 samples and the file's SHA-256: a 16 kHz mono 16-bit WAV (by its
    RIFF header), else raw s16le as audio.s16 is."""
    import wave

    raw = open(path, "rb").read()
    if raw[:4] == b"RIFF" and raw[8:12] == b"WAVE":
        with wave.open(path, "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
                raise ValueError(f"{path}: {w.getframerate()} Hz, {w.getnchannels()} channels, "
                                 f"{8 * w.getsampwidth()} bits; 16 kHz mono s16 wanted")
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()
        return pcm, "WAV, 16 kHz mono s16", hashlib.sha256(raw).hexdigest()
    pcm = np.frombuffer(raw, "<i2").copy()
    return pcm, "raw s16le 16 kHz mono", hashlib.sha256(raw).hexdigest()


def pcm_float(samples_i16):
    return samples_i16.astype(np.float64) / 32768.0


def log_mel_f64(pcm, filters):
    """openai-whisper's log_mel_spectrogram in float64 over pcm padded (or
    cut) to 30 s, with the model file's own filterbank [n_mels][201]."""
    x = np.zeros(WINDOW_SAMPLES)
    n = min(len(pcm), WINDOW_SAMPLES)
    x[:n] = pcm[:n]
    xp = np.pad(x, N_FFT // 2, mode="reflect")
    n_frames = 1 + len(x) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    spec = np.fft.rfft(xp[idx] * win, axis=1)
    power = (spec.real ** 2 + spec.imag ** 2)[:-1]  # drop the last frame
    mel = filters.astype(np.float64) @ power.T       # [n_mels][3000]
    lm = np.log10(np.maximum(mel, 1e-10))
    lm = np.maximum(lm, lm.max() - 8.0)
    return (lm + 4.0) / 4.0


def diff_stats(a, ref):
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    d = a - ref
    nr = float(np.linalg.norm(ref))
    return {
        "max_abs": float(np.max(np.abs(d))) if d.size else 0.0,
        "rel_l2": float(np.linalg.norm(d) / nr) if nr > 0 else float(np.linalg.norm(d)),
        "ref_max_abs": float(np.max(np.abs(ref))) if ref.size else 0.0,
    }


# --------------------------------------------------------------------------
# The HF model


HF_NAMES = [
    # (ggml prefix, HF prefix) for whole-name prefixes, applied in order
    ("encoder.positional_embedding", "model.encoder.embed_positions.weight"),
    ("decoder.positional_embedding", "model.decoder.embed_positions.weight"),
    ("decoder.token_embedding.weight", "model.decoder.embed_tokens.weight"),
    ("encoder.conv1.", "model.encoder.conv1."),
    ("encoder.conv2.", "model.encoder.conv2."),
    ("encoder.ln_post.", "model.encoder.layer_norm."),
    ("decoder.ln.", "model.decoder.layer_norm."),
]
HF_BLOCK = [
    ("cross_attn_ln.", "encoder_attn_layer_norm."),
    ("cross_attn.query.", "encoder_attn.q_proj."),
    ("cross_attn.key.", "encoder_attn.k_proj."),
    ("cross_attn.value.", "encoder_attn.v_proj."),
    ("cross_attn.out.", "encoder_attn.out_proj."),
    ("attn_ln.", "self_attn_layer_norm."),
    ("attn.query.", "self_attn.q_proj."),
    ("attn.key.", "self_attn.k_proj."),
    ("attn.value.", "self_attn.v_proj."),
    ("attn.out.", "self_attn.out_proj."),
    ("mlp_ln.", "final_layer_norm."),
    ("mlp.0.", "fc1."),
    ("mlp.2.", "fc2."),
]


def hf_name(name):
    for g, h in HF_NAMES:
        if name == g or (g.endswith(".") and name.startswith(g)):
            return h + name[len(g):] if g.endswith(".") else h
    parts = name.split(".")
    if len(parts) >= 4 and parts[0] in ("encoder", "decoder") and parts[1] == "blocks":
        rest = ".".join(parts[3:])
        for g, h in HF_BLOCK:
            if rest.startswith(g):
                return f"model.{parts[0]}.layers.{parts[2]}.{h}{rest[len(g):]}"
    raise KeyError(f"no HF name for tensor {name}")


def build_hf(m, torch, dtype):
    import transformers
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    hp, sp = m.hp, m.special
    d = hp["n_audio_state"]
    if hp["n_text_state"] != d:
        raise ValueError("HF Whisper needs n_audio_state == n_text_state")
    sup = suppress_tokens(m)
    cfg = WhisperConfig(
        vocab_size=hp["n_vocab"], num_mel_bins=hp["n_mels"], d_model=d,
        encoder_layers=hp["n_audio_layer"], encoder_attention_heads=hp["n_audio_head"],
        decoder_layers=hp["n_text_layer"], decoder_attention_heads=hp["n_text_head"],
        encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d,
        max_source_positions=hp["n_audio_ctx"], max_target_positions=hp["n_text_ctx"],
        activation_function="gelu", scale_embedding=False,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        decoder_start_token_id=sp["sot"], eos_token_id=sp["eot"], pad_token_id=sp["eot"],
        bos_token_id=sp["eot"], suppress_tokens=sup, begin_suppress_tokens=[m.blank, sp["eot"]],
        tie_word_embeddings=True,
    )
    try:
        cfg._attn_implementation = "eager"
    except Exception as e:  # noqa: BLE001 - older/newer config objects
        log("cannot set eager attention on the config:", e)
    model = WhisperForConditionalGeneration(cfg)
    model.eval()

    sd = {}
    for name, arr in m.tensors.items():
        a = np.asarray(arr, np.float64)
        if name.endswith(("conv1.bias", "conv2.bias")):
            a = a.reshape(-1)  # stored [n, 1]
        sd[hf_name(name)] = torch.from_numpy(a.copy())
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    model_keys = set(model.state_dict().keys())
    if "proj_out.weight" not in model_keys:
        del sd["proj_out.weight"]
    missing = sorted(model_keys - set(sd))
    unexpected = sorted(set(sd) - model_keys)
    if missing or unexpected:
        raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model = model.to(dtype)
    sd = {k: v.to(dtype) for k, v in sd.items()}
    res = model.load_state_dict(sd, strict=True)
    log("load_state_dict:", res)
    # Every parameter must now be what the file holds (tying included).
    live = model.state_dict()
    for k, v in sd.items():
        if live[k].shape != v.shape or not torch.equal(live[k], v):
            raise ValueError(f"{k}: not loaded as given")
    if not torch.equal(model.proj_out.weight, model.model.decoder.embed_tokens.weight):
        raise ValueError("proj_out is not the token embedding")
    try:
        model.set_attn_implementation("eager")
    except Exception as e:  # noqa: BLE001
        log("set_attn_implementation unavailable:", e)
    log("attention implementation:", getattr(model.config, "_attn_implementation", "?"),
        "transformers", transformers.__version__)
    return model, sup


def encode(model, torch, mel):
    with torch.no_grad():
        enc = model.model.encoder(input_features=mel).last_hidden_state
    return enc


def decoder_logits(model, torch, enc, tokens):
    ids = torch.tensor([tokens], dtype=torch.long)
    with torch.no_grad():
        out = model(encoder_outputs=(enc,), decoder_input_ids=ids, use_cache=False)
    return out.logits[0]


def greedy_openai(model, torch, enc, m, prompt, max_new, sup):
    """Greedy decoding with openai-whisper's logit filters (SuppressBlank,
    SuppressTokens, ApplyTimestampRules with max_initial_timestamp 1.0),
    recomputing the decoder over the whole sequence each step (no cache).
    Returns tokens (no prompt, no eot), whether eot ended it, the smallest
    decision margins seen (argmax gap, timestamp-rule gap), and per step
    the chosen token, the runner-up and the gap between their logits (so
    that a disagreement can be told from a near-tie)."""
    sp = m.special
    eot, tsb, blank = sp["eot"], sp["ts_begin"], m.blank
    sample_begin = len(prompt)
    seq = list(prompt)
    min_gap = float("inf")
    min_ts_gap = float("inf")
    ended = False
    steps = []
    for _ in range(max_new):
        logits = decoder_logits(model, torch, enc, seq)[-1].to(torch.float64).clone()
        neg = -float("inf")
        if len(seq) == sample_begin:
            if blank >= 0:
                logits[blank] = neg
            logits[eot] = neg
        logits[sup] = neg
        logits[sp["notimestamps"]] = neg
        sampled = seq[sample_begin:]
        last_ts = len(sampled) >= 1 and sampled[-1] >= tsb
        pen_ts = len(sampled) < 2 or sampled[-2] >= tsb
        if last_ts:
            if pen_ts:
                logits[tsb:] = neg
            else:
                logits[:eot] = neg
        ts = [t for t in sampled if t >= tsb]
        if ts:
            last = ts[-1] if (last_ts and not pen_ts) else ts[-1] + 1
            logits[tsb:last] = neg
        if len(seq) == sample_begin:
            logits[:tsb] = neg
            logits[tsb + 50 + 1:] = neg
        lp = torch.log_softmax(logits, dim=-1)
        ts_lp = torch.logsumexp(lp[tsb:], dim=-1).item()
        text_max = lp[:tsb].max().item()
        if np.isfinite(ts_lp) and np.isfinite(text_max):
            min_ts_gap = min(min_ts_gap, abs(ts_lp - text_max))
        if ts_lp > text_max:
            logits[:tsb] = neg
        top2 = torch.topk(logits, 2)
        v2, i2 = top2.values, top2.indices
        step_gap = (v2[0] - v2[1]).item() if torch.isfinite(v2[1]) else None
        if step_gap is not None:
            min_gap = min(min_gap, step_gap)
        nxt = int(torch.argmax(logits).item())
        steps.append([nxt, int(i2[1].item()), step_gap])
        if nxt == eot:
            ended = True
            break
        seq.append(nxt)
    return seq[sample_begin:], ended, min_gap, min_ts_gap, steps


def greedy_hf_generate(model, torch, mel, m, max_new, sup):
    """transformers' own WhisperGenerationMixin.generate, greedy, timestamps."""
    from transformers import GenerationConfig

    sp = m.special
    gc = GenerationConfig.from_model_config(model.config)
    gc.decoder_start_token_id = sp["sot"]
    gc.eos_token_id = sp["eot"]
    gc.pad_token_id = sp["eot"]
    gc.bos_token_id = sp["eot"]
    gc.no_timestamps_token_id = sp["notimestamps"]
    gc.max_initial_timestamp_index = 50
    gc.begin_suppress_tokens = [m.blank, sp["eot"]]
    gc.suppress_tokens = list(sup)
    gc.is_multilingual = bool(m.multilingual)
    gc.max_length = m.hp["n_text_ctx"]
    gc.forced_decoder_ids = None
    kw = {}
    if m.multilingual:
        gc.lang_to_id = {f"<|{c}|>": sp["lang_begin"] + i
                         for i, c in enumerate(LANGUAGES[:sp["n_langs"]])}
        gc.task_to_id = {"translate": sp["translate"], "transcribe": sp["transcribe"]}
        kw = dict(language="en", task="transcribe")
    model.generation_config = gc
    with torch.no_grad():
        out = model.generate(input_features=mel, generation_config=gc, return_timestamps=True,
                             max_new_tokens=max_new, do_sample=False, num_beams=1,
                             force_unique_generate_call=True, return_dict_in_generate=True, **kw)
    seqs = out["sequences"] if isinstance(out, dict) else getattr(out, "sequences", out)
    seq = [int(t) for t in seqs[0].tolist()]
    prompt = [sp["sot"]] + ([sp["lang_begin"], sp["transcribe"]] if m.multilingual else [])
    raw = list(seq)
    if seq[:len(prompt)] == prompt:
        seq = seq[len(prompt):]
    ended = sp["eot"] in seq
    if ended:
        seq = seq[:seq.index(sp["eot"])]
    return seq, ended, raw


# --------------------------------------------------------------------------
# The oracle run for one model


def run_oracle(a):
    import torch
    import transformers

    torch.set_num_threads(max(1, min(16, os.cpu_count() or 1)))
    t0 = time.time()
    m = parse_ggml(a.model)
    hp, sp = m.hp, m.special
    log(a.name, "hparams", hp, "multilingual", m.multilingual, "tensors", len(m.tensors))
    meta = {
        "name": a.name,
        "what": "HF transformers WhisperForConditionalGeneration reference (float64, CPU) "
                "for a tapedeck-mkmodel model; see scripts/whisper-oracle.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "model_sha256": m.sha256,
        "model_bytes": m.size,
        "multilingual": m.multilingual,
        "special": dict(sp, blank=m.blank),
        "errors": [],
    }
    wtype = "f16" if hp["ftype"] % 1000 == 1 else "f32"
    if a.real:
        # A real model has no recipe: the test re-imports it and checks the
        # hash, so the meta says where it came from and what it holds.
        meta["what"] = ("HF transformers WhisperForConditionalGeneration reference (float64, "
                        "CPU) for a real Whisper model; see scripts/whisper-oracle.py")
        meta["real"] = {"source": a.real, "wtype": wtype, "hparams": hp,
                        "file_tokens": m.n_file_tokens}
    else:
        if a.seed is None or a.mkmodel_argv is None:
            raise SystemExit("oracle: --seed and --mkmodel-argv, or --real")
        meta["mkmodel"] = {"argv": a.mkmodel_argv, "seed": a.seed, "vocab": "synthetic",
                           "wtype": wtype, "hparams": hp}
    os.makedirs(a.out, exist_ok=True)

    # Audio and mel: the reference mel is float64 with the file's filters.
    pcm_i16, audio_format, file_sha = read_audio(a.audio)
    if len(pcm_i16) > WINDOW_SAMPLES:
        raise SystemExit(f"{a.audio}: longer than one 30-s window")
    pcm = pcm_float(pcm_i16)
    mel64 = log_mel_f64(pcm, m.filters)
    mel32 = mel64.astype("<f4")
    mel_name = a.mel_name or f"mel{hp['n_mels']}.f32"
    mel32.tofile(os.path.join(a.out, mel_name))
    meta["audio"] = {"file": os.path.basename(a.audio), "samples": int(len(pcm_i16)),
                     "format": f"{audio_format}; float = s16 / 32768",
                     "sha256": hashlib.sha256(pcm_i16.tobytes()).hexdigest(),
                     "file_sha256": file_sha}
    mel_meta = {"file": mel_name, "shape": [hp["n_mels"], WINDOW_FRAMES],
                "how": "float64 numpy log-mel of the audio zero-padded to 480000 samples, "
                       "with the model file's filterbank, rounded to float32"}
    try:
        from transformers import WhisperFeatureExtractor
        fe = WhisperFeatureExtractor(feature_size=hp["n_mels"])
        hf_f = np.asarray(fe.mel_filters, np.float64).T  # HF keeps [201][n_mels]
        mel_meta["hf_filters_vs_file"] = diff_stats(m.filters, hf_f)
        feats = fe(pcm.astype(np.float32), sampling_rate=RATE, return_tensors="np")
        hf_mel = np.asarray(feats["input_features"][0], np.float64)
        mel_meta["hf_feature_extractor_vs_ref"] = diff_stats(hf_mel, mel64)
        try:
            np_mel = fe._np_extract_fbank_features(
                np.pad(pcm, (0, WINDOW_SAMPLES - len(pcm)))[None, :], "cpu")[0]
            mel_meta["hf_numpy_path_vs_ref"] = diff_stats(np_mel, mel64)
        except Exception as e:  # noqa: BLE001
            mel_meta["hf_numpy_path_vs_ref"] = f"failed: {e}"
        mel_meta["ref_f32_rounding"] = diff_stats(mel32, mel64)
        d = mel_meta["hf_filters_vs_file"]["max_abs"]
        if d > 1e-6:
            meta["errors"].append(f"mel filters differ from HF's by {d:g} (> 1e-6)")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        meta["errors"].append(f"feature extractor: {e}")
    meta["mel"] = mel_meta
    log("mel", json.dumps(mel_meta))

    model64, sup = build_hf(m, torch, torch.float64)
    meta["suppress_tokens"] = sup
    meta["begin_suppress_tokens"] = [m.blank, sp["eot"]]
    mel_in64 = torch.from_numpy(mel32.astype(np.float64))[None]
    t1 = time.time()
    enc64 = encode(model64, torch, mel_in64)
    log(f"encoder f64 {time.time() - t1:.1f}s")
    enc_np = enc64[0].numpy()
    step = a.enc_row_step
    rows = np.arange(0, enc_np.shape[0], step)
    enc_np[rows].astype("<f4").tofile(os.path.join(a.out, f"{a.name}.enc.f32"))
    meta["encoder"] = {"file": f"{a.name}.enc.f32", "row_step": step, "rows": int(len(rows)),
                       "shape": [int(len(rows)), int(enc_np.shape[1])],
                       "how": "encoder last_hidden_state (after ln_post) rows 0, step, 2*step, ... "
                              "for the fixture mel as input"}

    # Greedy decoding first: with --teacher greedy its transcript is what
    # the logits are teacher-forced on (a real model's own text, rather
    # than arbitrary ids).
    g = {"max_new_tokens": a.max_new, "prompt": [sp["sot"]] + (
        [sp["lang_begin"], sp["transcribe"]] if m.multilingual else []),
        "rules": "greedy T=0, suppress blank+eot at the first step, suppress_tokens, "
                 "timestamp rules, max_initial_timestamp 1.0 s (index 50)"}
    t1 = time.time()
    gt, ended, gap, tsgap, steps = greedy_openai(model64, torch, enc64, m, g["prompt"],
                                                 a.max_new, sup)
    g.update(tokens=gt, ended_with_eot=ended, min_argmax_gap=gap, min_timestamp_rule_gap=tsgap)
    if a.real:
        g["text"] = b"".join(m.vocab[t] for t in gt if t < sp["eot"]).decode("utf-8", "replace")
        g["steps"] = steps
    log(f"greedy (openai rules) {time.time() - t1:.1f}s: {gt} eot={ended} gap={gap:.3g} "
        f"tsgap={tsgap:.3g}" + (f" text={g['text']!r}" if a.real else ""))
    try:
        t1 = time.time()
        ht, hended, raw = greedy_hf_generate(model64, torch, mel_in64, m, a.max_new, sup)
        g.update(hf_generate_tokens=ht, hf_generate_ended_with_eot=hended, hf_generate_raw=raw,
                 hf_generate_agrees=(ht == gt))
        log(f"greedy (HF generate) {time.time() - t1:.1f}s: agrees={ht == gt} {ht}")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        g["hf_generate_error"] = repr(e)
        meta["errors"].append(f"HF generate: {e!r}")
    meta["greedy"] = g

    # Teacher-forced logits.
    if a.teacher == "greedy":
        toks = g["prompt"] + gt + ([sp["eot"]] if ended else [])
        toks = toks[:64]
    elif m.multilingual:
        toks = [sp["sot"], sp["lang_begin"], sp["transcribe"], sp["ts_begin"], 1000, 2001, 314,
                220, 532, 10000, 40001, sp["ts_begin"] + 37]
    else:
        toks = [sp["sot"], sp["ts_begin"], 1000, 2001, 314, 220, 532, 10000, 40001, 705, 5,
                sp["ts_begin"] + 37]
    cs = a.logit_col_step
    cols = np.array([c for c in range(hp["n_vocab"]) if c % cs == 0 or c >= sp["eot"]])
    lg64 = decoder_logits(model64, torch, enc64, toks).numpy()
    lg64[:, cols].astype("<f4").tofile(os.path.join(a.out, f"{a.name}.logits.f32"))
    meta["logits"] = {"file": f"{a.name}.logits.f32", "tokens": toks,
                      "columns": f"c % {cs} == 0 or c >= eot", "col_step": cs,
                      "col_from": sp["eot"],
                      "n_columns": int(len(cols)), "shape": [len(toks), int(len(cols))],
                      "how": "decoder logits at every position of tokens (teacher forcing), "
                             "the listed columns only"
                             + ("; tokens: the prompt and the greedy transcript"
                                if a.teacher == "greedy" else "")}
    log(f"logits {lg64.shape}, max |logit| {np.abs(lg64).max():.3f}")

    # What float32 itself gives: the same HF model in float32.
    try:
        model32, _ = build_hf(m, torch, torch.float32)
        enc32 = encode(model32, torch, torch.from_numpy(mel32)[None])
        lg32 = decoder_logits(model32, torch, enc32, toks).numpy()
        g32, e32, _, _, _ = greedy_openai(model32, torch, enc32, m, g["prompt"], a.max_new,
                                          sup)
        meta["hf_f32_vs_f64"] = {
            "encoder": diff_stats(enc32[0].numpy(), enc_np),
            "logits": diff_stats(lg32, lg64),
            "logits_stored_columns": diff_stats(lg32[:, cols], lg64[:, cols]),
            "greedy_tokens_agree": g32 == gt,
        }
        if g32 != gt:
            meta["hf_f32_vs_f64"]["greedy_tokens_f32"] = g32
        log("f32 vs f64", json.dumps(meta["hf_f32_vs_f64"]))
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        meta["errors"].append(f"float32 run: {e!r}")

    meta["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(a.out, f"{a.name}.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    log(a.name, "done in", meta["seconds"], "s; errors:", meta["errors"])


# --------------------------------------------------------------------------
# A second, numpy-only float64 forward pass (openai-whisper's model.py
# written out), to check the HF name mapping and the fixtures without torch


def np_forward(m, mel, tokens, cross_probs=None):
    """Encoder output and logits; with a dict cross_probs, also every
    decoder layer's cross-attention probabilities, [head][row][frame]."""
    from math import erf

    t = {k: np.asarray(v, np.float64) for k, v in m.tensors.items()}
    verf = np.vectorize(erf, otypes=[np.float64])

    def gelu(x):
        return 0.5 * x * (1.0 + verf(x / np.sqrt(2.0)))

    def conv(x, w, b, stride):  # x [c_in][n], w [c_out][c_in][3]
        xp = np.pad(x, ((0, 0), (1, 1)))
        n_out = (x.shape[1] - 1) // stride + 1
        cols = np.stack([xp[:, k:k + stride * (n_out - 1) + 1:stride] for k in range(3)], 2)
        return np.einsum("oik,ink->on", w, cols) + b.reshape(-1, 1)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * t[p + ".weight"] + t[p + ".bias"]

    def lin(x, p, bias=True):
        y = x @ t[p + ".weight"].T
        return y + t[p + ".bias"] if bias else y

    def attn(x, kv, p, n_head, causal, keep=None):
        q, k, v = lin(x, p + ".query"), lin(kv, p + ".key", False), lin(kv, p + ".value")
        dh = q.shape[1] // n_head
        out = np.empty_like(q)
        probs = []
        for h in range(n_head):
            sl = slice(h * dh, (h + 1) * dh)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(dh)
            if causal:
                s = s + np.triu(np.full(s.shape, -np.inf), 1)
            s = np.exp(s - s.max(1, keepdims=True))
            pr = s / s.sum(1, keepdims=True)
            probs.append(pr)
            out[:, sl] = pr @ v[:, sl]
        if keep is not None:
            keep.append(np.stack(probs))
        return lin(out, p + ".out")

    hp = m.hp
    x = gelu(conv(mel, t["encoder.conv1.weight"], t["encoder.conv1.bias"], 1))
    x = gelu(conv(x, t["encoder.conv2.weight"], t["encoder.conv2.bias"], 2)).T
    x = x + t["encoder.positional_embedding"]
    for i in range(hp["n_audio_layer"]):
        b = f"encoder.blocks.{i}"
        x = x + attn(ln(x, b + ".attn_ln"), ln(x, b + ".attn_ln"), b + ".attn",
                     hp["n_audio_head"], False)
        x = x + lin(gelu(lin(ln(x, b + ".mlp_ln"), b + ".mlp.0")), b + ".mlp.2")
    enc = ln(x, "encoder.ln_post")
    emb = t["decoder.token_embedding.weight"]
    y = emb[tokens] + t["decoder.positional_embedding"][:len(tokens)]
    for i in range(hp["n_text_layer"]):
        b = f"decoder.blocks.{i}"
        y = y + attn(ln(y, b + ".attn_ln"), ln(y, b + ".attn_ln"), b + ".attn",
                     hp["n_text_head"], True)
        keep = [] if cross_probs is not None else None
        y = y + attn(ln(y, b + ".cross_attn_ln"), enc, b + ".cross_attn", hp["n_text_head"],
                     False, keep)
        if keep:
            cross_probs[i] = keep[0]
        y = y + lin(gelu(lin(ln(y, b + ".mlp_ln"), b + ".mlp.0")), b + ".mlp.2")
    return enc, ln(y, "decoder.ln") @ emb.T


def np_check(a):
    """Recompute a fixture set with np_forward and print the differences."""
    m = parse_ggml(a.model)
    meta = json.load(open(os.path.join(a.fixtures, a.name + ".json")))
    if meta["model_sha256"] != m.sha256:
        raise SystemExit(f"{a.model}: not the model of {a.name}")
    hp = m.hp
    mel = np.fromfile(os.path.join(a.fixtures, meta["mel"]["file"]), "<f4").astype(np.float64)
    mel = mel.reshape(hp["n_mels"], WINDOW_FRAMES)
    t0 = time.time()
    enc, logits = np_forward(m, mel, meta["logits"]["tokens"])
    e = meta["encoder"]
    ref = np.fromfile(os.path.join(a.fixtures, e["file"]), "<f4").reshape(e["shape"])
    print(a.name, "encoder", diff_stats(enc[::e["row_step"]], ref))
    lg = meta["logits"]
    cols = [c for c in range(hp["n_vocab"]) if c % lg["col_step"] == 0 or c >= lg["col_from"]]
    ref = np.fromfile(os.path.join(a.fixtures, lg["file"]), "<f4").reshape(lg["shape"])
    print(a.name, "logits", diff_stats(logits[:, cols], ref), f"({time.time() - t0:.1f} s)")


# --------------------------------------------------------------------------
# Word alignment (issue 13): HF's cross-attention and token timestamps

# openai-whisper's published alignment heads (whisper/__init__.py): base85 of
# a gzipped boolean [n_text_layer][n_text_head] array, per model. Decoded
# here with the standard library, independently of tapedeck's C table.
ALIGNMENT_HEADS_B85 = {
    "tiny.en": b"ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00",
    "tiny": b"ABzY8bu8Lr0{>%RKn9Fp%m@SkK7Kt=7ytkO",
    "base.en": b"ABzY8;40c<0{>%RzzG;p*o+Vo09|#PsxSZm00",
    "base": b"ABzY8KQ!870{>%RzyTQH3`Q^yNP!>##QT-<FaQ7m",
}


def alignment_heads(name, n_layer, n_head):
    import base64
    import gzip

    mask = gzip.decompress(base64.b85decode(ALIGNMENT_HEADS_B85[name]))
    if len(mask) != n_layer * n_head:
        raise ValueError(f"{name}: heads mask has {len(mask)} entries, model {n_layer}x{n_head}")
    return [[i // n_head, i % n_head] for i, v in enumerate(mask) if v]


def align_sequence(meta, which):
    """[sot sequence, notimestamps, text tokens, eot] of a fixture set."""
    sp = meta["special"]
    src = meta["greedy"]["tokens"] if which == "greedy" else meta["logits"]["tokens"]
    text = [t for t in src if t < sp["eot"]]
    sot_seq = [sp["sot"]] + ([sp["lang_begin"], sp["transcribe"]] if meta["multilingual"] else [])
    return sot_seq, text, sot_seq + [sp["notimestamps"]] + text + [sp["eot"]]


class _GenOut(dict):
    """What _extract_token_timestamps reads of generate()'s output."""
    __getattr__ = dict.__getitem__


class _ByteTokenizer:
    """The little of a Whisper tokenizer that HF's word grouping uses,
    over the model file's own token bytes (the synthetic vocabularies of
    the random sets have no tokenizer files)."""

    def __init__(self, m):
        self.m = m
        self.eos_token_id = m.special["eot"]
        self.language = None

    def decode(self, tokens, **kw):
        b = b"".join(token_bytes(self.m, int(t)) or b"" for t in tokens
                     if int(t) < self.eos_token_id)
        return b.decode("utf-8", errors="replace")


def run_align(a):
    import torch
    import transformers
    from transformers.models.whisper import tokenization_whisper as tw

    torch.set_num_threads(max(1, min(16, os.cpu_count() or 1)))
    t0 = time.time()
    meta_in = json.load(open(os.path.join(a.fixtures, f"{a.name}.json")))
    m = parse_ggml(a.model)
    hp, sp = m.hp, m.special
    want = a.pruned_from or meta_in["model_sha256"]
    if a.pruned_from:
        if a.pruned_from != meta_in["model_sha256"]:
            raise SystemExit(f"{a.name}: --pruned-from {a.pruned_from} is not the set's model")
    elif m.sha256 != want:
        raise SystemExit(f"{a.model}: SHA-256 {m.sha256}, the set's model is {want}")
    sot_seq, text, seq = align_sequence(meta_in, a.tokens)
    heads = alignment_heads(a.heads, hp["n_text_layer"], hp["n_text_head"])
    mel = np.fromfile(os.path.join(a.fixtures, meta_in["mel"]["file"]), "<f4")
    mel = mel.reshape(hp["n_mels"], WINDOW_FRAMES)
    content_frames = min(WINDOW_FRAMES, meta_in["audio"]["samples"] // HOP)
    log(a.name, "heads", a.heads, heads, "sequence", len(seq), "content frames", content_frames)

    model, _ = build_hf(m, torch, torch.float64)
    enc = encode(model, torch, torch.from_numpy(mel.astype(np.float64))[None])
    ids = torch.tensor([seq], dtype=torch.long)
    with torch.no_grad():
        out = model(encoder_outputs=(enc,), decoder_input_ids=ids, use_cache=False,
                    output_attentions=True)
    ca = out.cross_attentions  # per layer: (1, heads, rows, n_audio_ctx), softmax'd
    w = np.stack([ca[l][0, h].numpy() for l, h in heads])
    w.astype("<f4").tofile(os.path.join(a.out, f"{a.name}.align.f32"))
    res = {
        "name": a.name,
        "what": "cross-attention probabilities of the alignment heads (HF eager attention, "
                "float64, stored float32) over the sequence, and HF's own token and word "
                "timestamps from them; see scripts/whisper-oracle.py align",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__},
        "model_sha256": meta_in["model_sha256"],
        "model_pruned": bool(a.pruned_from),
        "heads_of": a.heads, "heads": heads,
        "sot_sequence": sot_seq, "sequence": seq, "text_tokens": text,
        "content_frames": content_frames,
        "file": f"{a.name}.align.f32", "shape": list(w.shape),
        "row_sums_max_dev": float(np.abs(w.sum(-1) - 1).max()),
        "text_token_bytes": [(token_bytes(m, t) or b"").hex() for t in text],
        "errors": [],
    }
    # Two layouts of HF's _extract_token_timestamps. Before num_input_ids
    # (transformers 4.4x): every row of the sequence takes part and token
    # i (i >= 1) is given the time the path enters row i - 1. With it
    # (transformers 4.5x, 5.x): the rows are those generate() has, every
    # input but the last token (eot), less the num_input_ids prefix rows
    # (sot sequence and notimestamps); the prefix is given 0, text token k
    # the time the path enters its own row, eot the last text token's.
    import inspect
    new_layout = "num_input_ids" in inspect.signature(model._extract_token_timestamps).parameters
    n_prefix = len(sot_seq) + 1
    if new_layout:
        gen = _GenOut(sequences=ids, cross_attentions=(tuple(c[:, :, :-1, :] for c in ca),))
        extra = {"num_input_ids": n_prefix}
    else:
        gen = _GenOut(sequences=ids, cross_attentions=(tuple(ca),))
        extra = {}
    res["hf_layout"] = "prefix-dropped" if new_layout else "all-rows"
    res["hf_num_input_ids"] = n_prefix if new_layout else None
    tok = _ByteTokenizer(m)
    # HF's defaults: all n_audio_ctx frames (no num_frames, as generate()
    # and the pipeline do for a short clip); and cropped to the content as
    # generate(num_frames=...) does (cropped, not renormalised).
    for variant, nf in (("full", None), ("cropped", 2 * (content_frames // 2))):
        try:
            ts = model._extract_token_timestamps(gen, heads, num_frames=nf, **extra)[0].tolist()
            res[f"hf_token_timestamps_{variant}"] = ts
            # token i of the sequence is given ts[i]; a text token spans
            # (ts[i], ts[i + 1]) as the pipeline pairs them
            base = len(sot_seq) + 1
            pairs = [(round(ts[base + k], 2), round(ts[base + k + 1], 2))
                     for k in range(len(text))]
            try:
                words = tw._collate_word_timestamps(tok, text, pairs, "english", False)
            except TypeError:  # before return_language was added
                words = tw._collate_word_timestamps(tok, text, pairs, "english")
            _, _, idx = tw._combine_tokens_into_words(tok, text, "english")
            res[f"hf_words_{variant}"] = [
                {"text": x["text"], "start": x["timestamp"][0], "end": x["timestamp"][1],
                 "tokens": list(ix)}
                for x, ix in zip(words, idx)]
            log(variant, json.dumps(res[f"hf_words_{variant}"]))
        except Exception as e:  # noqa: BLE001 - record what HF's API did instead
            res["errors"].append(f"{variant}: {type(e).__name__}: {e}")
            traceback.print_exc()
    res["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(a.out, f"{a.name}.align.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    log(a.name, "align done", res["seconds"], "s, errors", res["errors"])
    if res["errors"]:
        raise SystemExit(1)


def run_npalign(a):
    """The alignment heads' cross-attention from the numpy-only float64
    forward pass (no torch): the same files as `align` without HF's
    timestamps, for the backend test's reference."""
    t0 = time.time()
    meta_in = json.load(open(os.path.join(a.fixtures, f"{a.name}.json")))
    m = parse_ggml(a.model)
    hp = m.hp
    if m.sha256 != meta_in["model_sha256"]:
        raise SystemExit(f"{a.model}: SHA-256 {m.sha256}, the set's model is "
                         f"{meta_in['model_sha256']}")
    sot_seq, text, seq = align_sequence(meta_in, a.tokens)
    heads = alignment_heads(a.heads, hp["n_text_layer"], hp["n_text_head"])
    mel = np.fromfile(os.path.join(a.fixtures, meta_in["mel"]["file"]), "<f4")
    mel = mel.reshape(hp["n_mels"], WINDOW_FRAMES).astype(np.float64)
    probs = {}
    np_forward(m, mel, seq, probs)
    w = np.stack([probs[l][h] for l, h in heads])
    w.astype("<f4").tofile(os.path.join(a.out, f"{a.name}.align.f32"))
    res = {
        "name": a.name,
        "what": "cross-attention probabilities of the alignment heads over the sequence, from "
                "the numpy-only float64 forward pass (openai's model.py written out; "
                "scripts/whisper-oracle.py npalign), stored float32",
        "versions": {"numpy": np.__version__, "python": sys.version.split()[0]},
        "model_sha256": meta_in["model_sha256"],
        "heads_of": a.heads, "heads": heads,
        "sot_sequence": sot_seq, "sequence": seq, "text_tokens": text,
        "content_frames": min(WINDOW_FRAMES, meta_in["audio"]["samples"] // HOP),
        "file": f"{a.name}.align.f32", "shape": list(w.shape),
        "row_sums_max_dev": float(np.abs(w.sum(-1) - 1).max()),
        "text_token_bytes": [(token_bytes(m, t) or b"").hex() for t in text],
        "errors": [],
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(a.out, f"{a.name}.align.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    log(a.name, "npalign done", res["seconds"], "s; shape", res["shape"])


def run_prune(a):
    """Zero the token-embedding rows outside the alignment sequence."""
    meta_in = json.load(open(a.keep_json))
    _, _, seq = align_sequence(meta_in, "greedy" if meta_in.get("real") else "teacher")
    data = bytearray(open(a.model, "rb").read())
    off = 4 + 11 * 4
    n_mel, n_fft = struct.unpack_from("<ii", data, off)
    off += 8 + n_mel * n_fft * 4
    (count,) = struct.unpack_from("<i", data, off)
    off += 4
    for _ in range(count):
        (n,) = struct.unpack_from("<I", data, off)
        off += 4 + n
    done = False
    while off < len(data):
        n_dims, name_len, ttype = struct.unpack_from("<iii", data, off)
        off += 12
        ne = struct.unpack_from(f"<{n_dims}i", data, off)
        off += 4 * n_dims
        name = data[off:off + name_len].decode()
        off += name_len
        esz = 4 if ttype == 0 else 2
        n = 1
        for d in ne:
            n *= d
        if name == "decoder.token_embedding.weight":
            row = ne[0] * esz
            keep = set(seq)
            for r in range(ne[1]):
                if r not in keep:
                    data[off + r * row:off + (r + 1) * row] = bytes(row)
            done = True
        off += n * esz
    if not done:
        raise SystemExit(f"{a.model}: no decoder.token_embedding.weight")
    open(a.out, "wb").write(data)
    log("pruned", a.model, "->", a.out, "kept", len(set(seq)), "rows")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("audio")
    s.add_argument("out")
    s = sub.add_parser("parse")
    s.add_argument("model")
    s = sub.add_parser("suppress")
    s.add_argument("model")
    s = sub.add_parser("oracle")
    s.add_argument("--model", required=True)
    s.add_argument("--audio", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--seed", type=int)
    s.add_argument("--mkmodel-argv")
    s.add_argument("--real", metavar="SOURCE",
                   help="a real model: where it came from (recorded instead of a recipe)")
    s.add_argument("--mel-name", help="the mel fixture's file name (default melN.f32)")
    s.add_argument("--teacher", choices=("fixed", "greedy"), default="fixed",
                   help="teacher-forced tokens: a fixed list, or the greedy transcript")
    s.add_argument("--logit-col-step", type=int, default=4)
    s.add_argument("--max-new", type=int, default=48)
    s.add_argument("--enc-row-step", type=int, default=1)
    s = sub.add_parser("npcheck")
    s.add_argument("--model", required=True)
    s.add_argument("--fixtures", required=True)
    s.add_argument("--name", required=True)
    s = sub.add_parser("align")
    s.add_argument("--model", required=True)
    s.add_argument("--fixtures", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--heads", required=True, choices=sorted(ALIGNMENT_HEADS_B85))
    s.add_argument("--out", required=True)
    s.add_argument("--tokens", choices=("greedy", "teacher"), default="greedy")
    s.add_argument("--pruned-from", metavar="SHA256",
                   help="the model is `prune`'s copy of the set's model, which has this hash")
    s = sub.add_parser("npalign")
    s.add_argument("--model", required=True)
    s.add_argument("--fixtures", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--heads", required=True, choices=sorted(ALIGNMENT_HEADS_B85))
    s.add_argument("--out", required=True)
    s.add_argument("--tokens", choices=("greedy", "teacher"), default="greedy")
    s = sub.add_parser("prune")
    s.add_argument("--model", required=True)
    s.add_argument("--keep-json", required=True)
    s.add_argument("--out", required=True)
    a = p.parse_args()
    if a.cmd == "audio":
        make_audio().tofile(a.out)
    elif a.cmd == "parse":
        m = parse_ggml(a.model)
        print(json.dumps({"hparams": m.hp, "special": m.special, "blank": m.blank,
                          "file_tokens": m.n_file_tokens, "tensors": len(m.tensors),
                          "sha256": m.sha256}, indent=1))
    elif a.cmd == "suppress":
        m = parse_ggml(a.model, want_tensors=False)
        print(suppress_tokens(m))
    elif a.cmd == "npcheck":
        np_check(a)
    elif a.cmd == "align":
        run_align(a)
    elif a.cmd == "npalign":
        run_npalign(a)
    elif a.cmd == "prune":
        run_prune(a)
    else:
        run_oracle(a)


if __name__ == "__main__":
    main()

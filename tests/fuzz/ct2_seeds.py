#!/usr/bin/env python3
"""ct2_seeds.py DIR: seed inputs for fuzz_ct2 (CTranslate2 model.bin files).

Small CTranslate2 Whisper models in the binary format ct2.c reads (version
6, spec WhisperSpec): one F16 English-only model 1 wide with one layer
each, a multilingual F32 one 2 wide with two encoder layers, an int8 one
with weight scales, and prefixes. Values are arbitrary: the parser reads
shapes, not numbers. n_vocab fixes the embedding's size (51864 rows).
"""
import os
import struct
import sys

DT = {"f32": (0, 4), "i8": (1, 1), "i16": (2, 2), "f16": (4, 2)}


def s(name):
    b = name.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def var(name, dims, dt):
    code, size = DT[dt]
    n = 1
    for d in dims:
        n *= d
    return (s(name) + struct.pack("<B", len(dims)) + b"".join(struct.pack("<I", d) for d in dims)
            + struct.pack("<BI", code, n * size) + bytes((i * 7) & 0x3F for i in range(n * size)))


def scalar(name, dt, v):
    code, size = DT[dt]
    return s(name) + struct.pack("<BBI", 0, code, size) + v.to_bytes(size, "little", signed=True)


def model(n, vocab, enc_layers, dt):
    out = []

    def lin(p, rows, cols):
        out.append(var(p + "/weight", [rows, cols], dt))
        if dt == "i8":
            out.append(var(p + "/weight_scale", [rows], "f32"))
        out.append(var(p + "/bias", [rows], "f16"))

    def ln(p):
        out.append(var(p + "/beta", [n], "f16"))
        out.append(var(p + "/gamma", [n], "f16"))

    def layer(p, dec):
        if dec:
            ln(p + "/attention/layer_norm")
            lin(p + "/attention/linear_0", n, n)
            lin(p + "/attention/linear_1", 2 * n, n)
            lin(p + "/attention/linear_2", n, n)
        ln(p + "/ffn/layer_norm")
        lin(p + "/ffn/linear_0", 4 * n, n)
        lin(p + "/ffn/linear_1", n, 4 * n)
        ln(p + "/self_attention/layer_norm")
        lin(p + "/self_attention/linear_0", 3 * n, n)
        lin(p + "/self_attention/linear_1", n, n)

    out.append(scalar("decoder/activation", "i8", 3))
    out.append(var("decoder/embeddings/weight", [vocab, n], "f16"))
    layer("decoder/layer_0", True)
    ln("decoder/layer_norm")
    out.append(scalar("decoder/num_heads", "i16", 1))
    out.append(var("decoder/position_encodings/encodings", [2, n], "f16"))
    out.append(scalar("decoder/pre_norm", "i8", 1))
    out.append(var("encoder/conv1/bias", [n], "f16"))
    out.append(var("encoder/conv1/weight", [n, 2, 3], "f16"))
    out.append(var("encoder/conv2/bias", [n], "f16"))
    out.append(var("encoder/conv2/weight", [n, n, 3], "f16"))
    for i in range(enc_layers):
        layer("encoder/layer_%d" % i, False)
    ln("encoder/layer_norm")
    out.append(scalar("encoder/num_heads", "i16", 1))
    out.append(var("encoder/position_encodings/encodings", [2, n], "f16"))
    head = struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<II", 3, len(out))
    alias = struct.pack("<I", 1) + s("decoder/projection/weight") + s("decoder/embeddings/weight")
    return head + b"".join(out) + alias


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    seeds = {
        "seed-en-f16.bin": model(1, 51864, 1, "f16"),
        "seed-ml-f32.bin": model(2, 51865, 2, "f32"),
        "seed-en-i8.bin": model(1, 51864, 1, "i8"),
    }
    first = seeds["seed-en-f16.bin"]
    for n in (40, 300, 2000):
        seeds["seed-prefix-%d.bin" % n] = first[:n]
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""t_vram_oom_silent.py MODEL.bin: make a random-weight Whisper model
(tapedeck-mkmodel's ggml file, edited in place) decide every window in two
decoder steps, for t_vram_oom.

A random model's windows are improbable: each is decoded again at every
fallback temperature (six decodes of up to max_tokens steps), and on
lavapipe a decoder step costs seconds (the logits' 51,864 rows), which
made t_vram_oom the longest end-to-end test. Here the decoder's final
LayerNorm gets weight 0 and a small constant bias, so its output is that
bias at every position; the token-embedding rows of the no-speech token
and of the end of text are set along it, so that every step's logits are
about 30 for no-speech, 20 for the end of text and within a few tenths of
0 for every other token. The decoding rules then run as they do for a
silent window of a real model: the first step must be a timestamp, the
second is the end of text, and no_speech_prob (about 1) above 0.6 with a
low average log-probability skips the window with no fallback. Everything
else (the encoder, every decoder dispatch, the sampler on the device, the
out-of-memory steps the test checks) runs as before.
"""
import struct
import sys


def main(path):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        off = 0

        def i32():
            nonlocal off
            v = struct.unpack_from("<i", data, off)[0]
            off += 4
            return v

        if i32() != 0x67676D6C:
            sys.exit(f"{path}: not a ggml model")
        hp = [i32() for _ in range(11)]
        n_vocab, n_state = hp[0], hp[6]
        n_mels, n_fft = i32(), i32()
        off += 4 * n_mels * n_fft
        for _ in range(i32()):
            n = i32()  # (not off += i32(): that would add to off as it was before the read)
            off += n
        tensors = {}  # name: (offset, "e" for F16 or "f" for F32, elements)
        while off < len(data):
            n_dims, name_len, ftype = i32(), i32(), i32()
            ne = [i32() for _ in range(n_dims)]
            name = bytes(data[off:off + name_len]).decode()
            off += name_len
            count = 1
            for n in ne:
                count *= n
            fmt = "e" if ftype == 1 else "f"
            tensors[name] = (off, fmt, count)
            off += count * struct.calcsize(fmt)

        def put(name, first, values):
            """values into tensor name from element first on"""
            o, fmt, count = tensors[name]
            assert first + len(values) <= count
            struct.pack_into(f"<{len(values)}{fmt}", data, o + first * struct.calcsize(fmt), *values)

        beta = 0.01
        put("decoder.ln.weight", 0, [0.0] * n_state)
        put("decoder.ln.bias", 0, [beta] * n_state)
        eot = 50257 if n_vocab >= 51865 else 50256
        nospeech = n_vocab - 1501 - 2
        put("decoder.token_embedding.weight", nospeech * n_state, [30.0 / (beta * n_state)] * n_state)
        put("decoder.token_embedding.weight", eot * n_state, [20.0 / (beta * n_state)] * n_state)
        f.seek(0)
        f.write(data)


if __name__ == "__main__":
    main(sys.argv[1])

#!/bin/sh
# run-fuzz.sh KIND FUZZER WORKDIR: a bounded libFuzzer run over a parser of
# outside data. KIND is `model` (the ggml model loader) or `ct2` (the
# CTranslate2 model.bin parser `tapedeck models import` reads; seeds from
# tests/fuzz/ct2_seeds.py, a dictionary of its variable names).
#
# For `model` it makes a seed corpus in WORKDIR/corpus with $MKMODEL (tapedeck-mkmodel):
# models of every vocabulary kind (English-only, multilingual, large-v3),
# F16 and F32, with the smallest dims the loader takes (1 wide, 1 head,
# contexts of 1, few mels) and a short synthetic vocabulary
# (--vocab-count; the loader names the ids a file leaves out), so a seed
# is ~100-200 KB, most of it the token embedding that n_vocab fixes; plus
# prefixes of one, which reach the header checks quickly. Tensor names go
# into a libFuzzer dictionary. Runs the fuzzer for $FUZZ_TIME seconds
# (default 30), prints one summary line, and exits nonzero on a crash,
# a leak, a sanitizer report or a timeout (the input is left in
# WORKDIR/artifacts). New inputs found accumulate in WORKDIR/corpus.
set -u

if [ $# -ne 3 ]; then
    echo "usage: MKMODEL=path/tapedeck-mkmodel $0 model|ct2 FUZZER WORKDIR" >&2
    exit 2
fi
kind=$1
fuzzer=$2
work=$3
time_s=${FUZZ_TIME:-30}
corpus=$work/corpus
art=$work/artifacts
log=$work/fuzz.log
dict=$work/$kind.dict
mkdir -p "$corpus" "$art" || exit 1
case $kind in
model) what="model loader" ;;
ct2)
    what="CTranslate2 parser"
    python3 "$(dirname "$0")/ct2_seeds.py" "$corpus" || exit 1
    {
        for s in WhisperSpec decoder/ encoder/ layer_0/ layer_1/ self_attention/ attention/ \
            ffn/ linear_0 linear_1 linear_2 layer_norm /gamma /beta /weight /bias weight_scale \
            embeddings/weight position_encodings/encodings conv1/ conv2/ num_heads activation \
            pre_norm alibi scale_embeddings projection/weight; do
            printf '"%s"\n' "$s"
        done
    } >"$dict"
    ;;
*) echo "run-fuzz: unknown kind '$kind' (model, ct2)" >&2; exit 2 ;;
esac
if [ "$kind" = model ]; then
if [ -z "${MKMODEL:-}" ] || [ ! -x "$MKMODEL" ]; then
    echo "run-fuzz: MKMODEL must name the tapedeck-mkmodel binary" >&2
    exit 2
fi

corpus=$work/corpus
art=$work/artifacts
log=$work/fuzz.log
mkdir -p "$corpus" "$art" || exit 1

tiny="--n-audio-state 1 --n-text-state 1 --n-audio-head 1 --n-text-head 1 \
--n-audio-layer 1 --n-text-layer 1 --n-audio-ctx 1 --n-text-ctx 1 --vocab-count 40"
mk() {
    out=$1
    shift
    # shellcheck disable=SC2086
    "$MKMODEL" $tiny "$@" --out "$corpus/$out" >/dev/null || {
        echo "run-fuzz: $MKMODEL failed for seed $out" >&2
        exit 1
    }
}
mk seed-ml-f16.bin --dims tiny --n-mels 1 --seed 1
mk seed-en-f32.bin --dims tiny.en --n-mels 2 --ftype f32 --seed 2
mk seed-v3-f16.bin --dims large-v3 --n-mels 3 --seed 3
# two layers each, and an encoder wider than the decoder
mk seed-2layer.bin --dims base --n-mels 1 --n-audio-layer 2 --n-text-layer 2 \
    --n-audio-state 2 --n-audio-head 2 --seed 4
for n in 60 1000 2000; do
    head -c "$n" "$corpus/seed-ml-f16.bin" >"$corpus/seed-prefix-$n.bin" || exit 1
done

{
    for s in encoder.positional_embedding encoder.conv1.weight encoder.conv1.bias \
        encoder.conv2.weight encoder.conv2.bias encoder.ln_post.weight encoder.ln_post.bias \
        decoder.positional_embedding decoder.token_embedding.weight decoder.ln.weight \
        decoder.ln.bias encoder.blocks.0. decoder.blocks.0. attn_ln cross_attn_ln \
        cross_attn. attn.query attn.key attn.value attn.out mlp_ln mlp.0 mlp.2 .weight .bias \
        lmgg; do
        printf '"%s"\n' "$s"
    done
    printf '"\\x6c\\x6d\\x67\\x67"\n'
    printf '"\\x98\\xca\\x00\\x00"\n"\\x99\\xca\\x00\\x00"\n"\\x9a\\xca\\x00\\x00"\n'
    printf '"\\xc9\\x00\\x00\\x00"\n"\\x50\\x00\\x00\\x00"\n"\\x80\\x00\\x00\\x00"\n'
} >"$dict"
fi

start=$(date +%s)
"$fuzzer" -max_total_time="$time_s" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$art/" -dict="$dict" "$corpus" >"$log" 2>&1
rc=$?
end=$(date +%s)
execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz: $what: FAILED (exit $rc) after $((end - start)) s; inputs in $art, log $log"
    exit 1
fi
if [ -z "$execs" ]; then
    tail -n 20 "$log"
    echo "fuzz: $what: no statistics in $log"
    exit 1
fi
echo "fuzz: $what: $execs executions in $((end - start)) s, no crashes"

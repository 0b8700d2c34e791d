#!/bin/sh
# whisper-cpu.sh: Whisper CPU backend speed for tiny, base and small.
#
#   bench/whisper-cpu.sh [THREADS] [COMPUTES]   (defaults: 2, "int8 f32")
#
# Runs whisper-bench (BENCH_BIN, default build/benchbin/whisper-bench) on
# random-weight F16 models of the standard sizes, generated in a temporary
# folder: encoder ms per 30-s window (with our packed GEMM and with
# OpenBLAS's), the GFLOP/s that is, decoder ms per token (greedy and
# 5-beam, a fixed 64 tokens after a 4-token prompt), peak RSS. Speed does
# not depend on the weights' values, so random weights measure it
# honestly. Each size runs with each compute type (--compute: int8, the
# default on CPUs with AVX-512 VNNI, and f32, the reference; the OpenBLAS
# column only for f32). Prints a Markdown table for bench/RESULTS.md.
set -eu
bin=${BENCH_BIN:-build/benchbin/whisper-bench}
threads=${1:-2}
computes=${2:-int8 f32}
[ -x "$bin" ] || { echo "whisper-cpu.sh: $bin not built (make bench)" >&2; exit 1; }
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
flags=$(grep -o -w -E 'avx512f|avx512_vnni|avx2|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')
echo "machine: $(nproc) CPUs, $cpu; $flags; $(date +%Y-%m-%d)"
echo "command: $bin --dims D --threads $threads (random-weight F16 models, 64 tokens per run)"
echo
first=--header
for d in tiny base small; do
    for c in $computes; do
        gemm=both
        [ "$c" = f32 ] || gemm=own
        "$bin" --dims "$d" --threads "$threads" --compute "$c" --gemm "$gemm" $first
        first=
    done
done

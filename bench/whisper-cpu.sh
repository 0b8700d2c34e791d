#!/bin/sh
# whisper-cpu.sh: Whisper CPU backend speed for tiny, base and small.
#
#   bench/whisper-cpu.sh [THREADS]        (default 2)
#
# Runs whisper-bench (BENCH_BIN, default build/benchbin/whisper-bench) on
# random-weight F16 models of the standard sizes, generated in a temporary
# folder: encoder ms per 30-s window (with our packed GEMM and with
# OpenBLAS's), the GFLOP/s that is, decoder ms per token (greedy and
# 5-beam, a fixed 64 tokens after a 4-token prompt), peak RSS. Speed does
# not depend on the weights' values, so random weights measure it
# honestly. Prints a Markdown table for bench/RESULTS.md.
set -eu
bin=${BENCH_BIN:-build/benchbin/whisper-bench}
threads=${1:-2}
[ -x "$bin" ] || { echo "whisper-cpu.sh: $bin not built (make bench)" >&2; exit 1; }
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
flags=$(grep -o -w -E 'avx512f|avx2|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')
echo "machine: $(nproc) CPUs, $cpu; $flags; $(date +%Y-%m-%d)"
echo "command: $bin --dims D --threads $threads (random-weight F16 models, 64 tokens per run)"
echo
first=--header
for d in tiny base small; do
    "$bin" --dims "$d" --threads "$threads" $first
    first=
done

#!/bin/sh
# restore-device.sh: the restore task's GPU paths on an NVIDIA machine
# (NVDEC decoding, yadif_cuda, scale_cuda, nlmeans_opencl; NVENC where the
# card has one, else the reason it fell back to x264) beside the CPU
# on the same scenes, in one run, for bench/RESULTS.md.
#
#   ./bench/restore-device.sh pack BIN DIR   (here: footage, bundle, stubs;
#                                             PACK=media or PACK=bundle: one of them)
#   ./bench/restore-device.sh run DIR [OUT]  (on the GPU machine)
#
# pack makes two 2-s 720x480 TFF scenes (and a 6-s one, "long", like clean) in H.264 4:2:0 + AAC (what NVDEC
# takes; camcorders and capture cards record it): "analog" carries the
# restore tests' faults (chroma delayed 3 px, washed-out levels, noise, an
# 8-line head-switching band), so CPU steps come before the deinterlacer
# and NVDEC's frames go down to memory first; "clean" has no analog fault,
# so decoded frames stay on the card into yadif_cuda. It bundles BIN with
# its Debian libraries (tools/device-bundle.sh's layout), replacing those
# the restore path never calls (BLAS, ICU data, codecs we do not encode
# with, text-to-speech voices) by stubs that export the same symbols (each
# traps if called), so that the whole fits the 64 MiB a device run carries.
#
# run restores each scene with the CPU (--devices cpu, 16 threads, CUDA
# and OpenCL off) and with one GPU worker (--devices auto --cpu-workers 0),
# fast, high (nlmeans) and hd (scale to 1440x1080), and prints one
# Markdown row per run from the scene's restore.json. The machine's OpenCL
# vendor folder may list no nvidia.icd although the driver's
# libnvidia-opencl.so.1 is there: run points OCL_ICD_VENDORS at a folder
# whose nvidia.icd names it, and last runs once without (on a short cut of
# the analog scene, noisy enough for nlmeans), to show the reason tapedeck
# logs. Outputs are copied to OUT (if given) for SSIM
# against each other back home.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:?usage: restore-device.sh pack BIN DIR | run DIR [OUT]}
fail() { echo "restore-device: $*" >&2; exit 1; }

# Libraries tapedeck links (through libav* and the whisper engine) that
# the restore path never calls.
STUBS="libopenblas.so.0 liblapack.so.3 libicudata.so.72 libcodec2.so.1.0 librsvg-2.so.2
libplacebo.so.208 libSvtAv1Enc.so.1 libflite_cmu_us_rms.so.1 libflite_cmu_us_slt.so.1
libflite_cmu_us_awb.so.1 libflite_cmu_us_kal16.so.1 libflite_cmu_us_kal.so.1 libflite_cmu_time_awb.so.1"

stub() { # stub LIB OUTDIR: a library of the same soname exporting the same symbols
    python3 - "$1" "$2" <<'EOF'
import subprocess, sys, os
lib, outdir = sys.argv[1], sys.argv[2]
dyn = subprocess.run(['readelf', '-d', lib], capture_output=True, text=True, check=True).stdout
soname = [l for l in dyn.splitlines() if 'SONAME' in l][0].split('[')[1].rstrip(']')
src = ['extern long write(int, const void *, unsigned long);',
       'static void stub_called(const char *n) { const char *m = "tapedeck bundle: stub called: ";',
       '  unsigned long k = 0; while (m[k]) k++; write(2, m, k); k = 0; while (n[k]) k++; write(2, n, k);',
       '  write(2, "\\n", 1); __builtin_trap(); }']
syms = subprocess.run(['readelf', '--dyn-syms', '-W', lib], capture_output=True, text=True, check=True).stdout
for l in syms.splitlines():
    f = l.split()
    if len(f) < 8 or f[6] in ('UND', 'Ndx') or '@' in f[7]:
        continue
    if f[3] in ('FUNC', 'IFUNC', 'NOTYPE'):
        src.append('void %s(void) { stub_called("%s"); }' % (f[7], f[7]))
    elif f[3] == 'OBJECT':
        size = int(f[2], 0)
        src.append('__attribute__((aligned(16))) char %s[%d];' % (f[7], max(size, 1)))
c = os.path.join(outdir, soname + '.c')
open(c, 'w').write('\n'.join(src) + '\n')
subprocess.run(['gcc', '-shared', '-fPIC', '-w', '-o', os.path.join(outdir, soname), c,
                '-Wl,-soname,' + soname], check=True)
os.remove(c)
EOF
}

if [ "$mode" = pack ]; then
    bin=${2:?BIN}
    dir=${3:?DIR}
    TD=$bin
    T=$(mktemp -d)
    trap 'rm -rf "$T"' EXIT
    . "$here/../tests/e2e/restore-media.sh"
    mkdir -p "$dir"
    if [ "${PACK:-all}" != bundle ]; then
        rm_clean "$T/clean.mkv" 240 720x480
        rm_degrade "$T/clean.mkv" "$T/analog.mkv" tff 3 tff 8
        rm_degrade "$T/clean.mkv" "$T/plain.mkv" tff 0 tff 0
        for s in analog plain; do
            ffmpeg -nostdin -v error -y -i "$T/$s.mkv" -c:v libx264 -preset fast -crf 23 -pix_fmt yuv420p \
                -flags +ildct+ilme -x264-params tff=1 -c:a aac -b:a 192k "$dir/$s.mp4" || fail "ffmpeg: $s"
        done
        mv "$dir/plain.mp4" "$dir/clean.mp4"
        # A longer clean one, where the GPU paths' fixed start per scene
        # counts less.
        rm_clean "$T/long.mkv" 720 720x480
        rm_degrade "$T/long.mkv" "$T/long_d.mkv" tff 0 tff 0
        ffmpeg -nostdin -v error -y -i "$T/long_d.mkv" -c:v libx264 -preset fast -crf 23 -pix_fmt yuv420p \
            -flags +ildct+ilme -x264-params tff=1 -c:a aac -b:a 192k "$dir/long.mp4" || fail "ffmpeg: long"
        # A short one for the fallback run (nlmeans on the CPU is slow).
        ffmpeg -nostdin -v error -y -i "$dir/analog.mp4" -frames:v 16 -c:v libx264 -preset fast -crf 23 -pix_fmt yuv420p \
            -flags +ildct+ilme -x264-params tff=1 -an "$dir/short.mp4" || fail "ffmpeg: short"
    fi
    [ "${PACK:-all}" = media ] && exit 0
    # The bundle, as tools/device-bundle.sh makes it, with the stubs.
    prefix=/tmp/tapedeck-bundle
    stage="$T/stage"
    mkdir -p "$stage/lib"
    ldd "$bin" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u | while read -r lib; do
        base=$(basename "$lib")
        case " $(echo $STUBS) " in
        *" $base "*) stub "$lib" "$stage/lib" ;;
        *) cp -L "$lib" "$stage/lib/" ;;
        esac
    done
    interp=$(patchelf --print-interpreter "$bin")
    cp -L "$interp" "$stage/lib/"
    cp "$bin" "$stage/tapedeck"
    patchelf --set-interpreter "$prefix/lib/$(basename "$interp")" --force-rpath --set-rpath "$prefix/lib" \
        "$stage/tapedeck"
    tar cf - -C "$stage" . | xz -3 -T2 >"$dir/bundle.tar.xz"
    ls -l "$dir"
    exit 0
fi

[ "$mode" = run ] || fail "unknown mode $mode"
dir=$(cd "${2:?DIR}" && pwd)
out=${3:-}
mkdir -p /tmp/tapedeck-bundle
tar xJf "$dir/bundle.tar.xz" -C /tmp/tapedeck-bundle
TD=/tmp/tapedeck-bundle/tapedeck
W=$(mktemp -d)
nvcl=$(find / -xdev -name 'libnvidia-opencl.so.1' 2>/dev/null | head -n 1 || true)
echo "OpenCL: vendor folder /etc/OpenCL/vendors: $(ls /etc/OpenCL/vendors 2>/dev/null | tr '\n' ' '); driver: ${nvcl:-none}"
mkdir -p "$W/icd"
[ -n "$nvcl" ] && echo "$nvcl" >"$W/icd/nvidia.icd"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true

get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

echo "| run | scene | decode | deinterlace | nlmeans | scale | encode | transcode s | decode / filter / encode s | fps | self-check |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
one() { # one NAME SCENE WHERE [options]: WHERE cpu|gpu|gpu-noicd
    name=$1 scene=$2 where=$3
    shift 3
    case " ${RESTORE_DEVICE_ONLY:-$name} " in *" $name "*) ;; *) return 0 ;; esac
    d="$W/$name"
    mkdir -p "$d"
    cp "$dir/$scene.mp4" "$d/$scene.mp4"
    case $where in
    cpu) set -- --devices cpu --workers 1 --threads 16 --restore-cuda off --restore-opencl off "$@" ;;
    gpu) set -- --devices auto --cpu-workers 0 --threads 16 "$@" ;;
    gpu-noicd) set -- --devices auto --cpu-workers 0 --threads 16 "$@" ;;
    esac
    if [ "$where" = gpu ]; then
        OCL_ICD_VENDORS="$W/icd" "$TD" run "$d" --task restore --no-progress "$@" >"$d/log" 2>&1 || true
    else
        "$TD" run "$d" --task restore --no-progress "$@" >"$d/log" 2>&1 || true
    fi
    J="$d/$scene.restore.json"
    if [ ! -f "$J" ]; then
        echo "| $name | $scene | FAILED: $(grep -E 'ERROR|WARN' "$d/log" | tail -n 3 | tr '\n|' '  ') |"
        return 0
    fi
    if ! command -v python3 >/dev/null; then
        echo "| $name | $scene | (no python3) $(tr -d '\n ' <"$J" | grep -o '"output":{[^}]*}\|"speed":{[^}]*}' | tr '\n|' '  ') |"
    else
    get "$J" "'| $name | $scene | %s | %s | %s | %s | %s: %s | %.2f | %.2f / %.2f / %.2f | %.1f | %s |' % (d['output']['decode_on'], d['output']['deinterlace_on'], d['output']['denoise_on'], d['output']['scale_on'], d['output']['encoder'], d['output'].get('encode_on', '-'), d['speed']['seconds'], d['speed']['decode_s'], d['speed']['filter_s'], d['speed']['encode_s'], d['speed']['fps'], 'ok' if d['self_check']['ok'] else 'FAILED')"
    fi
    grep -E '\[restore\]|\[affinity-verify\]' "$d/log" | cut -c1-400 | sed 's/^/    log: /' || true
    if [ -n "$out" ]; then
        mkdir -p "$out"
        # (at most 8 files of 16 MiB come back from a device run)
        for f in "$d"/*.restored.*; do
            if [ "$where" != gpu-noicd ] && [ "$(stat -c %s "$f")" -lt 16000000 ]; then
                cp "$f" "$out/$name.${f##*.}"
            fi
        done
    fi
}
one cpu-fast-analog analog cpu
one gpu-fast-analog analog gpu
one cpu-fast-clean clean cpu
one gpu-fast-clean clean gpu
one cpu-hd-clean clean cpu --restore-size hd
one gpu-hd-clean clean gpu --restore-size hd
one gpu-high-analog analog gpu --restore-quality high
one cpu-high-analog analog cpu --restore-quality high
one cpu-fast-long long cpu
one gpu-fast-long long gpu
one gpu-high-noicd analog gpu-noicd --restore-quality high --restore-cuda off
echo "chains:"
for n in gpu-fast-analog gpu-fast-clean gpu-hd-clean gpu-high-analog; do
    for j in "$W/$n"/*.restore.json; do
        [ -f "$j" ] && echo "  $n: $(get "$j" "d['decisions']['filter_chain']")"
    done
done
for n in gpu-fast-clean gpu-high-analog; do
    grep -h 'placed=' "$W/$n"/.*.restore.done 2>/dev/null | sed "s/^/  $n marker: /" || true
done

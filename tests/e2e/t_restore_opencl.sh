#!/bin/sh
# t_restore_opencl.sh: --restore-quality high with nlmeans through OpenCL
# (nlmeans_opencl) on whatever OpenCL device this machine has (in CI:
# PoCL on the CPU), against the CPU's nlmeans on the same scene: the same
# filter, so the two outputs must be nearly the same picture (SSIM). Then
# without any OpenCL platform: the scene is still done, on the CPU, and the
# log and restore.json say why.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/restore-media.sh"
command -v ffmpeg >/dev/null || skip "no ffmpeg"
command -v python3 >/dev/null || skip "no python3"
command -v clinfo >/dev/null || skip "no clinfo (package clinfo) to look for an OpenCL device"
clinfo -l 2>/dev/null | grep -q 'Device' || skip "no OpenCL device (install pocl-opencl-icd)"
# PoCL caches compiled kernels here; keep the test's cache with the test.
export POCL_CACHE_DIR="$T/pocl-cache"

A="$T/a"
B="$T/b"
mkdir -p "$A" "$B"
rm_clean "$T/clean.mkv" 8 320x240
rm_degrade "$T/clean.mkv" "$A/scene.mkv" tff 2 tff 0
cp "$A/scene.mkv" "$B/scene.mkv"

"$TD" run "$A" --task restore --restore-quality high --restore-opencl on --restore-format archive --no-progress \
    >"$T/log" 2>&1 || { cat "$T/log"; fail "OpenCL run failed"; }
on=$(json_get "$A/scene.restore.json" "d['output']['denoise_on']")
case "$on" in opencl*) ;; *) cat "$T/log"; fail "denoise ran on '$on', expected opencl" ;; esac
grep -q 'nlmeans_opencl' "$A/scene.restore.json" || fail "no nlmeans_opencl in the chain"

"$TD" run "$B" --task restore --restore-quality high --restore-opencl off --restore-format archive --no-progress \
    >"$T/log2" 2>&1 || { cat "$T/log2"; fail "CPU run failed"; }
grep -q '"nlmeans=s=' "$B/scene.restore.json" || grep -q 'nlmeans=s=' "$B/scene.restore.json" ||
    fail "no CPU nlmeans in the chain"
s=$(rm_ssim "$A/scene.restored.mkv" "$B/scene.restored.mkv")
note "OpenCL against CPU nlmeans, SSIM Y U V: $s"
set -- $s
[ $# -eq 3 ] || fail "could not read SSIM ($s)"
awk "BEGIN{exit !($1 >= 0.97 && $2 >= 0.97 && $3 >= 0.97)}" || fail "OpenCL output differs from the CPU's: $s"

# No OpenCL platform at all: the CPU takes over, and says so.
mkdir -p "$T/no-icd"
rm -f "$A"/.scene.restore.done
OCL_ICD_VENDORS="$T/no-icd" "$TD" run "$A" --task restore --restore-quality high --restore-opencl on \
    --restore-format archive --no-progress >"$T/log3" 2>&1 || { cat "$T/log3"; fail "fallback run failed"; }
grep -q 'OpenCL unavailable' "$T/log3" || { cat "$T/log3"; fail "the fallback is not logged"; }
on=$(json_get "$A/scene.restore.json" "d['output']['denoise_on']")
case "$on" in "cpu (OpenCL unavailable"*) ;; *) fail "fallback recorded as '$on'" ;; esac
echo "ok"

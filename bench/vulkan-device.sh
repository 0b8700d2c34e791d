#!/bin/bash
# vulkan-device.sh: the Vulkan backend's tests and benchmarks on an NVIDIA
# machine (the device machine: Ubuntu, its driver, no Vulkan loader, no
# FFmpeg), comparing variants of the backend's switches in one run, for
# bench/RESULTS.md (issue 11's calls).
#
#   ./bench/vulkan-device.sh pack DIR            (here, after make)
#   ./bench/vulkan-device.sh run DIR OUT [SECS]  (on the GPU machine)
#
# pack copies build/benchbin/vulkan-bench, vk-dispatch and vk-xattn and
# build/tests/test_vulkan_ops and test_vulkan_backend into DIR/bin, their
# Debian libraries but glibc's and the Vulkan loader into DIR/libs.tar.xz,
# and Debian's Vulkan loader and glvnd packages into DIR/gl (apt-get
# download; the NVIDIA driver there needs them). Put DIR in the
# repository, ignored (.git/info/exclude), and carry it.
#
# run unpacks the packages into / (the device's recipe), then for each
# variant in VARIANTS (space-separated; each "default" or VAR=VALUE with
# more joined by commas, e.g. "default TD_VULKAN_CM_F16=1"):
#   - test_vulkan_ops' test_linear_coopmat (OPS_FILTER names others;
#     TEST_PATHS, default coopmat) and test_vulkan_backend without its
#     allocation-failure sweep (slow on NVIDIA's driver; CI sweeps on
#     lavapipe; BACKEND_FILTER and BACKEND_SKIP choose others, an empty
#     BACKEND_SKIP none), each
#     within 150 s;
#   - vulkan-bench --stats on medium (the driver's registers a shader and
#     the GPU time per shader);
# then medium end to end (--windows 4 --batch 1,256 --tokens 64 --runs 3
# --step sample) for every variant, ROUNDS (default 2) times interleaved,
# and last base, small and large-v3 with the variant of the fastest medium
# encoder (DIMS and MORE_DIMS name others, BENCH_ARGS other arguments;
# DISPATCH=1 runs vk-dispatch first, XATTN="WxR,..." vk-xattn on those
# cases (W windows of R rows; then one block of keys, and inputs in host
# memory); TEST_LIMIT (default 150) is each test binary's limit; TESTS=0 leaves the tests out,
# TEST_VARIANTS="V ..." tests those variants only, STATS=0 the --stats
# runs; PROFILE_BATCHES, default 256, the batches whose step is profiled
# per shader and in order, with each of PROFILE_VARIANTS, by default the
# first variant).
# Steps are skipped once SECS (default 420) have passed, so that the call
# ends inside its limit. Every log goes to OUT/logs.tar.xz, a summary
# (rows, pass/fail lines, per-shader times) to OUT/summary.txt as it runs.
set -u
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:?usage: vulkan-device.sh pack DIR | run DIR OUT [SECS]}
fail() { echo "vulkan-device: $*" >&2; exit 1; }

if [ "$mode" = pack ]; then
    dir=${2:?DIR}
    top=$(cd "$here/.." && pwd)
    mkdir -p "$dir/bin" "$dir/gl" || fail "mkdir $dir"
    stage=$(mktemp -d) || fail "mktemp"
    trap 'rm -rf "$stage"' EXIT
    # every library the binaries load but glibc's own (the machine's newer
    # glibc serves them) and the Vulkan loader (Debian's, from gl/); the
    # NVIDIA driver's X libraries come along through FFmpeg's
    libs=$stage/libs.txt
    : >"$libs"
    for b in benchbin/vulkan-bench benchbin/vk-dispatch benchbin/vk-xattn tests/test_vulkan_ops \
        tests/test_vulkan_backend; do
        [ -x "$top/build/$b" ] || fail "build/$b missing: run make first"
        cp "$top/build/$b" "$dir/bin/" || fail "cp $b"
        ldd "$top/build/$b" >"$stage/ldd.txt" || fail "ldd $b"
        ! grep -q 'not found' "$stage/ldd.txt" || fail "$b: $(grep 'not found' "$stage/ldd.txt")"
        awk '/=> \// {print $3}' "$stage/ldd.txt" >>"$libs"
    done
    glibc='/(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|ld-linux[^/]*|libvulkan)\.so'
    sort -u "$libs" | grep -Ev "$glibc" >"$stage/keep.txt"
    while read -r lib; do
        cp -L "$lib" "$stage/" || fail "cp $lib"
    done <"$stage/keep.txt"
    rm -f "$libs" "$stage/ldd.txt" "$stage/keep.txt"
    tar cf - -C "$stage" . | xz -6 -T0 >"$dir/libs.tar.xz" || fail "xz"
    # Debian's loader and glvnd for amd64, whatever this machine is
    lists=$(mktemp -d) || fail "mktemp"
    o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
    mkdir -p "$lists/partial"
    # shellcheck disable=SC2086
    apt-get $o update -qq >/dev/null 2>&1 || fail "apt-get update"
    # shellcheck disable=SC2086
    (cd "$dir/gl" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 \
        libglx0 libgles2 >/dev/null 2>&1) || fail "apt-get download"
    rm -rf "$lists"
    cp "$0" "$dir/vulkan-device.sh"
    du -sh "$dir"
    exit 0
fi

[ "$mode" = run ] || fail "unknown mode $mode"
dir=${2:?DIR}
out=${3:?OUT}
secs=${4:-420}
t0=$(date +%s)
logs=$out/logs
sum=$out/summary.txt
mkdir -p "$logs" || fail "mkdir $logs"
el() { echo $(($(date +%s) - t0)); }
say() { echo "$*" | tee -a "$sum"; }
if [ "${GL_INSTALL:-1}" = 1 ]; then # GL_INSTALL=0: a machine with its own loader
    for f in "$dir"/gl/*.deb; do dpkg -x "$f" / || fail "dpkg -x $f"; done
    ldconfig
    export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
fi
rm -rf /tmp/vulkan-device-lib
mkdir -p /tmp/vulkan-device-lib || fail "mkdir /tmp/vulkan-device-lib"
tar xJf "$dir/libs.tar.xz" -C /tmp/vulkan-device-lib || fail "libraries"
export LD_LIBRARY_PATH=/tmp/vulkan-device-lib
bin=$dir/bin
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee -a "$sum"

# step NAME LIMIT VARIANT CMD...: one command with the variant's variables
# and a cache folder of its own (the timed trial's picks), its log kept
step() {
    local name=$1 limit=$2 variant=$3
    shift 3
    if [ "$(el)" -gt "$secs" ]; then
        say "== $name skipped (past $secs s)"
        return
    fi
    local vars=() s
    [ "$variant" = default ] || IFS=, read -r -a vars <<<"$variant"
    s=$(date +%s)
    env "${vars[@]}" XDG_CACHE_HOME="/tmp/vulkan-device-cache/$variant" \
        timeout -k 10 "$limit" "$@" >"$logs/$name.log" 2>&1
    local rc=$?
    say "== $name [$variant] rc=$rc $(($(date +%s) - s)) s (at $(el) s)"
    grep -E '^\||GPU time|Register Count|PASSED|FAILED|worst|rel L2|ERROR|order|per (dispatch|phase)|a dispatch|^vk-|windows x|per row /' \
        "$logs/$name.log" | head -80 >>"$sum"
}

# DISPATCH=1: first, vk-dispatch (what a dispatch costs by itself)
[ "${DISPATCH:-0}" = 0 ] || step dispatch 60 default "$bin/vk-dispatch" --n 200 --k 1024
# XATTN="WxR,...": vk-xattn (the cross-attention's kernels one at a time)
if [ -n "${XATTN:-}" ]; then
    step xattn 120 default "$bin/vk-xattn" --cases "$XATTN"
    step xattn1blk 60 default "$bin/vk-xattn" --cases 4x64 --keys 64
    step xattnhost 60 TD_VULKAN_INPUT_MEM=host "$bin/vk-xattn" --cases 4x64,64x4
fi
read -r -a variants <<<"${VARIANTS:-default}"
dims=${DIMS:-medium}
n=0
bench_args=${BENCH_ARGS:---windows 4 --batch 1,256 --tokens 64 --runs 3 --step sample}
for v in "${variants[@]}"; do
    n=$((n + 1))
    # TEST_VARIANTS (default: every variant) names the variants tested
    if [ "${TESTS:-1}" != 0 ] && [[ " ${TEST_VARIANTS:-$v} " == *" $v "* ]]; then
        step "ops$n" "${TEST_LIMIT:-150}" "$v" env TEST_FILTER="${OPS_FILTER:-test_linear_coopmat}" \
            TEST_PATHS="${TEST_PATHS:-coopmat}" "$bin/test_vulkan_ops"
        step "backend$n" "${TEST_LIMIT:-150}" "$v" env TEST_FILTER="${BACKEND_FILTER:-*}" \
            TEST_SKIP="${BACKEND_SKIP-test_open_alloc_failures}" "$bin/test_vulkan_backend"
    fi
    [ "${STATS:-1}" = 0 ] ||
        step "stats$n" 60 "$v" "$bin/vulkan-bench" --dims "$dims" --windows 4 --batch 1 --tokens 16 \
        --runs 1 --stats
done
# where a big batch's step goes: GPU time per shader
read -r -a pvariants <<<"${PROFILE_VARIANTS:-${variants[0]}}"
n=0
for v in "${pvariants[@]}"; do
    n=$((n + 1))
    for bb in ${PROFILE_BATCHES-256}; do
        step "profile$bb.$n" 60 "$v" "$bin/vulkan-bench" --dims "$dims" --windows 4 \
            --batch "$bb" --tokens 16 --runs 1 --step sample --profile
    done
done
best=default bestms=
for r in $(seq "${ROUNDS:-2}"); do
    n=0
    for v in "${variants[@]}"; do
        n=$((n + 1))
        # shellcheck disable=SC2086
        step "$dims$n.$r" 90 "$v" "$bin/vulkan-bench" --dims "$dims" $bench_args
        ms=$(grep "^| $dims " "$logs/$dims$n.$r.log" 2>/dev/null | tail -1 |
            awk -F'|' '{gsub(/ /, "", $5); print $5}')
        if [ -n "$ms" ] && { [ -z "$bestms" ] || awk -v a="$ms" -v b="$bestms" 'BEGIN { exit !(a < b) }'; }; then
            best=$v bestms=$ms
        fi
    done
done
say "fastest $dims encoder: $best ($bestms ms a window)"
for d in ${MORE_DIMS-base small large-v3}; do
    # shellcheck disable=SC2086
    step "$d" 100 "$best" "$bin/vulkan-bench" --dims "$d" $bench_args
done
tar cJf "$out/logs.tar.xz" -C "$out" logs && rm -rf "$logs"
say "total $(el) s"

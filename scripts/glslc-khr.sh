#!/bin/sh
# glslc-khr.sh: glslc's command line, as scripts/embed-spirv.sh uses it,
# over the glslang and spirv-opt that scripts/fetch-glslang.sh fetched:
# the compiler of the shaders that need GL_KHR_cooperative_matrix where
# the installed glslc is too old for it (Debian 12's).
#
#   glslc-khr.sh --target-env=vulkan1.2 -O -I DIR [-DNAME=VALUE] -o OUT SRC
#
# GLSLANG_PREFIX names the tools' prefix (default: fetch-glslang.sh's).
# glslangValidator writes unoptimized SPIR-V; spirv-opt -O then does what
# glslc's -O does (it unrolls the [[unroll]] loops, which keeps the
# matrix accumulators out of arrays in memory).
set -eu
prefix=${GLSLANG_PREFIX:-$("$(dirname "$0")/fetch-glslang.sh" --print-dir)}
env=vulkan1.2 opt=0 out= src=
set -- "$@" --end
while [ "$1" != --end ]; do
    case $1 in
    --target-env=*) env=${1#--target-env=} ;;
    -O) opt=1 ;;
    -I) set -- "$@" "-I$2"; shift ;;
    -I*|-D*) set -- "$@" "$1" ;;
    -o) out=$2; shift ;;
    -*) echo "glslc-khr: unsupported option $1" >&2; exit 2 ;;
    *) src=$1 ;;
    esac
    shift
done
shift # --end; what is left: the -I and -D options, in order
[ -n "$out" ] && [ -n "$src" ] || { echo "usage: glslc-khr.sh [--target-env=ENV] [-O] [-I DIR] [-DX=Y] -o OUT SRC" >&2; exit 2; }
export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
"$prefix/bin/glslangValidator" -V --quiet --target-env "$env" "$@" -o "$tmp" "$src" >&2
if [ "$opt" = 1 ]; then
    "$prefix/bin/spirv-opt" -O --target-env="$env" "$tmp" -o "$out"
else
    cp "$tmp" "$out"
fi

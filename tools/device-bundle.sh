#!/bin/sh
# device-bundle.sh BIN OUTDIR: package a built tapedeck with every shared
# library it loads (glibc included) so it runs on a machine that has none
# of its Debian dependencies, such as the GPU machine used to prove the
# NVML/CUDA paths. The copy of BIN gets its ELF interpreter and RPATH
# (DT_RPATH, which unlike RUNPATH also serves the bundled libraries' own
# dependencies) pointed at /tmp/tapedeck-bundle/lib, where OUTDIR/bundle.tar.xz must be
# unpacked (tar xJf bundle.tar.xz -C /tmp/tapedeck-bundle). The GPU
# driver's own libraries (libcuda, libnvidia-ml) are not bundled: they are
# found on the target as usual.
#
# A developer tool: needs patchelf and xz (Debian packages of those names).
set -eu
bin=${1:?usage: device-bundle.sh BIN OUTDIR}
out=${2:?usage: device-bundle.sh BIN OUTDIR}
prefix=/tmp/tapedeck-bundle
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$out"
ldd "$bin" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | sort -u | while read -r lib; do
    cp -L "$lib" "$stage/lib/"
done
interp=$(patchelf --print-interpreter "$bin")
cp -L "$interp" "$stage/lib/"
cp "$bin" "$stage/tapedeck"
patchelf --set-interpreter "$prefix/lib/$(basename "$interp")" --force-rpath --set-rpath "$prefix/lib" "$stage/tapedeck"
tar cf - -C "$stage" . | xz -6 -T0 >"$out/bundle.tar.xz"
ls -l "$out/bundle.tar.xz"

#!/bin/sh
# lavapipe-chroot.sh: run Vulkan tests built here on a lavapipe that has
# VK_KHR_cooperative_matrix, which Debian 12's (Mesa 22.3) lacks: Debian
# 13 with Mesa from trixie-backports (26.1 when this was written: 8x8x8
# fragments, subgroups of 8), in a chroot made by debootstrap. The
# binaries stay the ones built on this machine; the libraries they need
# that the chroot lacks (FFmpeg's, PocketSphinx's) are copied beside them.
# How bench/RESULTS.md's "through VK_KHR_cooperative_matrix, proven on
# lavapipe" figures were taken. Needs root, debootstrap and the network
# to Debian's mirror; not part of make check.
#
#   tests/khr/lavapipe-chroot.sh [--root DIR] COMMAND...
#
# COMMAND runs in the chroot from this repository's root (bind-mounted
# at the same path, with ../shared and the weights cache), e.g.
#   tests/khr/lavapipe-chroot.sh env TEST_FILTER=test_linear_coopmat build/tests/test_vulkan_ops
#   tests/khr/lavapipe-chroot.sh build/tapedeck devices
# DIR (default /tmp/tapedeck-trixie) is made once and kept.
set -eu
root=/tmp/tapedeck-trixie
if [ "${1:-}" = --root ]; then
    root=${2:?--root needs a folder}
    shift 2
fi
[ $# -gt 0 ] || { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "lavapipe-chroot: needs root (chroot, mount)" >&2; exit 1; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
mirror=http://deb.debian.org/debian

if [ ! -x "$root/usr/bin/apt-get" ]; then
    command -v debootstrap >/dev/null || { echo "lavapipe-chroot: no debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    debootstrap --variant=minbase --include=libvulkan1,libopenblas0,libcmocka0 trixie "$root" "$mirror"
    echo "deb $mirror trixie-backports main" >"$root/etc/apt/sources.list.d/backports.list"
    chroot "$root" apt-get update -qq
    chroot "$root" apt-get install -y -qq -t trixie-backports mesa-vulkan-drivers >/dev/null
fi

# the libraries the binaries need that the chroot does not have
libs="$root/opt/host-libs"
mkdir -p "$libs"
for bin in "$repo"/build/tapedeck "$repo"/build/tests/test_vulkan_*; do
    [ -x "$bin" ] || continue
    ldd "$bin" | awk '/=> \//{print $3}'
done | sort -u | grep -vE '/(libc|libm|libgcc_s|libstdc\+\+|libpthread|libdl|librt)\.so' |
    while read -r lib; do
        [ -e "$libs/$(basename "$lib")" ] || cp -L "$lib" "$libs/"
    done

mounted=""
bind() { # SRC DST: bind-mount where SRC exists
    [ -d "$1" ] || return 0
    mkdir -p "$root$2"
    mountpoint -q "$root$2" || { mount --bind "$1" "$root$2" && mounted="$root$2 $mounted"; }
}
bind "$repo" "$repo"
bind "$(dirname "$repo")/shared" "$(dirname "$repo")/shared"
bind "${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck" /root/.cache/tapedeck
bind /proc /proc
trap 'for m in $mounted; do umount "$m"; done' EXIT
rc=0
chroot "$root" /usr/bin/env LD_LIBRARY_PATH=/opt/host-libs sh -c 'cd "$0" && exec "$@"' "$repo" "$@" || rc=$?
exit $rc

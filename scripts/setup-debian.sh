#!/bin/sh
# setup-debian.sh: install the Debian 12 packages tapedeck builds, tests and
# demos with. Idempotent: packages already present are left alone, and
# nothing is fetched when everything is installed.
set -eu

PACKAGES="
build-essential make pkg-config ca-certificates
libavformat-dev libavcodec-dev libavutil-dev libswresample-dev libavfilter-dev libswscale-dev
ffmpeg
libpocketsphinx-dev libsphinxbase-dev pocketsphinx-en-us pocketsphinx-testdata
espeak-ng
libjansson-dev
pocl-opencl-icd clinfo
libcmocka-dev
libopenblas-dev
clang libclang-rt-14-dev
zlib1g-dev
libvulkan-dev glslc spirv-tools mesa-vulkan-drivers
libze-dev
python3 python3-pip procps util-linux
"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "setup: all Debian packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "setup: need root (or sudo) to install:$missing" >&2
        exit 1
    fi
fi

echo "setup: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing

#!/bin/sh
# record-devices.sh: copy the sysfs files device discovery reads into a
# fixture tree (tests/fixtures/devices/NAME/sys/...), with the same layout
# and links, plus what `tapedeck devices` says on this machine (NVML's and
# Level Zero's answers included), so a real machine's tree can be replayed
# by the unit tests. Reads only; writes only under OUT.
#
#   scripts/record-devices.sh OUT [TAPEDECK]
set -eu
out=${1:?usage: record-devices.sh OUT [TAPEDECK]}
td=${2:-build/tapedeck}
sys=${SYSFS:-/sys}
mkdir -p "$out/sys/class/drm" "$out/sys/bus/pci/devices"

copy() { # copy file $1 to $2 if it is readable
    [ -r "$1" ] || return 0
    cat "$1" >"$2" 2>/dev/null || rm -f "$2"
}

for card in "$sys"/class/drm/card*; do
    name=$(basename "$card")
    case "$name" in *-*) continue ;; esac
    [ -e "$card/device" ] || continue
    addr=$(basename "$(readlink -f "$card/device")")
    dev="$out/sys/bus/pci/devices/$addr"
    mkdir -p "$dev" "$out/sys/class/drm/$name"
    for f in vendor device class numa_node local_cpulist mem_info_vram_total mem_info_vram_used \
        product_name unique_id; do
        copy "$card/device/$f" "$dev/$f"
    done
    if [ -r "$card/device/tile0/physical_vram_size_bytes" ]; then
        mkdir -p "$dev/tile0"
        copy "$card/device/tile0/physical_vram_size_bytes" "$dev/tile0/physical_vram_size_bytes"
    fi
    for f in lmem_total_bytes lmem_avail_bytes; do
        copy "$card/$f" "$out/sys/class/drm/$name/$f"
    done
    ln -sfn "../../../bus/pci/devices/$addr" "$out/sys/class/drm/$name/device"
done
# NVIDIA cards without nvidia-drm have no DRM node: their PCI files still
# give NUMA node and local CPUs
for d in "$sys"/bus/pci/devices/*; do
    [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue
    case "$(cat "$d/class" 2>/dev/null)" in 0x03*) ;; *) continue ;; esac
    dev="$out/sys/bus/pci/devices/$(basename "$d")"
    mkdir -p "$dev"
    for f in vendor device class numa_node local_cpulist; do copy "$d/$f" "$dev/$f"; done
done
if [ -x "$td" ]; then
    "$td" devices >"$out/devices.txt" 2>&1 || true
fi
command -v nvidia-smi >/dev/null 2>&1 &&
    nvidia-smi --query-gpu=index,pci.bus_id,uuid,name,memory.total,memory.free --format=csv >"$out/nvidia-smi.csv" 2>&1 || true
echo "recorded into $out"

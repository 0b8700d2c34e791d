#!/bin/sh
# restore-quality.sh: the restore quality table, one degradation at a time
# and all together, scored against the clean reference as t_restore.sh
# scores its one case (tests/e2e/restore-media.sh makes the footage).
#
#   TAPEDECK_BIN=build/tapedeck ./bench/restore-quality.sh [FRAMES] [QUALITY]
#
# FRAMES clean frames at 59.94p (default 40: 20 interlaced frames, 720x480),
# QUALITY fast (default) or high. Restored losslessly (--restore-format
# archive). Each row: the field order found, the chroma delay found (made:
# 3 px where delayed), what is left of it in the output, head-switching
# lines found (made: 8), the share of legal luma, SSIM Y/U/V of the
# restored file and of bwdif alone (told the right order), and the detail
# ratio (mean gradient energy against the clean picture's).
set -eu
TD=${TAPEDECK_BIN:?TAPEDECK_BIN must point at the tapedeck binary}
FRAMES=${1:-40}
QUALITY=${2:-fast}
here=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/tapedeck-quality.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "restore-quality: $*" >&2; exit 1; }
. "$here/../tests/e2e/restore-media.sh"

rm_clean "$T/clean.mkv" "$FRAMES" 720x480
rm_reference "$T/clean.mkv" "$T/ref.mkv"
g_ref=$(rm_field "$T/ref.mkv" grad)

# degrade_custom OUT ORDER DELAY LEVELS NOISE HS: one fault or several
degrade_custom() {
    out=$1 order=$2 d=$3 lv=$4 nz=$5 hs=$6
    if [ "$order" = tff ]; then il=interleave_top; else il=interleave_bottom; fi
    lut=null; [ "$lv" = 1 ] && lut="lutyuv=y='val*0.62+48'"
    noise=null; [ "$nz" = 1 ] && noise="noise=alls=7:allf=t"
    strip=null
    [ "$hs" -gt 0 ] && strip="split[m][s];[s]crop=iw-24:$hs:24:ih-$hs,pad=iw+24:ih:0:0,noise=alls=60:allf=t[strip];[m][strip]overlay=0:H-$hs"
    ffmpeg -nostdin -v error -y -i "$T/clean.mkv" -f lavfi -i "sine=f=440:r=48000" -filter_complex "
[0:v]chromashift=cbh=$d:crh=$d,$lut,$noise,$strip,scale=out_h_chr_pos=0:out_v_chr_pos=128,format=yuv422p,tinterlace=mode=$il,setfield=$order[v]" \
        -map "[v]" -map 1:a -shortest -c:v ffv1 -c:a pcm_s16le "$out"
}

echo "| degradation | field order | chroma delay found / left px | head-switch lines | legal luma | SSIM Y U V restored | SSIM Y U V bwdif alone | detail ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for case in "interlaced TFF only:tff:0:0:0:0" "interlaced BFF only:bff:0:0:0:0" "chroma delay 3 px:tff:3:0:0:0" \
    "washed-out levels:tff:0:1:0:0" "noise:tff:0:0:1:0" "head-switching 8 lines:tff:0:0:0:8" \
    "all of them (TFF):tff:3:1:1:8" "all of them (BFF):bff:3:1:1:8"; do
    name=${case%%:*}
    set -- $(echo "${case#*:}" | tr ':' ' ')
    order=$1
    rm -rf "$T/a"
    mkdir -p "$T/a"
    degrade_custom "$T/a/s.mkv" "$@"
    "$TD" run "$T/a" --task restore --restore-format archive --restore-quality "$QUALITY" --no-progress -q \
        >"$T/log" 2>&1 || { cat "$T/log"; fail "restore failed on $name"; }
    rm_bwdif_only "$T/a/s.mkv" "$T/bw.mkv" "$order"
    J="$T/a/s.restore.json"
    found=$(json_get "$J" "d['analysis']['interlace']['field_order']")
    delay=$(json_get "$J" "'%.2f' % d['analysis']['chroma_delay']['pixels']")
    hs=$(json_get "$J" "d['analysis']['head_switching']['lines']")
    O="$T/a/s.restored.mkv"
    left=$(rm_field "$O" chroma_delay)
    legal=$(rm_field "$O" legal)
    g=$(rm_field "$O" grad)
    r=$(rm_ssim "$O" "$T/ref.mkv")
    b=$(rm_ssim "$T/bw.mkv" "$T/ref.mkv")
    awk -v n="$name" -v o="$found (made $order)" -v d="$delay" -v l="$left" -v h="$hs" -v lg="$legal" \
        -v r="$r" -v b="$b" -v g="$g" -v gr="$g_ref" \
        'BEGIN{printf "| %s | %s | %s / %.2f | %s | %.4f | %s | %s | %.2f |\n", n, o, d, l, h, lg, r, b, g/gr}'
done

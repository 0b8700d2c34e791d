# restore-media.sh: footage for the restore tests (sourced after lib.sh).
#
# Clean masters are moving, textured pictures (a zoom into the Mandelbrot
# set's seahorse valley: fine detail everywhere, not a flat test card),
# progressive at double the interlaced rate, 4:4:4, their luma stretched
# to 16-235 (at the 0.5 % and 99.5 % percentiles). Degraded copies get known faults, in the order an analog
# chain adds them: chroma delayed (shifted right) by D luma pixels,
# washed-out levels, noise, a head-switching band at the bottom, then
# 4:2:2 with co-sited chroma (as BT.601 captures are) and two fields
# woven into each frame in a known order, flagged (or mis-flagged) as
# asked. Chroma is converted co-sited everywhere (out_h_chr_pos=0), as
# the standard places it, so that no conversion adds a half-pixel delay.

VSCORE=${TAPEDECK_VSCORE:-$(dirname "$TD")/tapedeck-vscore}

# rm_clean OUT FRAMES SIZE: a clean master at 60000/1001 fps
rm_clean() {
    ffmpeg -nostdin -v error -y -f lavfi -i "mandelbrot=s=$3:r=60000/1001:start_x=-0.743643887037151:start_y=0.131825904205330:start_scale=0.02:end_scale=0.002:end_pts=100:maxiter=200" \
        -vf "format=yuv444p,gblur=sigma=1.0,lutyuv=y='clip((val-43)*219/158+16\,16\,235)'" -frames:v "$2" -c:v ffv1 "$1" \
        || fail "ffmpeg could not make the clean master $1"
}

# rm_reference CLEAN OUT: the clean master as a restored SD file should be
# (704 wide, 4:2:0)
rm_reference() {
    ffmpeg -nostdin -v error -y -i "$1" -vf "crop=704:ih:(iw-704)/2:0,scale=out_h_chr_pos=0:out_v_chr_pos=128,format=yuv420p" \
        -c:v ffv1 "$2" || fail "ffmpeg could not make the reference $2"
}

# rm_degrade CLEAN OUT ORDER DELAY FLAG HS_LINES [AUDIO_CODEC]: ORDER tff|bff is
# the fields' real order, FLAG tff|bff what the file claims; MKV + FFV1
rm_degrade() {
    clean=$1 out=$2 order=$3 d=$4 flag=$5 hs=$6 acodec=${7:-pcm_s16le}
    if [ "$order" = tff ]; then il=interleave_top; else il=interleave_bottom; fi
    if [ "$flag" = tff ]; then fo=tt; else fo=bb; fi
    strip="null"
    [ "$hs" -gt 0 ] && strip="split[m][s];[s]crop=iw-24:$hs:24:ih-$hs,pad=iw+24:ih:0:0,noise=alls=60:allf=t[strip];[m][strip]overlay=0:H-$hs"
    ffmpeg -nostdin -v error -y -i "$clean" -f lavfi -i "sine=f=440:r=48000" -filter_complex "
[0:v]chromashift=cbh=$d:crh=$d,lutyuv=y='val*0.62+48',noise=alls=7:allf=t,$strip,scale=out_h_chr_pos=0:out_v_chr_pos=128,format=yuv422p,tinterlace=mode=$il,setfield=$flag[v]" \
        -map "[v]" -map 1:a -shortest -c:v ffv1 -field_order "$fo" -c:a "$acodec" "$out" \
        || fail "ffmpeg could not degrade $clean into $out"
}

# rm_bwdif_only DEGRADED OUT ORDER: what bwdif alone (told the right field
# order) makes of the degraded file, cut to 704 as the restore is
rm_bwdif_only() {
    ffmpeg -nostdin -v error -y -i "$1" -vf "setfield=$3,bwdif=mode=send_field:parity=$3:deint=all,crop=704:ih:(iw-704)/2:0,format=yuv420p" \
        -c:v ffv1 "$2" || fail "ffmpeg could not deinterlace $1"
}

# rm_ssim A B: prints "Y U V" SSIM of A against B (libavfilter's ssim)
rm_ssim() {
    ffmpeg -nostdin -hide_banner -i "$1" -i "$2" -lavfi "[0:v][1:v]ssim" -f null - 2>&1 |
        sed -n 's/.*SSIM Y:\([0-9.]*\) .*U:\([0-9.]*\) .*V:\([0-9.]*\) .*/\1 \2 \3/p' | tail -n 1
}

# rm_field FILE KEY: one value from tapedeck-vscore's line
rm_field() {
    "$VSCORE" "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# json_get FILE PYTHON-EXPR: a value from a JSON file (python3)
json_get() {
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

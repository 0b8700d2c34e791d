#!/bin/sh
# t_restore_cases.sh: the restore task across the cases users meet, in one
# run over one archive (default output: H.264 in MP4):
#   - field order found from the pictures whatever the file claims: TFF
#     flagged BFF, BFF flagged TFF, PAL BFF (704x576, SAR 12:11), and an
#     interlaced H.264 MP4 with AAC audio (copied bit-exact);
#   - scenes of 1, 3 and 5 frames finish;
#   - a video stream corrupt mid-file fails that scene with the reason;
#   - an output whose audio was shifted on purpose (TAPEDECK_FAULT
#     desync) is caught by the self-check and fails its scene, leaving
#     no output behind;
#   - a 10-s BFF scene (flagged TFF) that opens with 6 s of a progressive
#     title animation: the analysis reads windows spread over the whole
#     scene, so the interlaced rest decides (reading its first 240 frames
#     only, it was called progressive);
#   - an FFV1 archive damaged after encoding (TAPEDECK_FAULT damage) fails
#     its scene: the self-check checks every slice's CRC; another, with
#     --restore-vaapi on, is decoded on the CPU and says why;
#   - --restore-hwenc on (the view format on the card's encoder): without
#     NVENC or VAAPI the scene is encoded by x264 and the log and
#     restore.json say why; a rerun with --restore-hwenc off skips it (a
#     file the card encoded would be redone);
#   - every other scene is done, with the self-check's figures recorded;
#   - --task subtitles,restore: the restored file carries the SRT as a soft
#     track (mov_text in MP4, SubRip in MKV); an MP4's AAC, whose encoder
#     delay MKV cannot carry, goes into the MKV as the decoded samples.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/restore-media.sh"
command -v ffmpeg >/dev/null || skip "no ffmpeg"
command -v python3 >/dev/null || skip "no python3"

A="$T/archive"
mkdir -p "$A/ntsc" "$A/pal" "$A/short" "$A/bad" "$A/late"
rm_clean "$T/c480.mkv" 24 720x480
rm_clean "$T/c576.mkv" 24 720x576
rm_degrade "$T/c480.mkv" "$A/ntsc/tff_as_bff.mkv" tff 2 bff 6
rm_degrade "$T/c480.mkv" "$A/ntsc/bff_as_tff.mkv" bff 0 tff 0
rm_degrade "$T/c576.mkv" "$A/pal/bff.mkv" bff 4 bff 0
rm_degrade "$T/c480.mkv" "$T/tff.mkv" tff 0 tff 0 aac
ffmpeg -nostdin -v error -y -i "$T/tff.mkv" -c:v libx264 -preset ultrafast -flags +ildct+ilme -x264-params tff=1 \
    -c:a copy "$A/ntsc/h264_aac.mp4" || fail "ffmpeg could not make the MP4"
for n in 1 3 5; do
    ffmpeg -nostdin -v error -y -i "$T/tff.mkv" -frames:v $n -c:v ffv1 -field_order tt -c:a pcm_s16le \
        "$A/short/frames_$n.mkv" || fail "ffmpeg could not cut $n frames"
done
# 6 s of a progressive title (each frame shown for two fields), then 4 s
# of interlaced motion; 192x144 keeps it quick.
M="mandelbrot=s=192x144:start_x=-0.743643887037151:start_y=0.131825904205330:start_scale=0.02:end_scale=0.002:end_pts=100:maxiter=60"
ffmpeg -nostdin -v error -y -f lavfi -i "$M:r=30000/1001" -f lavfi -i "$M:r=60000/1001" -f lavfi -i "sine=f=440:r=48000" \
    -filter_complex "[0:v]trim=end_frame=180,fps=60000/1001,setpts=PTS-STARTPTS[a];[1:v]trim=start_frame=360:end_frame=600,setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1:a=0,format=yuv444p,gblur=sigma=1.0,noise=alls=5:allf=t,scale=out_h_chr_pos=0:out_v_chr_pos=128,format=yuv422p,tinterlace=mode=interleave_bottom,setfield=tff[v]" \
    -map "[v]" -map 2:a -shortest -c:v ffv1 -field_order tt -c:a pcm_s16le "$A/late/title_start.mkv" ||
    fail "ffmpeg could not make the scene with a title"
cp "$A/ntsc/bff_as_tff.mkv" "$A/bad/desync_me.mkv"
ffmpeg -nostdin -v error -y -i "$T/c480.mkv" -an -c:v libx264 -preset ultrafast -g 6 -pix_fmt yuv420p \
    "$T/good.mp4" || fail "ffmpeg could not make the file to corrupt"
python3 - "$T/good.mp4" "$A/bad/corrupt.mp4" <<'EOF'
import sys
b = bytearray(open(sys.argv[1], 'rb').read())
m = len(b) // 2
for i in range(m, m + 3000):
    b[i] = (b[i] * 7 + 13) & 255
open(sys.argv[2], 'wb').write(b)
EOF

TAPEDECK_FAULT="desync:restore-mux:desync_me" "$TD" run "$A" --task restore --retries 0 --no-progress \
    >"$T/log" 2>&1
rc=$?
[ "$rc" -eq 1 ] || { cat "$T/log"; fail "exit code $rc, expected 1 (two scenes fail)"; }
grep -q 'processed: 8 | skipped: 0 | failed: 2' "$T/log" || { cat "$T/log"; fail "wrong counts"; }

check_order() { # SCENE_JSON EXPECTED
    got=$(json_get "$1" "d['analysis']['interlace']['field_order'] + ' ' + d['analysis']['interlace']['decided_by']")
    note "$(basename "$1"): $got"
    case "$got" in "$2 "*) ;; *) fail "$1: field order $got, expected $2" ;; esac
}
check_order "$A/ntsc/tff_as_bff.restore.json" tff
check_order "$A/ntsc/bff_as_tff.restore.json" bff
check_order "$A/pal/bff.restore.json" bff
check_order "$A/ntsc/h264_aac.restore.json" tff
check_order "$A/late/title_start.restore.json" bff
w=$(json_get "$A/late/title_start.restore.json" "d['analysis']['stream']['windows']")
[ "$w" = 4 ] || fail "title_start: analysed in $w windows, expected 4"
d=$(json_get "$A/ntsc/tff_as_bff.restore.json" "d['analysis']['chroma_delay']['pixels']")
awk "BEGIN{exit !($d > 1.5 && $d < 2.5)}" || fail "tff_as_bff: chroma delay $d, made 2"
d=$(json_get "$A/pal/bff.restore.json" "d['analysis']['chroma_delay']['pixels']")
awk "BEGIN{exit !($d > 3.5 && $d < 4.5)}" || fail "pal: chroma delay $d, made 4"
hs=$(json_get "$A/ntsc/tff_as_bff.restore.json" "d['analysis']['head_switching']['lines']")
[ "$hs" = 6 ] || fail "tff_as_bff: head-switching lines $hs, made 6"
hs=$(json_get "$A/ntsc/bff_as_tff.restore.json" "d['analysis']['head_switching']['lines']")
[ "$hs" = 0 ] || fail "bff_as_tff: head-switching lines $hs, made none"

pal=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height,sample_aspect_ratio,codec_name \
    -of csv=p=0 "$A/pal/bff.restored.mp4")
[ "$pal" = "h264,704,576,12:11" ] || fail "PAL output: $pal, expected h264,704,576,12:11"
audio=$(json_get "$A/ntsc/h264_aac.restore.json" "d['output']['audio']")
[ "$audio" = "copy aac" ] || fail "AAC audio: '$audio', expected a copy"
audio=$(json_get "$A/pal/bff.restore.json" "d['output']['audio']")
case "$audio" in alac*) ;; *) fail "PCM audio in MP4: '$audio', expected ALAC" ;; esac
for j in "$A"/ntsc/*.restore.json "$A"/pal/*.restore.json "$A"/short/*.restore.json; do
    json_get "$j" "d['self_check']['ok'] and d['self_check']['source_audio_sha256'] == d['self_check']['output_audio_sha256']" |
        grep -q True || fail "$j: self-check not passed with identical audio"
done
for n in 1 3 5; do
    [ -f "$A/short/frames_$n.restored.mp4" ] || fail "the $n-frame scene was not restored"
    out=$(json_get "$A/short/frames_$n.restore.json" "d['speed']['frames_out']")
    note "$n-frame scene: $out frames out"
done

grep -q 'corrupt.mp4.*video stream corrupt' "$T/log" || fail "no clear reason for corrupt.mp4: $(grep corrupt "$T/log")"
grep -q 'desync_me.mkv.*self-check failed: audio-video offset changed' "$T/log" ||
    fail "self-check did not catch the desync: $(grep desync "$T/log")"
ls -a "$A/bad" | grep -q 'restored\|tdtmp' && fail "a failed scene left output: $(ls -a "$A/bad")"
[ -f "$A/bad/.desync_me.restore.failed" ] || fail "no .failed marker for the desynced scene"

# Both tasks in one visit (PocketSphinx: the models folder is empty).
# An FFV1 archive damaged after encoding: the scene fails with the reason.
# Beside it, in the same run, one asking for VAAPI decoding: FFV1 has no
# VAAPI decoder (and this machine may have no VAAPI device), so the CPU
# decodes and the log and restore.json say why.
mkdir -p "$T/arch"
cp "$A/short/frames_5.mkv" "$T/arch/damage_me.mkv"
cp "$A/short/frames_3.mkv" "$T/arch/vaapi_me.mkv"
TAPEDECK_FAULT="damage:restore-out:damage_me" "$TD" run "$T/arch" --task restore --restore-format archive \
    --restore-vaapi on --retries 0 --no-progress >"$T/log_damage" 2>&1 && { cat "$T/log_damage"; fail "a damaged archive passed"; }
grep -q "damage_me.mkv.*self-check failed: the archive's video is damaged: slice CRC mismatch" "$T/log_damage" ||
    { cat "$T/log_damage"; fail "no clear reason for the damaged archive"; }
ls -a "$T/arch" | grep -q 'damage_me.restored\|tdtmp' && fail "the damaged archive was kept: $(ls -a "$T/arch")"
grep -q 'vaapi_me.mkv: .*decoding on the CPU' "$T/log_damage" || { cat "$T/log_damage"; fail "the VAAPI fallback is not logged"; }
on=$(json_get "$T/arch/vaapi_me.restore.json" "d['output']['decode_on']")
note "VAAPI asked for an FFV1 scene: decode_on = $on"
case "$on" in "cpu (VAAPI unavailable"* | "cpu (libavcodec has no vaapi decoding for ffv1)") ;;
*) fail "decode_on '$on'" ;; esac

# The card's encoder asked for: NVENC where CUDA is, else VAAPI.
mkdir -p "$T/hwenc"
cp "$A/short/frames_5.mkv" "$T/hwenc/enc_me.mkv"
"$TD" run "$T/hwenc" --task restore --restore-hwenc on --no-progress >"$T/log_hwenc" 2>&1 ||
    { cat "$T/log_hwenc"; fail "--restore-hwenc on failed"; }
on=$(json_get "$T/hwenc/enc_me.restore.json" "d['output']['encode_on']")
enc=$(json_get "$T/hwenc/enc_me.restore.json" "d['output']['encoder']")
note "--restore-hwenc on: encode_on = $on, encoder $enc"
codec=$(ffprobe -v error -select_streams v -show_entries stream=codec_name -of csv=p=0 "$T/hwenc/enc_me.restored.mp4")
[ "$codec" = h264 ] || fail "hwenc output codec '$codec'"
case "$on" in
"cpu ("*)
    [ "$enc" = libx264 ] || fail "fell back to '$enc'"
    grep -q "enc_me.mkv: encoding on the CPU (libx264): " "$T/log_hwenc" || { cat "$T/log_hwenc"; fail "the fallback is not logged"; }
    "$TD" run "$T/hwenc" --task restore --restore-hwenc off --no-progress >"$T/log_hwenc2" 2>&1 || fail "rerun failed"
    grep -q 'processed: 0 | skipped: 1' "$T/log_hwenc2" || { cat "$T/log_hwenc2"; fail "a CPU-encoded scene was redone"; } ;;
nvenc | vaapi)
    "$TD" run "$T/hwenc" --task restore --restore-hwenc off --no-progress >"$T/log_hwenc2" 2>&1 || fail "rerun failed"
    grep -q 'processed: 1 | skipped: 0' "$T/log_hwenc2" || { cat "$T/log_hwenc2"; fail "a card-encoded scene was kept under off"; } ;;
*) fail "encode_on '$on'" ;;
esac

command -v espeak-ng >/dev/null || skip "no espeak-ng for the subtitles part"
S="$T/speech"
mkdir -p "$S"
speech_scene "$S/talk.mp4" "Hello there. This scene gets subtitles and a restored copy."
"$TD" run "$S" --task subtitles,restore --no-progress >"$T/log2" 2>&1 || { cat "$T/log2"; fail "subtitles,restore failed"; }
[ -f "$S/.talk.subtitles.done" ] && [ -f "$S/.talk.restore.done" ] || fail "markers missing: $(ls -a "$S")"
streams=$(ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "$S/talk.restored.mp4" | tr '\n' ' ')
[ "$streams" = "h264 aac mov_text " ] || fail "restored MP4 streams: $streams"
cues=$(ffmpeg -nostdin -v error -i "$S/talk.restored.mp4" -map 0:s -f srt - | grep -c -- '-->')
[ "$cues" -ge 1 ] && [ "$cues" = "$(grep -c -- '-->' "$S/talk.srt")" ] || fail "soft track has $cues cues"
"$TD" run "$S" --task subtitles,restore --restore-format archive --no-progress >"$T/log3" 2>&1 ||
    { cat "$T/log3"; fail "archive with subtitles failed"; }
streams=$(ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "$S/talk.restored.mkv" | tr '\n' ' ')
[ "$streams" = "ffv1 pcm_f32le subrip " ] || fail "restored MKV streams: $streams"
echo "ok"

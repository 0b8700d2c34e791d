#!/bin/sh
# t_restore.sh: the restore task's quality on degraded footage, scored
# against the clean reference (tests/e2e/restore-media.sh makes both):
# interlaced TFF NTSC, chroma delayed 3 px, washed-out levels, noise and an
# 8-line head-switching band. Restored losslessly (--restore-format
# archive, so the encoder does not blur the score) and checked for: field
# order, chroma delay found within 0.5 px and gone from the output, the
# head-switching lines found, 99.9 % of luma legal, SSIM at least 0.03 (Y)
# and 0.05 (U, V) above bwdif alone (told the right field order), detail
# (mean gradient energy) within 0.8-1.2 of the clean picture's, 704 wide
# with SAR 10:11; then the settings fingerprint: a rerun skips, another
# preset redoes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/restore-media.sh"
command -v ffmpeg >/dev/null || skip "no ffmpeg"
command -v python3 >/dev/null || skip "no python3"
[ -x "$VSCORE" ] || skip "no tapedeck-vscore next to $TD"

A="$T/archive"
mkdir -p "$A"
rm_clean "$T/clean.mkv" 40 720x480
rm_reference "$T/clean.mkv" "$T/ref.mkv"
rm_degrade "$T/clean.mkv" "$A/tape1.mkv" tff 3 tff 8
rm_bwdif_only "$A/tape1.mkv" "$T/bwdif.mkv" tff

"$TD" run "$A" --task restore --restore-format archive --no-progress >"$T/log" 2>&1 ||
    { cat "$T/log"; fail "restore run failed"; }
grep -q '\[summary\].*frames, .* fps' "$T/log" || fail "summary has no frames per second: $(grep summary "$T/log")"
J="$A/tape1.restore.json"
O="$A/tape1.restored.mkv"
[ -f "$O" ] && [ -f "$J" ] && [ -f "$A/.tape1.restore.done" ] || fail "outputs missing: $(ls -a "$A")"

order=$(json_get "$J" "d['analysis']['interlace']['field_order']")
[ "$order" = tff ] || fail "field order: $order, expected tff"
delay=$(json_get "$J" "d['analysis']['chroma_delay']['pixels']")
note "chroma delay found: $delay px (made: 3)"
awk "BEGIN{exit !($delay > 2.5 && $delay < 3.5)}" || fail "chroma delay $delay not within 0.5 px of 3"
hs=$(json_get "$J" "d['analysis']['head_switching']['lines']")
[ "$hs" = 8 ] || fail "head-switching lines: $hs, expected 8"
json_get "$J" "d['self_check']['ok']" | grep -q True || fail "self-check not recorded as passed"

rest=$(rm_ssim "$O" "$T/ref.mkv")
base=$(rm_ssim "$T/bwdif.mkv" "$T/ref.mkv")
note "SSIM Y U V restored: $rest | bwdif alone: $base"
set -- $rest $base
[ $# -eq 6 ] || fail "could not read SSIM ($rest / $base)"
awk "BEGIN{exit !($1 >= $4 + 0.03)}" || fail "luma SSIM $1 not 0.03 above bwdif's $4"
awk "BEGIN{exit !($2 >= $5 + 0.05 && $3 >= $6 + 0.05)}" || fail "chroma SSIM $2 $3 not 0.05 above bwdif's $5 $6"

g_ref=$(rm_field "$T/ref.mkv" grad)
g_out=$(rm_field "$O" grad)
legal=$(rm_field "$O" legal)
rdelay=$(rm_field "$O" chroma_delay)
size=$(rm_field "$O" size)
note "gradient energy restored $g_out, clean $g_ref | legal luma $legal | chroma delay left $rdelay px | $size"
awk "BEGIN{r=$g_out/$g_ref; exit !(r >= 0.8 && r <= 1.2)}" || fail "detail ratio $g_out/$g_ref outside 0.8-1.2"
awk "BEGIN{exit !($legal >= 0.999)}" || fail "legal luma share $legal below 99.9 %"
awk "BEGIN{exit !($rdelay > -0.5 && $rdelay < 0.5)}" || fail "chroma delay left in the output: $rdelay px"
[ "$size" = 704x480 ] || fail "restored size $size, expected 704x480"
sar=$(ffprobe -v error -select_streams v:0 -show_entries stream=sample_aspect_ratio -of csv=p=0 "$O")
[ "$sar" = "10:11" ] || fail "SAR $sar, expected 10:11"

# Settings fingerprint: the same settings skip, another preset redoes.
"$TD" run "$A" --task restore --restore-format archive --no-progress >"$T/log2" 2>&1 || fail "rerun failed"
grep -q 'skipped: 1' "$T/log2" || fail "rerun did not skip: $(grep summary "$T/log2")"
"$TD" run "$A" --task restore --restore-format archive --restore-preset vhs --dry-run >"$T/plan" 2>&1 ||
    fail "dry run failed"
grep -q 'settings changed' "$T/plan" || fail "a new preset does not redo: $(cat "$T/plan")"
"$TD" run "$A" --task enhance --restore-format archive --restore-preset vhs --no-progress >"$T/log3" 2>&1 ||
    fail "vhs run failed"
grep -q 'processed: 1' "$T/log3" || fail "vhs preset did not redo the scene"
grep -q 'preset=vhs' "$A/.tape1.restore.done" || fail "marker lacks the new settings"
echo "ok"

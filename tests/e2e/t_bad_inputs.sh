# t_bad_inputs: every kind of bad file fails clearly; odd names work; the batch finishes.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -eq 0 ]; then
    # Root reads anything, so the run happens as nobody for the permission
    # error to be real; it needs a folder nobody can reach.
    command -v setpriv >/dev/null || skip "setpriv missing (util-linux)"
    a=$(mktemp -d /var/tmp/tapedeck-e2e.XXXXXX)
    EXTRA_CLEAN=$a
else
    a="$T/a"
fi
mkdir -p "$a"
speech_scene "$a/good.mp4" "This one is fine."
: >"$a/zero.mp4"
speech_scene "$T/full.mp4" "This scene will be cut short by a bad capture, in the middle of a sentence." en-us 0.2
head -c 30000 "$T/full.mp4" >"$a/truncated.mp4"
# a truncated file whose index is at the front (+faststart): cut in the middle of the data
ffmpeg -nostdin -loglevel error -y -i "$T/full.mp4" -c copy -movflags +faststart "$T/fast.mp4"
head -c $(( $(stat -c %s "$T/fast.mp4") / 2 )) "$T/fast.mp4" >"$a/truncated_fast.mp4"
printf 'this is not a video\n' >"$a/text.mp4"
ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc=size=160x120:rate=10" -t 2 \
    -c:v libx264 -preset ultrafast -pix_fmt yuv420p "$a/noaudio.mp4"
cp "$a/good.mp4" "$a/unreadable.mp4"
chmod 000 "$a/unreadable.mp4"
# odd but valid names
cp "$a/good.mp4" "$a/with space's \"quotes\".mp4"
cp "$a/good.mp4" "$a/new
line.mp4"
cp "$a/good.mp4" "$(printf "$a/bad\377utf8.mp4")"

if [ "$(id -u)" -eq 0 ]; then
    chmod 755 "$a"
    # nobody may not be able to reach the build tree (a 0700 /tmp): run a copy
    mkdir -p "$a.bin" && cp "$TD" "$a.bin/tapedeck" && chmod 755 "$a.bin" "$a.bin/tapedeck"
    TD="$a.bin/tapedeck"
    EXTRA_CLEAN="$a $a.bin"
    chown -R nobody "$a"
    chown root "$a/unreadable.mp4"
    run() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
else
    run() { "$@"; }
fi
run "$TD" run "$a" --workers 2 --retries 1 >"$T/log" 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "exit code $rc, want 1 (some failed): $(tail -n 20 "$T/log")"

for n in good "with space's \"quotes\"" "new
line" "$(printf 'bad\377utf8')"; do
    assert_done "$a/$n.mp4"
done
# a newline in a name does not break a log line or a status line
grep -q '\[checkpoint\] new?line.mp4 |' "$T/log" || fail "newline name not shown on one log line"
expect() { # NAME REGEX: the failed marker and the log give the reason
    m=$(failed_marker "$a/$1.mp4")
    [ -f "$m" ] || fail "$1: no .failed marker"
    [ -f "$(done_marker "$a/$1.mp4")" ] && fail "$1: has a .done marker"
    reason=$(json_get "$m" 'd["error"]')
    printf '%s' "$reason" | grep -Eqi "$2" || fail "$1: reason '$reason' does not match '$2'"
    printf '%s' "$reason" | grep -q "$1" || fail "$1: reason does not name the file: $reason"
    grep "\[failed\] $1.mp4" "$T/log" | grep -Eqi "$2" || fail "$1: log lacks the reason"
    [ -e "$a/$1.srt" ] && fail "$1: an SRT was written for a failed scene"
    return 0
}
expect zero 'empty'
expect truncated 'truncat|moov|invalid|not a media'
expect truncated_fast 'truncat'
expect text 'not a (media|video)|invalid data|format'
expect noaudio 'no audio'
expect unreadable 'permission'
# bad inputs are not retried: one attempt each
[ "$(json_get "$(failed_marker "$a/zero.mp4")" 'd["attempts"]')" = 1 ] || fail "bad input was retried"
grep -q '\[summary\] processed: 4 | skipped: 0 | failed: 6' "$T/log" || fail "summary: $(grep summary "$T/log")"
assert_no_temp "$a"
"$TD" status "$a" >"$T/st"
grep -q "failed 6" "$T/st" || fail "status: $(cat "$T/st")"
grep -q "noaudio.mp4: .*no audio" "$T/st" || fail "status lacks the reason"
exit 0

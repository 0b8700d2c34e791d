#!/bin/sh
# demo.sh: make the demo archive (once) and run tapedeck on it.
set -u
bin=${TAPEDECK_BIN:-build/tapedeck}
dir=${DEMO_DIR:-demo-archive}
here=$(dirname "$0")

"$here/make-demo-archive.sh" "$dir" || exit 1
echo
echo "== tapedeck run $dir --formats srt,vtt,json"
"$bin" run "$dir" --formats srt,vtt,json
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

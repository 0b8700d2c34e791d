# t_cli: help, version, usage errors and their exit codes.
. "$(dirname "$0")/lib.sh"

"$TD" --version | grep -Eq '^tapedeck [0-9]+\.[0-9]+\.[0-9]+$' || fail "--version"
"$TD" --help | grep -q 'tapedeck run ARCHIVE' || fail "--help"
for c in run status devices; do
    "$TD" $c --help >"$T/h" || fail "$c --help exit code"
    grep -q "Usage: tapedeck $c" "$T/h" || fail "$c --help text"
done
"$TD" run --help | grep -q -- '--dry-run' || fail "run --help lacks --dry-run"
"$TD" run --help | grep -q 'Exit codes' || fail "run --help lacks exit codes"

"$TD" >/dev/null 2>&1; [ $? -eq 2 ] || fail "no command: want exit 2"
"$TD" frobnicate >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown command: want exit 2"
"$TD" run >/dev/null 2>&1; [ $? -eq 2 ] || fail "run without ARCHIVE: want exit 2"
"$TD" run "$T" --limit -3 >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --limit: want exit 2"
"$TD" run "$T" --bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown option: want exit 2"
"$TD" run "$T" --formats srt,doc 2>"$T/e"; [ $? -eq 2 ] || fail "bad --formats: want exit 2"
grep -q doc "$T/e" || fail "bad --formats message does not name 'doc'"
"$TD" run "$T" --engine nope 2>"$T/e"; [ $? -eq 2 ] || fail "bad --engine: want exit 2"
"$TD" run "$T" --compute fp16 2>"$T/e"; [ $? -eq 2 ] || fail "bad --compute: want exit 2"
grep -q "needs auto, f32 or int8, not 'fp16'" "$T/e" || fail "bad --compute message: $(cat "$T/e")"
"$TD" models --compute fp16 2>"$T/e"; [ $? -eq 2 ] || fail "models, bad --compute: want exit 2"
grep -q "needs auto, f32 or int8, not 'fp16'" "$T/e" || fail "models, bad --compute message: $(cat "$T/e")"
"$TD" run --help | grep -q -- '--compute auto|f32|int8' || fail "run --help lacks --compute"
"$TD" run "$T/missing" 2>"$T/e"; [ $? -eq 3 ] || fail "missing archive: want exit 3"
grep -q "missing" "$T/e" || fail "missing archive message does not name it"
"$TD" run "$T" --language fr --engine sphinx 2>"$T/e"; [ $? -eq 3 ] || fail "sphinx in French: want exit 3"
grep -qi "english" "$T/e" || fail "language refusal does not say why: $(cat "$T/e")"
# an empty archive is not an error
"$TD" run "$T" -q; [ $? -eq 0 ] || fail "empty archive: want exit 0"
exit 0

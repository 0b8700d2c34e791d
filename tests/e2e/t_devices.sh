# t_devices: GPU worker plan and affinity. This machine has no GPU, so the
# devices come from TAPEDECK_DEVICES (the documented override); the real
# NVML path is exercised on the device machine (see README, GPU setup).
. "$(dirname "$0")/lib.sh"

"$TD" devices >"$T/real" || fail "devices exit"
grep -q '^GPUs: ' "$T/real" || fail "devices output: $(cat "$T/real")"

export TAPEDECK_DEVICES="nvidia/0000:17:00.0/GPU-aaaa1111/81559/H100,nvidia/0000:65:00.0/GPU-bbbb2222/81559/H100"
"$TD" devices >"$T/out" || fail "devices with override"
grep -q 'CUDA_VISIBLE_DEVICES=GPU-aaaa1111' "$T/out" || fail "plan for GPU 0: $(cat "$T/out")"
grep -q 'CUDA_VISIBLE_DEVICES=GPU-bbbb2222' "$T/out" || fail "plan for GPU 1"
grep -q 'CUDA_DEVICE_ORDER=PCI_BUS_ID' "$T/out" || fail "device order variable"

mkdir -p "$T/a"
for i in 1 2 3 4; do speech_scene "$T/a/s$i.mp4" "Scene $i."; done
"$TD" run "$T/a" >"$T/log" 2>&1 || fail "run exit $?: $(tail "$T/log")"
# one worker per card, different processes, each with its own card's variable
l0=$(grep '\[worker-start\] PID=[0-9]* | device_idx=0 | CUDA_VISIBLE_DEVICES=GPU-aaaa1111' "$T/log" | head -n1)
l1=$(grep '\[worker-start\] PID=[0-9]* | device_idx=1 | CUDA_VISIBLE_DEVICES=GPU-bbbb2222' "$T/log" | head -n1)
[ -n "$l0" ] && [ -n "$l1" ] || fail "worker-start lines: $(grep worker-start "$T/log")"
p0=$(echo "$l0" | sed 's/.*PID=\([0-9]*\).*/\1/'); p1=$(echo "$l1" | sed 's/.*PID=\([0-9]*\).*/\1/')
[ "$p0" != "$p1" ] || fail "both workers have PID $p0"
# each worker received its own variable (it echoes what it got)
grep "\[affinity-verify\] PID=$p0 | CUDA_VISIBLE_DEVICES=GPU-aaaa1111 | expected PCI=0000:17:00.0" "$T/log" >/dev/null ||
    fail "worker 0 did not receive its affinity: $(grep affinity "$T/log")"
grep "\[affinity-verify\] PID=$p1 | CUDA_VISIBLE_DEVICES=GPU-bbbb2222 | expected PCI=0000:65:00.0" "$T/log" >/dev/null ||
    fail "worker 1 did not receive its affinity"
[ "$(grep -c '\[worker-start\]' "$T/log")" = 2 ] || fail "more than one worker per card"
for i in 1 2 3 4; do assert_done "$T/a/s$i.mp4"; done
json_get "$(done_marker "$T/a/s1.mp4")" 'd["device"]' | grep -Eq '0000:(17|65):00.0' || fail "marker device"
# --devices picks one card
"$TD" run "$T/a" --force --devices 0000:65:00.0 >"$T/log2" 2>&1 || fail "--devices run"
[ "$(grep -c '\[worker-start\]' "$T/log2")" = 1 ] || fail "--devices started more than one worker"
grep -q 'CUDA_VISIBLE_DEVICES=GPU-bbbb2222' "$T/log2" || fail "--devices chose the wrong card"
"$TD" run "$T/a" --devices 7 2>"$T/e"; [ $? -eq 2 ] || fail "--devices 7 should be a usage error"
exit 0

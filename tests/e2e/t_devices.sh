# t_devices: GPU worker plan and affinity. This machine has no GPU, so the
# devices come from TAPEDECK_DEVICES (the documented override), and the
# runtime's [affinity-verify] report from TAPEDECK_TEST_RUNTIME_ID (a test
# hook); the real NVML / Level Zero / CUDA paths run on GPU machines (see
# README, GPU setup).
. "$(dirname "$0")/lib.sh"

"$TD" devices >"$T/real" || fail "devices exit"
grep -q '^GPUs: ' "$T/real" || fail "devices output: $(cat "$T/real")"
grep -q '^Hardware detected: CPU [0-9]* | GPUs \[.*\] | backend=' "$T/real" || fail "hardware line: $(cat "$T/real")"
grep -q '^Worker plan' "$T/real" || fail "devices shows no plan"
grep -q "level-zero" "$T/real" || fail "devices says nothing of Level Zero: $(cat "$T/real")"
"$TD" probe-level-zero >"$T/probe" || fail "probe-level-zero exit"
# what Vulkan sees, through its probe child (lavapipe where Mesa is installed)
grep -q '^Vulkan: ' "$T/real" || fail "devices says nothing of Vulkan: $(cat "$T/real")"
"$TD" probe-vulkan >"$T/vkprobe" || fail "probe-vulkan exit"
if grep -q '^vk ' "$T/vkprobe"; then
    n=$(grep -c '^vk ' "$T/vkprobe")
    grep -q "^Vulkan: $n device(s)" "$T/real" || fail "devices lists other Vulkan devices: $(cat "$T/real")"
else
    grep -q '^note vulkan: ' "$T/vkprobe" || fail "probe-vulkan answer: $(cat "$T/vkprobe")"
fi

# a recorded sysfs tree through the real program: two Arc A770s on two NUMA nodes
fx="$(cd "$(dirname "$0")/../fixtures/devices" && pwd)"
TAPEDECK_SYSFS="$fx/two-a770/sys" "$TD" devices >"$T/a770" || fail "devices on the A770 tree"
grep -Eq '^  0 +intel +0000:03:00.0 +Intel GPU 0x56a0 +16.0 +15.7 +0 +0-7,16-23 ' "$T/a770" || fail "A770 row 0: $(cat "$T/a770")"
grep -Eq '^  1 +intel +0000:83:00.0 +Intel GPU 0x56a0 +16.0 +15.9 +1 +8-15,24-31 ' "$T/a770" || fail "A770 row 1"
grep -q 'worker 0: intel 0000:03:00.0 .*CPUs 0-7,16-23 | ZE_AFFINITY_MASK=0 ZE_ENABLE_PCI_ID_DEVICE_ORDER=1$' "$T/a770" ||
    fail "A770 worker 0: $(cat "$T/a770")"
grep -q 'worker 1: intel 0000:83:00.0 .*CPUs 8-15,24-31 | ZE_AFFINITY_MASK=1 ZE_ENABLE_PCI_ID_DEVICE_ORDER=1$' "$T/a770" ||
    fail "A770 worker 1"
TAPEDECK_SYSFS="$fx/no-gpu/sys" "$TD" devices >"$T/nogpu" || fail "devices on the no-GPU tree"
grep -q '^GPUs: 0$' "$T/nogpu" || fail "no-GPU tree: $(cat "$T/nogpu")"
grep -q 'worker 0: cpu' "$T/nogpu" || fail "no-GPU plan"

export TAPEDECK_DEVICES="nvidia/0000:17:00.0/GPU-aaaa1111/81559/H100,nvidia/0000:65:00.0/GPU-bbbb2222/81559/H100"
"$TD" devices >"$T/out" || fail "devices with override"
grep -q 'CUDA_VISIBLE_DEVICES=GPU-aaaa1111' "$T/out" || fail "plan for GPU 0: $(cat "$T/out")"
grep -q 'CUDA_VISIBLE_DEVICES=GPU-bbbb2222' "$T/out" || fail "plan for GPU 1"
grep -q 'CUDA_DEVICE_ORDER=PCI_BUS_ID' "$T/out" || fail "device order variable"
"$TD" devices --devices pci:0000:65:00.0 --cpu-workers 1 >"$T/out2" || fail "devices --devices pci:"
grep -q 'worker 0: nvidia 0000:65:00.0' "$T/out2" || fail "pci: selection: $(cat "$T/out2")"
grep -q 'worker 1: cpu' "$T/out2" || fail "--cpu-workers in the plan: $(cat "$T/out2")"
[ "$(grep -c '^  worker ' "$T/out2")" = 2 ] || fail "plan has other workers: $(cat "$T/out2")"

mkdir -p "$T/a"
for i in 1 2 3 4; do speech_scene "$T/a/s$i.mp4" "Scene $i."; done
"$TD" run "$T/a" >"$T/log" 2>&1 || fail "run exit $?: $(tail "$T/log")"
grep -q 'Hardware detected: CPU [0-9]* | GPUs \[nvidia 0000:17:00.0 H100 79.6 GiB, nvidia 0000:65:00.0 H100 79.6 GiB\] | backend=cpu' "$T/log" ||
    fail "hardware line: $(grep -i hardware "$T/log")"
grep -q 'Total scenes: 4 | workers: \[gpu0 0000:17:00.0, gpu1 0000:65:00.0\]' "$T/log" ||
    fail "total scenes line: $(grep 'Total scenes' "$T/log")"
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

# a GPU worker beside a CPU worker, pinned to its card's local CPUs (CPU 0)
export TAPEDECK_DEVICES="nvidia/0000:17:00.0/GPU-aaaa1111/81559/H100/0"
"$TD" run "$T/a" --force --cpu-workers 1 >"$T/log3" 2>&1 || fail "--cpu-workers run: $(tail "$T/log3")"
grep -q 'Total scenes: 4 | workers: \[gpu0 0000:17:00.0, cpu1\]' "$T/log3" || fail "workers: $(grep 'Total' "$T/log3")"
grep -q '\[worker-start\] PID=[0-9]* | device_idx=cpu1 | CPU worker' "$T/log3" || fail "no CPU worker started"
grep -q '\[worker-start\] .*device_idx=0 .*| cpus=0$' "$T/log3" || fail "GPU worker not pinned: $(grep worker-start "$T/log3")"
grep -q '\[affinity-verify\] .*expected PCI=0000:17:00.0 .*| cpus=0$' "$T/log3" ||
    fail "the worker does not run on CPU 0: $(grep affinity "$T/log3")"

# [affinity-verify] end to end: both workers' "runtime" reports card
# 0000:17:00.0; the one planned there passes, the other is stopped, and the
# run still finishes every scene on the first.
export TAPEDECK_DEVICES="nvidia/0000:17:00.0/GPU-aaaa1111/81559/H100,nvidia/0000:65:00.0/GPU-bbbb2222/81559/H100"
TAPEDECK_TEST_RUNTIME_ID="00000000:17:00.0/GPU-AAAA1111" "$TD" run "$T/a" --force >"$T/log4" 2>&1 ||
    fail "run with one misplaced worker: exit $?: $(tail "$T/log4")"
grep -q '\[affinity-verify\] PID=[0-9]* | slot 0 | PCI 00000000:17:00.0 UUID GPU-AAAA1111 matches the plan | OK' "$T/log4" ||
    fail "slot 0 not verified: $(grep affinity-verify "$T/log4")"
grep -Eq '\[affinity-verify\] PID=[0-9]+ \| slot 1 \| (its card \(00000000:17:00.0 GPU-AAAA1111\) is already used by worker PID=[0-9]+ \(slot 0\)|runtime opened PCI 00000000:17:00.0, plan says 0000:65:00.0) \| worker stopped' "$T/log4" ||
    fail "slot 1 not stopped: $(grep affinity-verify "$T/log4")"
grep -q '\[worker-slot\] slot 1 disabled: affinity check failed' "$T/log4" || fail "slot 1 not disabled"
for i in 1 2 3 4; do assert_done "$T/a/s$i.mp4"; done
# a CPU worker whose runtime claims a GPU is stopped too: no worker left
TAPEDECK_DEVICES=none TAPEDECK_TEST_RUNTIME_ID="0000:17:00.0/-" "$TD" run "$T/a" --force --workers 1 >"$T/log5" 2>&1
[ $? -ne 0 ] || fail "a CPU worker reporting a GPU was accepted"
grep -q 'a CPU worker reports GPU 0000:17:00.0' "$T/log5" || fail "cpu worker report: $(tail "$T/log5")"
exit 0

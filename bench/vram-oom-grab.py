"""vram-oom-grab.py RUN_LOG: another program taking the card's memory in the
middle of a tapedeck run (bench/vram-oom-device.sh says when and why).

Prints "ready" once its CUDA context exists; waits for a scene handed out
and the card busy (nvidia-smi's utilization over 0 twice in a row); takes
all but GRAB_LEAVE_MIB of the free memory; holds it GRAB_HOLD_S seconds
(noting any [vram-safety] line meanwhile); sends the worker SIGUSR2 (its
next Vulkan submission fails as out of device memory: the test hook); then
takes whatever comes free beyond GRAB_LEAVE_MIB, every few milliseconds,
until the run's summary. Each step is printed with the time."""
import os, re, signal, subprocess, sys, time

import torch

log = sys.argv[1]
leave = int(os.environ.get("GRAB_LEAVE_MIB", "1024")) << 20
hold = float(os.environ.get("GRAB_HOLD_S", "5"))
MiB = 1 << 20
held = []


def say(msg):
    print("%s %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def text():
    try:
        with open(log, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def take(chunk_floor=16 * MiB):
    """Allocate while more than `leave` is free: big chunks, then smaller."""
    got = 0
    chunk = 1024 * MiB
    while chunk >= chunk_floor:
        free, _ = torch.cuda.mem_get_info()
        if free - leave < chunk:
            chunk //= 2
            continue
        try:
            held.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
            got += chunk
        except RuntimeError:
            chunk //= 2
    return got


torch.cuda.init()
held.append(torch.empty(MiB, dtype=torch.uint8, device="cuda"))
say("ready")
print("ready", flush=True)

while "[dispatch]" not in text():
    time.sleep(0.05)
pid = int(re.search(r"\[worker-start\] PID=(\d+)", text()).group(1))
busy = 0
while busy < 2:
    u = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True).stdout.strip()
    busy = busy + 1 if u.isdigit() and int(u) > 0 else 0
    time.sleep(0.1)
say("worker PID=%d decoding (utilization %s%%)" % (pid, u))
free0, total = torch.cuda.mem_get_info()
got = take()
free1, _ = torch.cuda.mem_get_info()
say("took %.2f GiB: free %.2f -> %.2f GiB of %.2f" % (got / 2**30, free0 / 2**30, free1 / 2**30, total / 2**30))
before = text().count("[vram-safety]")
time.sleep(hold)
say("held %.0f s: %d [vram-safety] line(s) meanwhile" % (hold, text().count("[vram-safety]") - before))
os.kill(pid, signal.SIGUSR2)
say("SIGUSR2 to PID=%d: its next submission fails as out of device memory" % pid)
end = time.time() + 300
while "[summary]" not in text() and time.time() < end:
    got = take(chunk_floor=64 * MiB)
    if got:
        free, _ = torch.cuda.mem_get_info()
        say("took %.2f GiB more as it came free: free %.2f GiB" % (got / 2**30, free / 2**30))
    time.sleep(0.003)
say("run over: releasing %.2f GiB" % (sum(t.numel() for t in held) / 2**30))
held.clear()
torch.cuda.empty_cache()

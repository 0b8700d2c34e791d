# t_worker_start: what a worker is started with.
# 1. --threads reaches the worker (it was parsed, then never passed on).
# 2. Started with SIGCHLD ignored (inherited from a parent that set it),
#    the supervisor still sees how a worker died: otherwise the kernel reaps
#    workers itself, waitpid fails, and a kill -9 looks like "exited with
#    status 0" (kind "exit", no [worker-exit] warning).
. "$(dirname "$0")/lib.sh"

a="$T/a"
mkdir -p "$a"
long_scene "$a/scene_1.mp4" 40

python3 -c 'import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])' \
    "$TD" run "$a" --workers 1 --threads 3 --retries 0 -v >"$T/log" 2>&1 &
BG_PID=$!
wait_for_log "$T/log" '\[dispatch\] scene_1.mp4' 60 || fail "scene_1 never dispatched"
pid=$(sed -n 's/.*\[dispatch\] scene_1.mp4 -> worker PID=\([0-9]*\).*/\1/p' "$T/log" | head -n1)
args=$(tr '\0' ' ' <"/proc/$pid/cmdline")
sleep 1
kill -9 "$pid" || fail "could not kill worker $pid"
wait "$BG_PID"; rc=$?; BG_PID=
case "$args" in *"--threads 3"*) ;; *) fail "worker started without --threads: $args" ;; esac
[ "$rc" -eq 1 ] || fail "exit $rc, want 1 (scene_1 failed with --retries 0): $(tail "$T/log")"
grep -q '\[worker-exit\] PID=[0-9]*: worker killed by signal 9' "$T/log" || fail "kill -9 not seen: $(grep -E 'exit|failed' "$T/log")"
f=$(failed_marker "$a/scene_1.mp4")
[ -f "$f" ] || fail "no .failed marker"
[ "$(json_get "$f" 'd["kind"]')" = crash ] || fail "failure kind $(json_get "$f" 'd["kind"]'), want crash"
assert_no_temp "$a"
exit 0

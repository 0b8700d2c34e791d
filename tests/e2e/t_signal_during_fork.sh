# t_signal_during_fork: one Ctrl-C (SIGINT to the whole process group)
# that lands while the supervisor is starting a worker must count once.
# Between fork and exec the child still has the supervisor's SIGINT
# handler, which writes into the supervisor's signal pipe: the single
# Ctrl-C then counted twice and became "stop now", abandoning the scene in
# flight. A preloaded shim makes the child's prctl(PR_SET_PDEATHSIG) slow,
# so that the (normally short) fork-to-exec window is hit every time.
. "$(dirname "$0")/lib.sh"

command -v cc >/dev/null 2>&1 || skip "no C compiler for the timing shim"
command -v setsid >/dev/null 2>&1 || skip "no setsid"
cat >"$T/shim.c" <<'EOF'
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
/* prctl(PR_SET_PDEATHSIG) sleeps 3 s while $SHIM_SLOW_FILE exists. */
int prctl(int option, ...)
{
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    const char *f = getenv("SHIM_SLOW_FILE");
    if (option == PR_SET_PDEATHSIG && f && access(f, F_OK) == 0) {
        struct timespec ts = {3, 0};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    return (int)syscall(SYS_prctl, option, a2, a3, a4, a5);
}
EOF
cc -shared -fPIC -o "$T/shim.so" "$T/shim.c" || skip "cannot build the timing shim"
export ASAN_OPTIONS="$ASAN_OPTIONS:verify_asan_link_order=0"

a="$T/a"
mkdir -p "$a"
long_scene "$a/scene_1.mp4" 60
long_scene "$a/scene_2.mp4" 60

# Own process group (setsid), so that the "Ctrl-C" reaches only tapedeck.
SHIM_SLOW_FILE="$T/slow" LD_PRELOAD="$T/shim.so" setsid "$TD" run "$a" --workers 2 -v >"$T/log" 2>&1 &
BG_PID=$!
wait_for_log "$T/log" '\[dispatch\] scene_2.mp4' 60 || fail "scene_2 never dispatched"
pid=$(sed -n 's/.*\[dispatch\] scene_2.mp4 -> worker PID=\([0-9]*\).*/\1/p' "$T/log" | head -n1)
touch "$T/slow"
kill -9 "$pid" || fail "could not kill worker $pid"
# The replacement worker is now between fork and exec for 3 s.
i=0
while [ "$(grep -c '\[worker-start\]' "$T/log")" -lt 3 ]; do
    i=$((i + 1)); [ "$i" -gt 100 ] && fail "no restart: $(cat "$T/log")"
    sleep 0.1
done
sleep 0.5
/bin/kill -INT -- "-$BG_PID" || fail "could not signal the process group"
wait "$BG_PID"; rc=$?; BG_PID=
grep -q 'stopping now' "$T/log" && fail "one Ctrl-C was taken for two: $(grep interrupt "$T/log")"
[ "$rc" -eq 130 ] || fail "exit $rc, want 130: $(tail "$T/log")"
assert_done "$a/scene_1.mp4"
assert_no_temp "$a"
exit 0

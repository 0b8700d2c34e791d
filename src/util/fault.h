/*
 * fault.h: fault injection for tests.
 *
 * TAPEDECK_FAULT="ACTION:POINT:SUBSTRING[,...]" makes the process misbehave
 * when code reaches td_fault_point(POINT, subject) with a subject that
 * contains SUBSTRING. ACTIONS:
 *   kill   raise SIGKILL (as the OOM killer would)
 *   abort  abort()
 *   stall  stop making progress (sleep forever, no heartbeats)
 *   once-kill  kill, but only the first time for this subject: a marker
 *              file TAPEDECK_FAULT_DIR/<hash> remembers it (needs that dir)
 * POINTS used: "scene" (a worker starts a scene), "write" (an output is
 * written but not yet renamed), "decode" (audio is being decoded),
 * "restore-mux" (the restore task writes its media file: the action
 *   "desync" shifts its audio), "restore-out" (the restore task has
 *   encoded it: the action "damage" flips 64 bytes in its middle).
 * Unset, it costs one getenv per call. Never set it in production.
 */
#ifndef TD_UTIL_FAULT_H
#define TD_UTIL_FAULT_H

void td_fault_point(const char *point, const char *subject);

/* True if a rule "ACTION:POINT:SUBSTRING" names this action and point and
 * matches the subject: for faults the caller acts out itself (the restore
 * task's "desync:restore-mux:NAME" shifts the audio it writes, so that its
 * self-check has something to catch). */
int td_fault_wants(const char *action, const char *point, const char *subject);

#endif

/*
 * options.h: parsing `tapedeck run` arguments into td_run_opts.
 *
 * Kept out of main.c so the rules (ranges, defaults, the one ARCHIVE) are
 * tested directly. The strings in the filled td_run_opts point into argv.
 */
#ifndef TD_RUN_OPTIONS_H
#define TD_RUN_OPTIONS_H

#include "run/run.h"
#include "util/error.h"

#define TD_OPTS_HELP 1 /* --help was given: print usage, exit 0 */

/* argv[0] is the command name ("run"). Returns TD_OK, TD_OPTS_HELP, or
 * TD_EINVAL with err naming the bad option or value. Sets o->verbosity
 * (TD_LOG_*) and o->progress (1 unless --no-progress or -q; the caller
 * still checks for a terminal). */
int td_run_opts_parse(int argc, char **argv, td_run_opts *o, td_error *err);

/* Strict decimal in [lo, hi]; 0 on success. */
int td_parse_long(const char *s, long lo, long hi, long *out);

#endif

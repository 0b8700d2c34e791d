/* engine.c: the table of built-in engines and selection (see engine.h). */
#include "asr/engine.h"

#include <stdio.h>
#include <string.h>

static const td_engine_ops *const engines[] = {
    &td_engine_whisper,
    &td_engine_sphinx,
};

const td_engine_ops *const *td_engine_list(size_t *count)
{
    *count = sizeof engines / sizeof engines[0];
    return engines;
}

const td_engine_ops *td_engine_find(const char *name)
{
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++)
        if (strcmp(engines[i]->name, name) == 0)
            return engines[i];
    return NULL;
}

int td_engine_select(const char *name, const td_engine_config *cfg,
                     const td_engine_ops **out, td_error *err)
{
    *out = NULL;
    if (name && strcmp(name, "auto") != 0) {
        const td_engine_ops *ops = td_engine_find(name);
        if (!ops)
            return td_error_set(err, TD_EINVAL, "unknown engine '%s'", name);
        if (ops->api_version != TD_ENGINE_API_VERSION)
            return td_error_set(err, TD_EUNAVAILABLE, "engine '%s' has API version %d, need %d",
                                name, ops->api_version, TD_ENGINE_API_VERSION);
        int rc = ops->probe(cfg, err);
        if (rc)
            return rc;
        *out = ops;
        return TD_OK;
    }
    char reasons[TD_ERROR_MSG_MAX] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++) {
        td_error e = {0};
        if (engines[i]->api_version != TD_ENGINE_API_VERSION)
            continue;
        if (engines[i]->probe(cfg, &e) == TD_OK) {
            *out = engines[i];
            return TD_OK;
        }
        int n = snprintf(reasons + used, sizeof reasons - used, "%s%s: %s", used ? "; " : "",
                         engines[i]->name, e.msg);
        if (n > 0 && (size_t)n < sizeof reasons - used)
            used += (size_t)n;
    }
    return td_error_set(err, TD_EUNAVAILABLE, "no speech engine can run here (%s)", reasons);
}

/* The default decoding mode: batched, which the accuracy figures in
 * README.md ("Batched decoding") support. */
static int wdecode_resolve(int mode)
{
    return mode == TD_WDECODE_SEQUENTIAL ? TD_WDECODE_SEQUENTIAL : TD_WDECODE_BATCHED;
}

const char *td_wdecode_mode_name(int mode)
{
    return wdecode_resolve(mode) == TD_WDECODE_SEQUENTIAL ? "sequential" : "batched";
}

int td_wdecode_mode_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "batched") == 0)
        return TD_WDECODE_BATCHED;
    if (strcmp(s, "sequential") == 0)
        return TD_WDECODE_SEQUENTIAL;
    return -1;
}

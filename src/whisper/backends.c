/*
 * backends.c: the table of Whisper compute backends built into tapedeck
 * (backend.h). The CPU backend is always first; GPU backends are appended
 * here as they are built.
 */
#include "whisper/backend.h"

#include <string.h>

static const td_wbackend_ops *const backends[] = {
    &td_wbackend_cpu,
};

const td_wbackend_ops *const *td_wbackend_list(size_t *count)
{
    if (count)
        *count = sizeof backends / sizeof backends[0];
    return backends;
}

const td_wbackend_ops *td_wbackend_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

/*
 * backends.c: the table of Whisper compute backends built into tapedeck
 * (backend.h). The CPU backend is always first; GPU backends are appended
 * here as they are built.
 */
#include "whisper/backend.h"

#include <string.h>

#include "whisper/backend/cpu/q8.h"
#ifdef TD_HAVE_VULKAN
#include "whisper/backend/vulkan/vulkan.h"
#endif

static const td_wbackend_ops *const backends[] = {
    &td_wbackend_cpu,
#ifdef TD_HAVE_VULKAN
    &td_wbackend_vulkan, /* probe() says whether a device is usable here */
#endif
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

enum td_wcompute td_wcompute_resolve(enum td_wcompute c)
{
    if (c == TD_WCOMPUTE_F32 || c == TD_WCOMPUTE_INT8)
        return c;
    return td_q8_fast() ? TD_WCOMPUTE_INT8 : TD_WCOMPUTE_F32;
}

const char *td_wcompute_name(enum td_wcompute c)
{
    switch (c) {
    case TD_WCOMPUTE_F32:
        return "f32";
    case TD_WCOMPUTE_INT8:
        return "int8";
    default:
        return "auto";
    }
}

int td_wcompute_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "auto") == 0)
        return TD_WCOMPUTE_AUTO;
    if (strcmp(s, "f32") == 0)
        return TD_WCOMPUTE_F32;
    if (strcmp(s, "int8") == 0)
        return TD_WCOMPUTE_INT8;
    return -1;
}

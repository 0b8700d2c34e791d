/* fault.c: TAPEDECK_FAULT test hooks (see fault.h). */
#include "util/fault.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* True the first time for this (point, subject) across processes. */
static int first_time(const char *point, const char *subject)
{
    const char *dir = getenv("TAPEDECK_FAULT_DIR");
    if (!dir)
        return 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/fault-%s-%016llx", dir, point,
             (unsigned long long)fnv1a(subject));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

static void act(const char *action, const char *point, const char *subject)
{
    if (strcmp(action, "kill") == 0) {
        raise(SIGKILL);
    } else if (strcmp(action, "abort") == 0) {
        abort();
    } else if (strcmp(action, "stall") == 0) {
        for (;;)
            pause();
    } else if (strcmp(action, "once-kill") == 0) {
        if (first_time(point, subject))
            raise(SIGKILL);
    }
}

/* Acts out every rule matching point and subject (want NULL), or says
 * whether one of them is the action want. */
static int each_rule(const char *point, const char *subject, const char *want)
{
    const char *spec = getenv("TAPEDECK_FAULT");
    if (!spec || !*spec || !subject)
        return 0;
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", spec);
    char *save = NULL;
    for (char *rule = strtok_r(copy, ",", &save); rule; rule = strtok_r(NULL, ",", &save)) {
        char *p1 = strchr(rule, ':');
        if (!p1)
            continue;
        *p1++ = '\0';
        char *p2 = strchr(p1, ':');
        if (!p2)
            continue;
        *p2++ = '\0';
        if (strcmp(p1, point) != 0 || !strstr(subject, p2))
            continue;
        if (!want)
            act(rule, point, subject);
        else if (strcmp(rule, want) == 0)
            return 1;
    }
    return 0;
}

int td_fault_wants(const char *action, const char *point, const char *subject)
{
    return each_rule(point, subject, action);
}

void td_fault_point(const char *point, const char *subject)
{
    each_rule(point, subject, NULL);
}

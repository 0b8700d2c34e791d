/* atomic.c: temp file + fsync + rename + directory fsync (see atomic.h). */
#include "util/atomic.h"
#include "util/fault.h"
#include "util/path.h"

#include <dirent.h>
#include <jansson.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int td_mkdir_p(const char *dir, td_error *err)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return td_error_set(err, TD_EINVAL, "'%s': not a folder path", dir);
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return td_error_errno(err, TD_EIO, errno, "%s: cannot create folder", path);
        path[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return td_error_set(err, TD_EIO, "%s: not a folder", dir);
    return TD_OK;
}

int td_fsync_dir(const char *dir, td_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot open directory", dir);
    int rc = TD_OK;
    if (fsync(fd) != 0 && errno != EINVAL) /* some file systems refuse dir fsync */
        rc = td_error_errno(err, TD_EIO, errno, "%s: fsync of directory failed", dir);
    close(fd);
    return rc;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int td_atomic_write(const char *path, const void *data, size_t len, td_error *err)
{
    char dir[PATH_MAX];
    const char *base;
    if (td_split_path(path, dir, sizeof dir, &base) != 0 || !*base)
        return td_error_set(err, TD_EINVAL, "%s: not a file path", path);

    /* The prefix, pid and suffix add ~20 bytes to the final name: cut the
     * copy of it in the temporary name so that any final name the file
     * system takes still gets a temporary file (only the pid is parsed). */
    int fixed = snprintf(NULL, 0, TD_TEMP_PREFIX "%ld..XXXXXX", (long)getpid());
    int room = fixed > 0 && fixed < NAME_MAX ? NAME_MAX - fixed : 0;
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s/" TD_TEMP_PREFIX "%ld.%.*s.XXXXXX", dir, (long)getpid(),
                     room, base);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return td_error_set(err, TD_EINVAL, "%s: path too long", path);

    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot create temporary file", path);
    if (fchmod(fd, 0644) != 0) { /* mkostemp makes 0600; outputs are shared files */
        int e = errno;
        close(fd);
        unlink(tmp);
        return td_error_errno(err, TD_EIO, e, "%s: chmod of temporary file", path);
    }
    if (write_all(fd, data, len) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return td_error_errno(err, TD_EIO, e, "%s: write failed", path);
    }
    /* Fault injection point: the worker dies with the data written but not
     * yet renamed. Tests use it to prove that no partial output is left. */
    td_fault_point("write", path);
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return td_error_errno(err, TD_EIO, e, "%s: fsync failed", path);
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return td_error_errno(err, TD_EIO, e, "%s: close failed", path);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return td_error_errno(err, TD_EIO, e, "%s: rename into place failed", path);
    }
    return td_fsync_dir(dir, err);
}

int td_atomic_write_json(const char *path, const json_t *value, size_t flags, td_error *err)
{
    char *text = json_dumps(value, flags);
    if (!text)
        return td_error_set(err, TD_ENOMEM, "%s: cannot serialise JSON", path);
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    int rc = td_atomic_write(path, line, n + 1, err);
    free(line);
    return rc;
}

bool td_atomic_is_temp_name(const char *name, pid_t *pid)
{
    size_t plen = strlen(TD_TEMP_PREFIX);
    if (strncmp(name, TD_TEMP_PREFIX, plen) != 0)
        return false;
    /* Digits only: strtol alone would also take " 12" or "+12", and a value
     * past INT_MAX would wrap into pid 0 or -1, which kill() reads as
     * "process group" or "every process". */
    const char *digits = name + plen;
    if (*digits < '0' || *digits > '9')
        return false;
    char *end;
    errno = 0;
    long v = strtol(digits, &end, 10);
    if (errno || *end != '.' || v <= 0 || v > INT_MAX)
        return false;
    if (pid)
        *pid = (pid_t)v;
    return true;
}

int td_atomic_sweep_orphans(const char *dir, td_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return td_error_errno(err, TD_EIO, errno, "%s: cannot open directory", dir);
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        pid_t pid;
        if (!td_atomic_is_temp_name(de->d_name, &pid))
            continue;
        if (kill(pid, 0) == 0 || errno == EPERM)
            continue; /* writer alive (or not ours to judge) */
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

/*
 * scan.c: finding the scenes of an archive (see scan.h).
 *
 * The walk reads each directory with opendir/readdir, sorts its entries in
 * natural order, and looks at each with fstatat relative to the directory's
 * descriptor. Choices made here that callers may rely on:
 *
 *  - Hidden names (leading '.') are skipped, files and directories alike:
 *    markers, temporary files and .git-like folders are all hidden.
 *  - A non-directory is a scene when td_is_media_name() accepts its name and
 *    td_is_own_output_name() does not. A directory's name is not filtered
 *    by extension ("holiday.mp4/" is walked like any directory).
 *  - Symbolic links are resolved with realpath() and followed only when the
 *    target is the archive root's realpath or lies under it (compared with a
 *    trailing '/', so /arch2 is not inside /arch). Broken links, link loops
 *    and links to anything but a regular file or a directory are skipped.
 *    A scene reached through a file link is named by the link (its outputs
 *    go beside the link); files are not deduplicated.
 *  - Every directory is walked at most once, keyed by (st_dev, st_ino). Real
 *    subdirectories are walked first and directory links afterwards, so a
 *    directory that is both present and linked to is listed under its real
 *    path, and a link loop ends at the first repeat.
 *  - The root must be a readable directory, or the scan fails with an error
 *    naming it. A subdirectory that cannot be opened or read (permissions,
 *    vanished mid-scan, an I/O error) is skipped without failing the scan:
 *    one bad folder must not stop a night's work on the rest of the
 *    archive. Running out of file descriptors or memory does fail it.
 *  - Nesting deeper than SCAN_MAX_DEPTH, more than TD_SCAN_MAX_SCENES scenes
 *    or more than SCAN_MAX_DIRS directories fail the scan with an error that
 *    names the limit.
 *  - Names are bytes: spaces, quotes, newlines and invalid UTF-8 are kept as
 *    they are.
 *  - The result is sorted by relative path, component by component, with
 *    td_natural_cmp; clash_with is computed on that order.
 */
#include "archive/scan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Directories below the root; deeper trees are almost surely link farms or
 * mistakes, and the walk recurses once per level. */
#define SCAN_MAX_DEPTH 64
/* Directories walked in one scan (bounds the visited set). */
#define SCAN_MAX_DIRS 1000000
/* Entries kept from one directory (after name filtering). */
#define SCAN_MAX_ENTRIES ((size_t)TD_SCAN_MAX_SCENES + SCAN_MAX_DIRS)

/* ---------------------------------------------------------------- names */

static const char *const media_exts[] = {
    "mp4", "m4v", "mov", "mkv", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "vob", "dv",
    "wmv", "flv", "webm", "3gp", "ogv", "wav", "mp3", "m4a", "flac", "ogg", "opus", "aac",
};

bool td_is_media_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name || !dot[1])
        return false;
    for (size_t i = 0; i < sizeof media_exts / sizeof media_exts[0]; i++)
        if (strcasecmp(dot + 1, media_exts[i]) == 0)
            return true;
    return false;
}

/* tapedeck names what it writes beside a scene "{stem}.restored.{ext}" or
 * "{stem}.tapedeck.{...}.{ext}"; any name holding one of these infixes is
 * ours. The match is case-sensitive: tapedeck writes them in lower case, and
 * a user's "Holiday.Restored.mp4" from another tool stays a scene. */
bool td_is_own_output_name(const char *name)
{
    return strstr(name, ".restored.") != NULL || strstr(name, ".tapedeck.") != NULL;
}

/* ------------------------------------------------------- natural order */

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Natural comparison of two byte ranges, without the bytewise tie-break:
 * 0 means "equal as sequences of text and numbers" ("a01" and "a1"). */
static int natural_cmp_n(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    size_t i = 0, j = 0;
    while (i < na && j < nb) {
        if (is_digit(a[i]) && is_digit(b[j])) {
            /* Compare the runs by value: skip leading zeros, then the
             * longer significant run is larger, then digit by digit. No
             * conversion, so any length of digits works. */
            while (i < na && a[i] == '0')
                i++;
            while (j < nb && b[j] == '0')
                j++;
            size_t si = i, sj = j;
            while (i < na && is_digit(a[i]))
                i++;
            while (j < nb && is_digit(b[j]))
                j++;
            size_t li = i - si, lj = j - sj;
            if (li != lj)
                return li < lj ? -1 : 1;
            int c = memcmp(a + si, b + sj, li);
            if (c)
                return c < 0 ? -1 : 1;
            continue;
        }
        if (a[i] != b[j])
            return a[i] < b[j] ? -1 : 1;
        i++;
        j++;
    }
    if (i < na)
        return 1;
    if (j < nb)
        return -1;
    return 0;
}

/* Full comparison of byte ranges: natural first, then bytewise so that
 * distinct names never compare equal and the order is total. */
static int natural_cmp_full(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    int c = natural_cmp_n(a, na, b, nb);
    if (c)
        return c;
    size_t n = na < nb ? na : nb;
    c = memcmp(a, b, n);
    if (c)
        return c < 0 ? -1 : 1;
    return na < nb ? -1 : na > nb ? 1 : 0;
}

int td_natural_cmp(const char *a, const char *b)
{
    return natural_cmp_full((const unsigned char *)a, strlen(a), (const unsigned char *)b,
                            strlen(b));
}

/* Relative paths compared per component, so "a/x" sorts before "a b/x"
 * (whole-string order would put ' ' before '/'). */
static int rel_cmp(const char *a, const char *b)
{
    for (;;) {
        const char *ea = strchr(a, '/');
        const char *eb = strchr(b, '/');
        size_t na = ea ? (size_t)(ea - a) : strlen(a);
        size_t nb = eb ? (size_t)(eb - b) : strlen(b);
        int c = natural_cmp_full((const unsigned char *)a, na, (const unsigned char *)b, nb);
        if (c)
            return c;
        if (!ea || !eb)
            return !ea && !eb ? 0 : !ea ? -1 : 1;
        a = ea + 1;
        b = eb + 1;
    }
}

/* ------------------------------------------------------------- scenes */

void td_scene_release(td_scene *scene)
{
    if (!scene)
        return;
    free(scene->path);
    free(scene->rel);
    free(scene->dir);
    free(scene->name);
    free(scene->stem);
    memset(scene, 0, sizeof *scene);
    scene->clash_with = -1;
}

void td_scene_list_release(td_scene_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        td_scene_release(&list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

/* In unsigned arithmetic: an mtime past 2262 does not fit int64 ns, and a
 * signed overflow would be undefined. Wrapping keeps distinct times distinct
 * (within 584 years); marker.c computes the same value to compare. */
static int64_t mtime_ns_of(const struct stat *st)
{
    return (int64_t)((uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec);
}

/* "a.b.mp4" -> "a.b"; a name without a dot (or only a leading one) is its
 * own stem. */
static char *stem_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    size_t n = (dot && dot != name) ? (size_t)(dot - name) : strlen(name);
    return strndup(name, n);
}

/* Fill every string of a scene; on failure frees what was made. */
static int scene_fill(td_scene *s, const char *path, const char *rel, const char *dir,
                      const char *name, const struct stat *st)
{
    memset(s, 0, sizeof *s);
    s->clash_with = -1;
    s->path = strdup(path);
    s->rel = strdup(rel);
    s->dir = strdup(dir);
    s->name = strdup(name);
    s->stem = stem_of(name);
    if (!s->path || !s->rel || !s->dir || !s->name || !s->stem) {
        td_scene_release(s);
        return TD_ENOMEM;
    }
    s->size = (int64_t)st->st_size;
    s->mtime_ns = mtime_ns_of(st);
    return TD_OK;
}

/* Path errors a retry cannot fix are bad input; the rest may be transient. */
static int errno_rc(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
    case EACCES:
    case EPERM:
    case ELOOP:
    case ENAMETOOLONG:
        return TD_EINPUT;
    case ENOMEM:
        return TD_ENOMEM;
    default:
        return TD_EIO;
    }
}

/* Errors that say this process ran short, not that a path is bad. */
static bool resource_errno(int e)
{
    return e == EMFILE || e == ENFILE || e == ENOMEM;
}

/* "root" without trailing slashes ("/" stays "/"). */
static char *normalize_root(const char *root)
{
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        n--;
    return strndup(root, n);
}

/* dir + "/" + name, without doubling the slash after "/". */
static char *join(const char *dir, const char *name)
{
    size_t nd = strlen(dir);
    const char *sep = (nd > 0 && dir[nd - 1] == '/') ? "" : "/";
    char *s = NULL;
    if (asprintf(&s, "%s%s%s", dir, sep, name) < 0)
        return NULL;
    return s;
}

int td_scene_from_path(const char *root, const char *path, td_scene *out, td_error *err)
{
    memset(out, 0, sizeof *out);
    out->clash_with = -1;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (!*name)
        return td_error_set(err, TD_EINVAL, "%s: not a file path", path);

    struct stat st;
    if (stat(path, &st) != 0)
        return td_error_errno(err, errno_rc(errno), errno, "%s: cannot stat", path);
    if (!S_ISREG(st.st_mode))
        return td_error_set(err, TD_EINPUT, "%s: not a regular file", path);

    const char *rel = path;
    char *nroot = NULL;
    if (root) {
        nroot = normalize_root(root);
        if (!nroot)
            return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
        size_t n = strlen(nroot);
        if (strcmp(nroot, "/") == 0 && path[0] == '/') {
            rel = path + 1;
        } else if (strncmp(path, nroot, n) == 0 && path[n] == '/') {
            rel = path + n + 1;
            while (*rel == '/')
                rel++;
        } else {
            int rc = td_error_set(err, TD_EINVAL, "%s: not inside the archive %s", path, root);
            free(nroot);
            return rc;
        }
    }

    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    int rc = TD_OK;
    if (!dir)
        rc = TD_ENOMEM;
    else
        rc = scene_fill(out, path, rel, dir, name, &st);
    free(dir);
    free(nroot);
    if (rc)
        return td_error_set(err, rc, "%s: out of memory", path);
    return TD_OK;
}

/* ------------------------------------------------------ visited set */

/* Open-addressing set of (dev, ino) of the directories walked. */
struct dir_key {
    dev_t dev;
    ino_t ino;
    int used;
};

struct dir_set {
    struct dir_key *slots;
    size_t cap; /* power of two */
    size_t count;
};

static size_t dir_hash(dev_t dev, ino_t ino)
{
    uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev * 0xc2b2ae3d27d4eb4full;
    return (size_t)(h ^ (h >> 29));
}

static bool dir_set_has(const struct dir_set *s, dev_t dev, ino_t ino)
{
    if (!s->cap)
        return false;
    for (size_t i = dir_hash(dev, ino) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slots[i].used)
            return false;
        if (s->slots[i].dev == dev && s->slots[i].ino == ino)
            return true;
    }
}

static void dir_set_put_nogrow(struct dir_set *s, dev_t dev, ino_t ino)
{
    size_t i = dir_hash(dev, ino) & (s->cap - 1);
    while (s->slots[i].used)
        i = (i + 1) & (s->cap - 1);
    s->slots[i] = (struct dir_key){ dev, ino, 1 };
    s->count++;
}

/* Caller checked dir_set_has first. */
static int dir_set_add(struct dir_set *s, dev_t dev, ino_t ino)
{
    if ((s->count + 1) * 2 > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        struct dir_key *ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return TD_ENOMEM;
        struct dir_set grown = { ns, ncap, 0 };
        for (size_t i = 0; i < s->cap; i++)
            if (s->slots[i].used)
                dir_set_put_nogrow(&grown, s->slots[i].dev, s->slots[i].ino);
        free(s->slots);
        *s = grown;
    }
    dir_set_put_nogrow(s, dev, ino);
    return TD_OK;
}

/* ------------------------------------------------------------- walk */

/* A directory link whose walk is deferred until the real tree is done. */
struct pending {
    char *path;
    char *rel;
    int depth;
};

struct scan {
    const char *root;   /* as given, for messages */
    char *root_path;    /* normalized: prefix of every scene path */
    char *root_real;    /* realpath of the root */
    size_t root_real_len;
    td_scene_list list;
    size_t list_cap;
    struct dir_set visited;
    struct pending *pend;
    size_t n_pend, pend_cap, pend_head;
    td_error *err;
};

static bool inside_root(const struct scan *sc, const char *real)
{
    if (strcmp(sc->root_real, "/") == 0)
        return real[0] == '/';
    return strncmp(real, sc->root_real, sc->root_real_len) == 0 &&
           (real[sc->root_real_len] == '\0' || real[sc->root_real_len] == '/');
}

static int add_scene(struct scan *sc, const char *path, const char *rel, const char *dir,
                     const char *name, const struct stat *st)
{
    if (sc->list.count >= TD_SCAN_MAX_SCENES)
        return td_error_set(sc->err, TD_ENOMEM, "%s: more than %d scenes in the archive",
                            sc->root, TD_SCAN_MAX_SCENES);
    if (sc->list.count == sc->list_cap) {
        size_t ncap = sc->list_cap ? sc->list_cap * 2 : 64;
        td_scene *ni = realloc(sc->list.items, ncap * sizeof *ni);
        if (!ni)
            return td_error_set(sc->err, TD_ENOMEM, "%s: out of memory listing scenes", sc->root);
        sc->list.items = ni;
        sc->list_cap = ncap;
    }
    if (scene_fill(&sc->list.items[sc->list.count], path, rel, dir, name, st) != TD_OK)
        return td_error_set(sc->err, TD_ENOMEM, "%s: out of memory", path);
    sc->list.count++;
    return TD_OK;
}

static int push_pending(struct scan *sc, const char *path, const char *rel, int depth)
{
    if (sc->n_pend == sc->pend_cap) {
        size_t ncap = sc->pend_cap ? sc->pend_cap * 2 : 16;
        struct pending *np = realloc(sc->pend, ncap * sizeof *np);
        if (!np)
            return td_error_set(sc->err, TD_ENOMEM, "%s: out of memory", path);
        sc->pend = np;
        sc->pend_cap = ncap;
    }
    struct pending *p = &sc->pend[sc->n_pend];
    p->path = strdup(path);
    p->rel = strdup(rel);
    p->depth = depth;
    if (!p->path || !p->rel) {
        free(p->path);
        free(p->rel);
        return td_error_set(sc->err, TD_ENOMEM, "%s: out of memory", path);
    }
    sc->n_pend++;
    return TD_OK;
}

static int name_ptr_cmp(const void *a, const void *b)
{
    return td_natural_cmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Read the names worth a look from an open directory: not hidden, and not
 * a regular file whose name says it is no scene (when d_type tells). A
 * readdir failure sets *read_errno and returns TD_EIO without a message (the
 * caller decides whether it matters); a bound or allocation failure returns
 * its td_rc with a message. */
static int read_names(DIR *d, char ***out, size_t *n_out, int *read_errno, struct scan *sc,
                      const char *path)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    *read_errno = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) {
                *read_errno = errno;
                free_names(names, n);
                return TD_EIO;
            }
            break;
        }
        const char *nm = de->d_name;
        if (nm[0] == '.')
            continue;
        if (de->d_type == DT_REG && (!td_is_media_name(nm) || td_is_own_output_name(nm)))
            continue;
        if (n >= SCAN_MAX_ENTRIES) {
            free_names(names, n);
            return td_error_set(sc->err, TD_ENOMEM, "%s: more than %zu entries in a directory",
                                path, SCAN_MAX_ENTRIES);
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (!nn) {
                free_names(names, n);
                return td_error_set(sc->err, TD_ENOMEM, "%s: out of memory", path);
            }
            names = nn;
            cap = ncap;
        }
        names[n] = strdup(nm);
        if (!names[n]) {
            free_names(names, n);
            return td_error_set(sc->err, TD_ENOMEM, "%s: out of memory", path);
        }
        n++;
    }
    if (n > 1)
        qsort(names, n, sizeof *names, name_ptr_cmp);
    *out = names;
    *n_out = n;
    return TD_OK;
}

/* Walk one directory. path is as opened (root-joined), rel "" for the root.
 * Real subdirectories recurse; directory links are queued. */
static int walk_dir(struct scan *sc, const char *path, const char *rel, int depth)
{
    bool is_root = depth == 0;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (is_root)
            return td_error_errno(sc->err, errno_rc(errno), errno, "%s: cannot open archive",
                                  sc->root);
        /* Running out of descriptors or memory is our problem, not the
         * folder's: skipping would silently shorten the list. */
        if (resource_errno(errno))
            return td_error_errno(sc->err, TD_ENOMEM, errno, "%s: cannot open directory", path);
        return TD_OK; /* unreadable subdirectory: skipped, see the top */
    }
    struct stat dst;
    if (fstat(fd, &dst) != 0) {
        int e = errno;
        close(fd);
        if (is_root)
            return td_error_errno(sc->err, TD_EIO, e, "%s: cannot stat archive", sc->root);
        return TD_OK;
    }
    if (dir_set_has(&sc->visited, dst.st_dev, dst.st_ino)) {
        close(fd);
        return TD_OK;
    }
    if (sc->visited.count >= SCAN_MAX_DIRS) {
        close(fd);
        return td_error_set(sc->err, TD_ENOMEM, "%s: more than %d directories in the archive",
                            sc->root, SCAN_MAX_DIRS);
    }
    if (dir_set_add(&sc->visited, dst.st_dev, dst.st_ino) != TD_OK) {
        close(fd);
        return td_error_set(sc->err, TD_ENOMEM, "%s: out of memory", path);
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        if (is_root)
            return td_error_errno(sc->err, TD_EIO, e, "%s: cannot read archive", sc->root);
        return TD_OK;
    }

    char **names = NULL;
    size_t n = 0;
    int read_errno = 0;
    int rc = read_names(d, &names, &n, &read_errno, sc, path);
    if (rc != TD_OK) {
        closedir(d);
        if (read_errno == 0)
            return rc; /* a bound or out of memory: fails the scan */
        if (is_root)
            return td_error_errno(sc->err, TD_EIO, read_errno, "%s: cannot read archive", sc->root);
        if (resource_errno(read_errno))
            return td_error_errno(sc->err, TD_ENOMEM, read_errno, "%s: cannot read directory",
                                  path);
        return TD_OK; /* unreadable subdirectory: skipped */
    }

    for (size_t i = 0; i < n && rc == TD_OK; i++) {
        const char *nm = names[i];
        char *cpath = join(path, nm);
        char *crel = *rel ? join(rel, nm) : strdup(nm);
        if (!cpath || !crel) {
            free(cpath);
            free(crel);
            rc = td_error_set(sc->err, TD_ENOMEM, "%s: out of memory", path);
            break;
        }
        struct stat st;
        if (fstatat(dirfd(d), nm, &st, AT_SYMLINK_NOFOLLOW) != 0)
            goto next; /* vanished since readdir */
        if (S_ISLNK(st.st_mode)) {
            char *real = realpath(cpath, NULL);
            if (!real)
                goto next; /* broken link or loop */
            bool ok = inside_root(sc, real) && stat(real, &st) == 0;
            free(real);
            if (!ok)
                goto next;
            if (S_ISDIR(st.st_mode)) {
                /* Deferred so that the real path of a directory wins. */
                if (dir_set_has(&sc->visited, st.st_dev, st.st_ino))
                    goto next; /* already walked (a loop back up, say) */
                if (depth + 1 > SCAN_MAX_DEPTH)
                    rc = td_error_set(sc->err, TD_EINPUT,
                                      "%s: directories nested deeper than %d levels", cpath,
                                      SCAN_MAX_DEPTH);
                else
                    rc = push_pending(sc, cpath, crel, depth + 1);
                goto next;
            }
        } else if (S_ISDIR(st.st_mode)) {
            if (depth + 1 > SCAN_MAX_DEPTH)
                rc = td_error_set(sc->err, TD_EINPUT, "%s: directories nested deeper than %d levels",
                                  cpath, SCAN_MAX_DEPTH);
            else
                rc = walk_dir(sc, cpath, crel, depth + 1);
            goto next;
        }
        if (S_ISREG(st.st_mode) && td_is_media_name(nm) && !td_is_own_output_name(nm))
            rc = add_scene(sc, cpath, crel, path, nm, &st);
    next:
        free(cpath);
        free(crel);
    }
    free_names(names, n);
    closedir(d);
    return rc;
}

static int scene_ptr_rel_cmp(const void *a, const void *b)
{
    return rel_cmp(((const td_scene *)a)->rel, ((const td_scene *)b)->rel);
}

/* Scenes keyed by (dir, stem, index), to find clashes in O(n log n). */
struct clash_key {
    const char *dir;
    const char *stem;
    size_t index;
};

static int clash_cmp(const void *a, const void *b)
{
    const struct clash_key *ka = a, *kb = b;
    int c = strcmp(ka->dir, kb->dir);
    if (!c)
        c = strcmp(ka->stem, kb->stem);
    if (!c)
        c = ka->index < kb->index ? -1 : ka->index > kb->index ? 1 : 0;
    return c;
}

static int mark_clashes(td_scene_list *list)
{
    if (list->count < 2)
        return TD_OK;
    struct clash_key *keys = malloc(list->count * sizeof *keys);
    if (!keys)
        return TD_ENOMEM;
    for (size_t i = 0; i < list->count; i++)
        keys[i] = (struct clash_key){ list->items[i].dir, list->items[i].stem, i };
    qsort(keys, list->count, sizeof *keys, clash_cmp);
    size_t first = keys[0].index;
    for (size_t k = 1; k < list->count; k++) {
        if (strcmp(keys[k - 1].dir, keys[k].dir) == 0 && strcmp(keys[k - 1].stem, keys[k].stem) == 0)
            list->items[keys[k].index].clash_with = (long)first;
        else
            first = keys[k].index;
    }
    free(keys);
    return TD_OK;
}

int td_scan_archive(const char *root, td_scene_list *out, td_error *err)
{
    out->items = NULL;
    out->count = 0;

    struct scan sc;
    memset(&sc, 0, sizeof sc);
    sc.root = root;
    sc.err = err;

    struct stat st;
    if (stat(root, &st) != 0)
        return td_error_errno(err, errno_rc(errno), errno, "%s: cannot open archive", root);
    if (!S_ISDIR(st.st_mode))
        return td_error_set(err, TD_EINPUT, "%s: archive is not a directory", root);

    int rc = TD_OK;
    sc.root_path = normalize_root(root);
    if (!sc.root_path) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", root);
        goto out_free;
    }
    sc.root_real = realpath(root, NULL);
    if (!sc.root_real) {
        rc = td_error_errno(err, errno_rc(errno), errno, "%s: cannot resolve archive path", root);
        goto out_free;
    }
    sc.root_real_len = strlen(sc.root_real);

    rc = walk_dir(&sc, sc.root_path, "", 0);
    /* Directory links, in the order found; walking one may queue more. */
    while (rc == TD_OK && sc.pend_head < sc.n_pend) {
        struct pending *p = &sc.pend[sc.pend_head++];
        rc = walk_dir(&sc, p->path, p->rel, p->depth);
    }
    if (rc != TD_OK)
        goto out_free;

    if (sc.list.count > 1)
        qsort(sc.list.items, sc.list.count, sizeof *sc.list.items, scene_ptr_rel_cmp);
    if (mark_clashes(&sc.list) != TD_OK) {
        rc = td_error_set(err, TD_ENOMEM, "%s: out of memory", root);
        goto out_free;
    }
    *out = sc.list;
    sc.list.items = NULL;
    sc.list.count = 0;

out_free:
    td_scene_list_release(&sc.list);
    for (size_t i = 0; i < sc.n_pend; i++) {
        free(sc.pend[i].path);
        free(sc.pend[i].rel);
    }
    free(sc.pend);
    free(sc.visited.slots);
    free(sc.root_real);
    free(sc.root_path);
    return rc;
}

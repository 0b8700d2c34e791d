/* vram.c: the model and batch per GPU, and the step-down chain (vram.h). */
#include "run/vram.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asr/engine.h"
#include "whisper/decode.h"

#define MIB (1024LL * 1024)
#define GIB (1024.0 * 1024 * 1024)

static int english_only(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".en") == 0;
}

int td_vram_chain_select(const td_wmodel_entry *v, size_t n, const char *language, int translate,
                         int *idx)
{
    int english = language && strcmp(language, "en") == 0 && !translate;
    int fixed_other = translate || (language && *language && strcmp(language, "auto") != 0 &&
                                    strcmp(language, "en") != 0);
    int count = 0;
    /* size classes are rank / 10 (models.c): walk them largest first and
     * take one model per rank, the preferred variant of each class first */
    int taken_class[TD_VRAM_MAX_MODELS];
    int n_taken = 0;
    for (;;) {
        int best = -1, best_score = -1;
        for (size_t i = 0; i < n; i++) {
            if (v[i].shadowed || v[i].rank <= 0)
                continue;
            int en = english_only(v[i].name);
            if (en && fixed_other)
                continue;
            int done = 0;
            for (int k = 0; k < count && !done; k++)
                done = idx[k] == (int)i;
            for (int k = 0; k < n_taken && !done; k++)
                done = taken_class[k] == v[i].rank - (en ? 1 : 0);
            if (done)
                continue;
            /* rank order, but within a class the language's variant */
            int variant = english ? en : !en;
            int score = (v[i].rank - (en ? 1 : 0)) * 4 + variant * 2;
            if (score > best_score) {
                best = (int)i;
                best_score = score;
            }
        }
        if (best < 0 || count == TD_VRAM_MAX_MODELS)
            break;
        idx[count++] = best;
        if (n_taken < TD_VRAM_MAX_MODELS)
            taken_class[n_taken++] = v[best].rank - (english_only(v[best].name) ? 1 : 0);
    }
    return count;
}

static int load_header(const char *path, const char *name, int rank, td_vram_model *out,
                       td_error *err)
{
    td_wmodel *m = NULL;
    int rc = td_wmodel_open(path, &m, err);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    snprintf(out->path, sizeof out->path, "%s", path);
    out->hp = m->hp;
    out->wtype = m->wtype;
    out->rank = rank;
    td_wmodel_close(m);
    return TD_OK;
}

int td_vram_chain_installed(const char *models_dir, const char *model, const char *language,
                            int translate, int allow_downgrade, td_vram_chain *out,
                            td_error *err)
{
    memset(out, 0, sizeof *out);
    td_wmodels_path sp;
    td_wmodels_search_path(models_dir, &sp);
    td_wmodel_entry *v = NULL;
    size_t n = 0;
    int rc = td_wmodels_list(&sp, &v, &n, err);
    if (rc)
        return rc;
    int idx[TD_VRAM_MAX_MODELS];
    int k = td_vram_chain_select(v, n, language, translate, idx);
    int pinned_rank = 0;
    if (model && *model) {
        char path[PATH_MAX], name[NAME_MAX + 1];
        rc = td_wmodels_resolve(&sp, model, language, path, sizeof path, err);
        if (rc)
            goto out;
        td_wmodels_name_of(path, name, sizeof name);
        for (size_t i = 0; i < n; i++)
            if (strcmp(v[i].name, name) == 0)
                pinned_rank = v[i].rank;
        rc = load_header(path, name, pinned_rank, &out->items[0], err);
        if (rc)
            goto out;
        out->n = 1;
        out->pinned = 1;
        if (!allow_downgrade)
            goto out;
    }
    for (int i = 0; i < k && out->n < TD_VRAM_MAX_MODELS; i++) {
        const td_wmodel_entry *e = &v[idx[i]];
        /* below a pinned model: smaller ones (all, for a file of unknown size) */
        if (out->pinned && ((pinned_rank > 0 && e->rank / 10 >= pinned_rank / 10) ||
                            strcmp(e->path, out->items[0].path) == 0))
            continue;
        td_error herr = {0};
        /* an unreadable file is left out of the chain: others may serve */
        if (load_header(e->path, e->name, e->rank, &out->items[out->n], &herr) == TD_OK)
            out->n++;
    }
    if (out->n == 0) {
        char dirs[1024] = "";
        for (int i = 0; i < sp.n; i++) {
            size_t used = strlen(dirs);
            snprintf(dirs + used, sizeof dirs - used, "%s%s", i ? ", " : "", sp.dirs[i]);
        }
        rc = td_error_set(err, TD_EUNAVAILABLE, "no usable Whisper model installed (looked in %s)",
                          dirs);
    }
out:
    free(v);
    return rc;
}

int64_t td_vram_need(const td_vram_ask *a, const td_vram_model *m, int batch)
{
    td_engine_config cfg = {.beam_size = a->beam_size,
                            .decode = a->batched ? TD_WDECODE_BATCHED : TD_WDECODE_SEQUENTIAL,
                            .batch = a->batched ? batch : 1,
                            .streams = a->batched && a->streams > 1 ? a->streams : 1};
    return td_whisper_device_need(&cfg, a->backend, &m->hp, m->wtype);
}

int64_t td_vram_margin(const td_device *d)
{
    int64_t m = d->mem_total > 0 ? d->mem_total / 25 : 0;
    return m > 256 * MIB ? m : 256 * MIB;
}

static double gib(int64_t b)
{
    return (double)b / GIB;
}

void td_vram_pick_device(const td_device *d, const td_vram_chain *c, const td_vram_ask *a,
                         td_vram_pick *out)
{
    memset(out, 0, sizeof *out);
    out->model = -1;
    out->avail = -1;
    out->margin = td_vram_margin(d);
    int asked = a->batched && a->batch > 0 ? a->batch : 0;
    int first_batch = asked ? asked : 1;
    if (c->n == 0) {
        snprintf(out->why, sizeof out->why, "no model to place");
        return;
    }
    int64_t mem = d->mem_free >= 0 ? d->mem_free : d->mem_total;
    const char *what = d->mem_free >= 0 ? "free" : "total (free unknown)";
    if (mem < 0) {
        /* nothing to check against: the chain's best, as asked */
        out->fits = 1;
        out->model = 0;
        out->batch = first_batch;
        out->need = td_vram_need(a, &c->items[0], out->batch);
        snprintf(out->why, sizeof out->why,
                 "%s batch %d: the card reports no memory size, not checked", c->items[0].name,
                 out->batch);
        return;
    }
    out->checked = 1;
    out->avail = mem - out->margin;
    for (int i = 0; i < c->n; i++) {
        int64_t need = td_vram_need(a, &c->items[i], first_batch);
        if (need < 0 || need > out->avail)
            continue;
        out->fits = 1;
        out->model = i;
        out->batch = first_batch;
        out->need = need;
        break;
    }
    if (!out->fits) {
        const td_vram_model *small = &c->items[c->n - 1];
        out->need = td_vram_need(a, small, first_batch);
        snprintf(out->why, sizeof out->why,
                 "no model fits: %s%s batch %d needs %.2f GiB, %.2f GiB %s less margin %.2f GiB",
                 c->n > 1 ? "even the smallest, " : "", small->name, first_batch, gib(out->need),
                 gib(mem), what, gib(out->margin));
        return;
    }
    if (a->batched && !asked) {
        /* the largest batch that still fits (need grows with it), up to
         * the most windows a speech batch can bring */
        for (int b = td_whisper_max_batch(); b > 1; b--) {
            int64_t need = td_vram_need(a, &c->items[out->model], b);
            /* one the CPU backend opens too: a GPU worker falls back to it
             * where the card cannot run the GPU backend */
            td_vram_ask cpu = *a;
            cpu.backend = &td_wbackend_cpu;
            if (need >= 0 && need <= out->avail && td_vram_need(&cpu, &c->items[out->model], b) >= 0) {
                out->batch = b;
                out->need = need;
                break;
            }
        }
    }
    const td_vram_model *m = &c->items[out->model];
    int n = snprintf(out->why, sizeof out->why,
                     "%s batch %d: needs %.2f GiB of %.2f GiB %s (margin %.2f GiB)", m->name,
                     out->batch, gib(out->need), gib(mem), what, gib(out->margin));
    if (out->model > 0 && n > 0 && (size_t)n < sizeof out->why) {
        const td_vram_model *top = &c->items[0];
        snprintf(out->why + n, sizeof out->why - (size_t)n, "; %s%s needs %.2f GiB",
                 c->pinned ? "--model " : "", top->name, gib(td_vram_need(a, top, first_batch)));
    }
}

int td_vram_step_down(const td_vram_chain *c, int *model, int *batch)
{
    if (*batch > 1) {
        *batch /= 2;
        return 1;
    }
    if (*model + 1 < c->n) {
        (*model)++;
        *batch = 1;
        return 1;
    }
    return 0;
}

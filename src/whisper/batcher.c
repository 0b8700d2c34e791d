/*
 * batcher.c: one backend context shared by several decoder threads, their
 * encode() and decode() calls merged into one batch per step (batcher.h
 * says when and why).
 *
 * The state is one mutex and one condition variable. A client call waits
 * while another call is running on the backend (`running`: the backend
 * context is used by one thread at a time). A step (encode or decode) is
 * left as the client's request; whichever thread finds every active client
 * with a request waiting runs them all, unlocked, and marks them done.
 * Everything else (sample, kv_copy, align_weights, encoder_output) runs
 * alone, under `running`.
 */
#include "whisper/batcher.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A request is WAITING from its client's call until the step that runs it
 * is over; only then, under the lock, DONE (its rc and err set before,
 * while the client still waits), so that a client never sees its result
 * (nor makes its next request) while the step still reads its buffers. */
enum req_state { REQ_NONE = 0, REQ_WAITING, REQ_DONE };
enum req_kind { REQ_ENCODE = 1, REQ_DECODE };

typedef struct request {
    enum req_state state;
    enum req_kind kind;
    int n_win;
    const int *windows;
    const float *const *mels;
    int n_seq;
    const td_wseq *seqs;
    const int32_t *tokens;
    int all_logits;
    float *logits;
    int ran;               /* the step running it has (leader only) */
    int kept;              /* its rows stay on the backend for sample() */
    int rc;
    td_error err;
} request;

typedef struct client {
    td_wbatcher *bt;
    int index;
    int active;           /* in a decode loop: steps wait for its request */
    int pending_sample;   /* its rows of the last merged decode are still to be read */
    int row0, n_rows;     /* those rows */
    request req;
    td_wsample_in *in;    /* sample() rows shifted to the merged decode, per.max_seq */
} client;

struct td_wbatcher {
    const td_wbackend_ops *ops;
    td_wbackend *ctx;
    td_wbackend_ops table; /* the clients' table: batcher_* below */
    td_wconfig per;
    int n, n_vocab;
    client cl[TD_WBATCHER_MAX_CLIENTS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running;           /* a thread is calling the backend */
    /* merged calls */
    int *m_windows;
    const float **m_mels;
    td_wseq *m_seqs;
    int32_t *m_tokens;
    float *m_logits;       /* rows x n_vocab, grown on demand (backends without sample()) */
    size_t m_logits_rows;
    td_wbatcher_stats stats;
};

static client *client_of(td_wbackend *b)
{
    return (client *)b;
}

/* ---- steps ------------------------------------------------------------- */

static int all_ready(const td_wbatcher *bt)
{
    int any = 0;
    for (int i = 0; i < bt->n; i++) {
        const client *c = &bt->cl[i];
        if (c->active && c->req.state != REQ_WAITING)
            return 0;
        any |= c->req.state == REQ_WAITING;
    }
    return any;
}

static void finish(request *r, int rc, const td_error *err)
{
    r->rc = rc;
    if (rc != TD_OK && err)
        r->err = *err;
    r->ran = 1;
}

/* Every waiting encode as one backend call. */
static void run_encodes(td_wbatcher *bt, client **w, int n_w)
{
    int n_win = 0, n_req = 0;
    for (int i = 0; i < n_w; i++) {
        request *r = &w[i]->req;
        if (r->kind != REQ_ENCODE)
            continue;
        for (int k = 0; k < r->n_win; k++) {
            bt->m_windows[n_win] = r->windows[k] + w[i]->index * bt->per.max_windows;
            bt->m_mels[n_win] = r->mels[k];
            n_win++;
        }
        n_req++;
    }
    if (n_req == 0)
        return;
    td_error err = {0};
    int rc = bt->ops->encode(bt->ctx, n_win, bt->m_windows, bt->m_mels, &err);
    bt->stats.encodes++;
    bt->stats.client_encodes += n_req;
    for (int i = 0; i < n_w; i++)
        if (w[i]->req.kind == REQ_ENCODE)
            finish(&w[i]->req, rc, &err);
}

static int logits_room(td_wbatcher *bt, size_t rows, td_error *err)
{
    if (rows <= bt->m_logits_rows)
        return TD_OK;
    float *p = realloc(bt->m_logits, rows * (size_t)bt->n_vocab * sizeof *p);
    if (!p)
        return td_error_set(err, TD_ENOMEM, "out of memory for a merged batch's logits");
    bt->m_logits = p;
    bt->m_logits_rows = rows;
    return TD_OK;
}

/* The waiting decodes of one kind (host logits or not, all rows or not)
 * as one backend call. */
static void run_decode_group(td_wbatcher *bt, client **w, int n_w, int keep, int all_logits)
{
    int n_seq = 0, n_tok = 0, n_req = 0;
    size_t rows = 0;
    for (int i = 0; i < n_w; i++) {
        request *r = &w[i]->req;
        if (r->kind != REQ_DECODE || r->ran || (r->logits == NULL) != keep ||
            r->all_logits != all_logits)
            continue;
        int tok = 0;
        w[i]->row0 = n_seq;
        for (int s = 0; s < r->n_seq; s++) {
            td_wseq q = r->seqs[s];
            q.slot += w[i]->index * bt->per.max_seq;
            q.window += w[i]->index * bt->per.max_windows;
            bt->m_seqs[n_seq++] = q;
            tok += q.n_tokens;
        }
        memcpy(bt->m_tokens + n_tok, r->tokens, (size_t)tok * sizeof *r->tokens);
        n_tok += tok;
        rows += all_logits ? (size_t)tok : (size_t)r->n_seq;
        n_req++;
    }
    if (n_req == 0)
        return;
    td_error err = {0};
    int rc = keep ? TD_OK : logits_room(bt, rows, &err);
    if (rc == TD_OK)
        rc = bt->ops->decode(bt->ctx, n_seq, bt->m_seqs, bt->m_tokens, all_logits,
                             keep ? NULL : bt->m_logits, &err);
    bt->stats.steps++;
    bt->stats.client_steps += n_req;
    size_t row = 0;
    for (int i = 0; i < n_w; i++) {
        client *c = w[i];
        request *r = &c->req;
        if (r->kind != REQ_DECODE || r->ran || (r->logits == NULL) != keep ||
            r->all_logits != all_logits)
            continue;
        size_t my_rows = (size_t)r->n_seq;
        if (all_logits) {
            my_rows = 0;
            for (int s = 0; s < r->n_seq; s++)
                my_rows += (size_t)r->seqs[s].n_tokens;
        }
        if (rc == TD_OK && !keep)
            memcpy(r->logits, bt->m_logits + row * (size_t)bt->n_vocab,
                   my_rows * (size_t)bt->n_vocab * sizeof *r->logits);
        row += my_rows;
        c->n_rows = r->n_seq;
        r->kept = rc == TD_OK && keep;
        finish(r, rc, &err);
    }
}

/* Run every waiting request: encodes first (a decode may attend a window
 * encoded in the same step), then decodes, those keeping their rows on the
 * backend last, so that theirs are the rows sample() reads. Called with
 * the lock held and running set; unlocks around the backend calls. */
static void run_step(td_wbatcher *bt)
{
    client *w[TD_WBATCHER_MAX_CLIENTS];
    int n_w = 0;
    for (int i = 0; i < bt->n; i++)
        if (bt->cl[i].req.state == REQ_WAITING) {
            bt->cl[i].req.ran = 0;
            bt->cl[i].req.kept = 0;
            w[n_w++] = &bt->cl[i];
        }
    pthread_mutex_unlock(&bt->mu);
    run_encodes(bt, w, n_w);
    run_decode_group(bt, w, n_w, 0, 1);
    run_decode_group(bt, w, n_w, 0, 0);
    run_decode_group(bt, w, n_w, 1, 0);
    pthread_mutex_lock(&bt->mu);
    for (int i = 0; i < n_w; i++) {
        w[i]->pending_sample = w[i]->req.kind == REQ_DECODE && w[i]->req.kept;
        w[i]->req.state = REQ_DONE;
    }
}

/* Leave r waiting, and run the step when this client is the last to come. */
static int step(client *c, td_error *err)
{
    td_wbatcher *bt = c->bt;
    pthread_mutex_lock(&bt->mu);
    c->active = 1;
    c->pending_sample = 0;
    c->req.state = REQ_WAITING;
    c->req.rc = TD_OK;
    pthread_cond_broadcast(&bt->cv);
    while (c->req.state != REQ_DONE) {
        if (!bt->running && all_ready(bt)) {
            bt->running = 1;
            run_step(bt);
            bt->running = 0;
            pthread_cond_broadcast(&bt->cv);
        } else {
            pthread_cond_wait(&bt->cv, &bt->mu);
        }
    }
    c->req.state = REQ_NONE;
    int rc = c->req.rc;
    if (rc != TD_OK && err)
        *err = c->req.err;
    pthread_mutex_unlock(&bt->mu);
    return rc;
}

static int batcher_encode(td_wbackend *b, int n_win, const int *windows, const float *const *mels,
                          td_error *err)
{
    client *c = client_of(b);
    for (int i = 0; i < n_win; i++)
        if (windows[i] < 0 || windows[i] >= c->bt->per.max_windows)
            return td_error_set(err, TD_EINVAL, "encode: window slot %d out of 0..%d", windows[i],
                                c->bt->per.max_windows - 1);
    if (n_win <= 0 || n_win > c->bt->per.max_windows)
        return td_error_set(err, TD_EINVAL, "encode: %d windows", n_win);
    c->req.kind = REQ_ENCODE;
    c->req.n_win = n_win;
    c->req.windows = windows;
    c->req.mels = mels;
    return step(c, err);
}

static int batcher_decode(td_wbackend *b, int n_seq, const td_wseq *seqs, const int32_t *tokens,
                          int all_logits, float *logits, td_error *err)
{
    client *c = client_of(b);
    const td_wconfig *per = &c->bt->per;
    if (n_seq <= 0 || n_seq > per->max_seq)
        return td_error_set(err, TD_EINVAL, "decode: %d sequences (at most %d)", n_seq, per->max_seq);
    if (all_logits && !logits)
        return td_error_set(err, TD_EINVAL, "decode: all_logits without a logits buffer");
    int rows = 0;
    for (int s = 0; s < n_seq; s++) {
        if (seqs[s].slot < 0 || seqs[s].slot >= per->max_seq || seqs[s].window < 0 ||
            seqs[s].window >= per->max_windows || seqs[s].n_tokens < 1)
            return td_error_set(err, TD_EINVAL, "decode: sequence %d (slot %d, window %d, %d "
                                "tokens) out of range", s, seqs[s].slot, seqs[s].window,
                                seqs[s].n_tokens);
        rows += seqs[s].n_tokens;
    }
    if (rows > per->max_rows)
        return td_error_set(err, TD_EINVAL, "decode: %d rows (at most %d)", rows, per->max_rows);
    c->req.kind = REQ_DECODE;
    c->req.n_seq = n_seq;
    c->req.seqs = seqs;
    c->req.tokens = tokens;
    c->req.all_logits = all_logits;
    c->req.logits = logits;
    return step(c, err);
}

/* ---- calls that run alone ---------------------------------------------- */

/* Wait for the backend, and (unless this client's own rows are the ones
 * to read) for every other client to have read its rows of the last
 * decode. Returns with the lock released and running set. */
static void exclusive_begin(client *c, int reading_rows)
{
    td_wbatcher *bt = c->bt;
    pthread_mutex_lock(&bt->mu);
    c->active = 1;
    if (!reading_rows)
        c->pending_sample = 0;
    for (;;) {
        int blocked = bt->running;
        for (int i = 0; i < bt->n && !blocked && !reading_rows; i++)
            blocked = bt->cl[i].pending_sample;
        if (!blocked)
            break;
        pthread_cond_wait(&bt->cv, &bt->mu);
    }
    bt->running = 1;
    pthread_mutex_unlock(&bt->mu);
}

static void exclusive_end(client *c)
{
    td_wbatcher *bt = c->bt;
    pthread_mutex_lock(&bt->mu);
    bt->running = 0;
    pthread_cond_broadcast(&bt->cv);
    pthread_mutex_unlock(&bt->mu);
}

static int batcher_sample(td_wbackend *b, const td_wsampler *sp, int n, const td_wsample_in *in,
                          td_wsample_out *out, td_error *err)
{
    client *c = client_of(b);
    td_wbatcher *bt = c->bt;
    pthread_mutex_lock(&bt->mu);
    int pending = c->pending_sample;
    pthread_mutex_unlock(&bt->mu);
    if (!pending)
        return td_error_set(err, TD_EINVAL, "sample: no decode kept its rows for this client");
    if (n < 0 || n > bt->per.max_seq)
        return td_error_set(err, TD_EINVAL, "sample: %d rows", n);
    for (int i = 0; i < n; i++) {
        if (in[i].row < 0 || in[i].row >= c->n_rows)
            return td_error_set(err, TD_EINVAL, "sample: row %d of %d", in[i].row, c->n_rows);
        c->in[i] = in[i];
        c->in[i].row += c->row0;
    }
    exclusive_begin(c, 1);
    int rc = bt->ops->sample(bt->ctx, sp, n, c->in, out, err);
    pthread_mutex_lock(&bt->mu);
    c->pending_sample = 0;
    bt->running = 0;
    pthread_cond_broadcast(&bt->cv);
    pthread_mutex_unlock(&bt->mu);
    return rc;
}

static int batcher_kv_copy(td_wbackend *b, int n, const td_wkv_copy *pairs, td_error *err)
{
    client *c = client_of(b);
    td_wbatcher *bt = c->bt;
    int s0 = c->index * bt->per.max_seq;
    td_wkv_copy shifted[64];
    int rc = TD_OK;
    for (int done = 0; rc == TD_OK && done < n;) {
        int k = n - done < 64 ? n - done : 64;
        for (int i = 0; i < k; i++) {
            td_wkv_copy p = pairs[done + i];
            if (p.src < 0 || p.src >= bt->per.max_seq || p.dst < 0 || p.dst >= bt->per.max_seq)
                return td_error_set(err, TD_EINVAL, "kv_copy: slot out of 0..%d",
                                    bt->per.max_seq - 1);
            p.src += s0;
            p.dst += s0;
            shifted[i] = p;
        }
        exclusive_begin(c, 0);
        rc = bt->ops->kv_copy(bt->ctx, k, shifted, err);
        exclusive_end(c);
        done += k;
    }
    return rc;
}

static int batcher_encoder_output(td_wbackend *b, int window, float *out, td_error *err)
{
    client *c = client_of(b);
    td_wbatcher *bt = c->bt;
    if (window < 0 || window >= bt->per.max_windows)
        return td_error_set(err, TD_EINVAL, "encoder_output: window slot %d", window);
    exclusive_begin(c, 0);
    int rc = bt->ops->encoder_output(bt->ctx, window + c->index * bt->per.max_windows, out, err);
    exclusive_end(c);
    return rc;
}

static int batcher_align_weights(td_wbackend *b, int slot, int window, int n_tokens,
                                 const int32_t *tokens, int n_heads, const int *heads, float *out,
                                 td_error *err)
{
    client *c = client_of(b);
    td_wbatcher *bt = c->bt;
    if (slot < 0 || slot >= bt->per.max_seq || window < 0 || window >= bt->per.max_windows)
        return td_error_set(err, TD_EINVAL, "align_weights: slot %d or window %d out of range",
                            slot, window);
    exclusive_begin(c, 0);
    int rc = bt->ops->align_weights(bt->ctx, slot + c->index * bt->per.max_seq,
                                    window + c->index * bt->per.max_windows, n_tokens, tokens,
                                    n_heads, heads, out, err);
    exclusive_end(c);
    return rc;
}

static void batcher_identity(const td_wbackend *b, char *pci, size_t pci_len, char *uuid,
                             size_t uuid_len)
{
    const client *c = (const client *)b;
    c->bt->ops->identity(c->bt->ctx, pci, pci_len, uuid, uuid_len);
}

static void batcher_close(td_wbackend *b)
{
    (void)b; /* the batcher's owner closes the backend */
}

/* ---- life ---------------------------------------------------------------- */

int td_wbatcher_new(const td_wbackend_ops *ops, td_wbackend *ctx, const td_wconfig *per_client,
                    int n_clients, int n_vocab, td_wbatcher **out, td_error *err)
{
    *out = NULL;
    if (!ops || !ctx || !per_client || n_clients < 1 || n_clients > TD_WBATCHER_MAX_CLIENTS ||
        n_vocab < 1 || per_client->max_seq < 1 || per_client->max_windows < 1 ||
        per_client->max_rows < 1)
        return td_error_set(err, TD_EINVAL, "batcher: bad arguments");
    td_wbatcher *bt = calloc(1, sizeof *bt);
    if (!bt)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    bt->ops = ops;
    bt->ctx = ctx;
    bt->per = *per_client;
    bt->n = n_clients;
    bt->n_vocab = n_vocab;
    size_t win = (size_t)n_clients * (size_t)per_client->max_windows;
    size_t seqs = (size_t)n_clients * (size_t)per_client->max_seq;
    size_t rows = (size_t)n_clients * (size_t)per_client->max_rows;
    bt->m_windows = malloc(win * sizeof *bt->m_windows);
    bt->m_mels = malloc(win * sizeof *bt->m_mels);
    bt->m_seqs = malloc(seqs * sizeof *bt->m_seqs);
    bt->m_tokens = malloc(rows * sizeof *bt->m_tokens);
    int ok = bt->m_windows && bt->m_mels && bt->m_seqs && bt->m_tokens;
    for (int i = 0; i < n_clients; i++) {
        bt->cl[i].bt = bt;
        bt->cl[i].index = i;
        bt->cl[i].in = malloc((size_t)per_client->max_seq * sizeof *bt->cl[i].in);
        ok = ok && bt->cl[i].in;
    }
    if (!ok) {
        td_wbatcher_free(bt);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    if (pthread_mutex_init(&bt->mu, NULL) != 0) {
        td_wbatcher_free(bt);
        return td_error_set(err, TD_ENOMEM, "batcher: cannot create its lock");
    }
    if (pthread_cond_init(&bt->cv, NULL) != 0) {
        pthread_mutex_destroy(&bt->mu);
        td_wbatcher_free(bt);
        return td_error_set(err, TD_ENOMEM, "batcher: cannot create its condition variable");
    }
    bt->table = (td_wbackend_ops){
        .api_version = TD_WBACKEND_API_VERSION,
        .name = ops->name,
        .encode = batcher_encode,
        .decode = batcher_decode,
        .kv_copy = batcher_kv_copy,
        .sample = ops->sample ? batcher_sample : NULL,
        .encoder_output = batcher_encoder_output,
        .close = batcher_close,
        .align_weights = ops->align_weights ? batcher_align_weights : NULL,
        .identity = ops->identity ? batcher_identity : NULL,
    };
    *out = bt;
    return TD_OK;
}

void td_wbatcher_client(td_wbatcher *bt, int i, const td_wbackend_ops **ops, td_wbackend **ctx)
{
    *ops = &bt->table;
    *ctx = (td_wbackend *)&bt->cl[i];
}

void td_wbatcher_join(td_wbatcher *bt, int i)
{
    pthread_mutex_lock(&bt->mu);
    bt->cl[i].active = 1;
    pthread_mutex_unlock(&bt->mu);
}

void td_wbatcher_idle(td_wbatcher *bt, int i)
{
    pthread_mutex_lock(&bt->mu);
    bt->cl[i].active = 0;
    bt->cl[i].pending_sample = 0;
    pthread_cond_broadcast(&bt->cv);
    pthread_mutex_unlock(&bt->mu);
}

void td_wbatcher_stats_get(td_wbatcher *bt, td_wbatcher_stats *out)
{
    pthread_mutex_lock(&bt->mu);
    *out = bt->stats;
    pthread_mutex_unlock(&bt->mu);
}

void td_wbatcher_free(td_wbatcher *bt)
{
    if (!bt)
        return;
    if (bt->table.encode) { /* fully made: the lock and condition exist */
        pthread_cond_destroy(&bt->cv);
        pthread_mutex_destroy(&bt->mu);
    }
    for (int i = 0; i < bt->n; i++)
        free(bt->cl[i].in);
    free(bt->m_windows);
    free(bt->m_mels);
    free(bt->m_seqs);
    free(bt->m_tokens);
    free(bt->m_logits);
    free(bt);
}

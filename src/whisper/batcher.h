/*
 * batcher.h: one backend context shared by several decoders, each in its
 * own thread, whose calls are merged into one batch per step.
 *
 * Why: a worker decoding a one-minute scene has two or three windows to
 * batch, and the last windows of any scene trail off alone; batching reads
 * the network's weights once for every sequence in a step, so a worker
 * that decodes the next scene beside the current one keeps the batch full
 * (issue 10, "Scheduling"). Each scene keeps its own decoder, rules, time
 * line and outputs; only the backend calls meet here.
 *
 * How: the backend is opened with n_clients times the slots one decoder
 * needs, and each client sees a table (td_wbackend_ops) over its own
 * partition of window slots and KV slots, numbered from 0 as if it had
 * the backend alone. encode() and decode() calls are steps: a client's
 * step waits until every *active* client has one waiting, then the last
 * to arrive runs them all as one encode (every window) and one decode
 * (every sequence, slots and windows shifted to their partitions, rows in
 * client order) and hands each its results. A client is active from its
 * first call until td_wbatcher_idle(): a decoder's host work between two
 * steps is short, so the others wait little; a client busy elsewhere
 * (reading its next scene's audio, writing subtitles) must be idle, or it
 * would hold every other client's step.
 *
 * sample() reads the rows of the client's part of the last merged decode
 * (the rows are shifted); kv_copy(), align_weights() and encoder_output()
 * run alone, once no client is still to sample the last decode, so they
 * cannot disturb rows another client has yet to read.
 *
 * Errors: a merged call that fails fails every client in it, with the
 * backend's reason.
 *
 * Ownership: td_wbatcher_new() borrows the open backend (ops, ctx), which
 * must outlive the batcher and is closed by its owner, never by a client:
 * a client table's close() does nothing. Client tables and contexts are
 * owned by the batcher. Each client is used by one thread at a time.
 */
#ifndef TD_WHISPER_BATCHER_H
#define TD_WHISPER_BATCHER_H

#include "whisper/backend.h"

#define TD_WBATCHER_MAX_CLIENTS 8

typedef struct td_wbatcher td_wbatcher;

/* Share the backend among n_clients clients, 1 .. TD_WBATCHER_MAX_CLIENTS.
 * per_client gives one client's max_seq, max_windows and max_rows; the
 * caller opened the backend with n_clients times those (a merged call
 * beyond its sizes fails as the backend refuses it). n_vocab sizes the
 * logits of a backend without sample(). */
int td_wbatcher_new(const td_wbackend_ops *ops, td_wbackend *ctx, const td_wconfig *per_client,
                    int n_clients, int n_vocab, td_wbatcher **out, td_error *err);

/* Client i's table and context (valid until td_wbatcher_free). */
void td_wbatcher_client(td_wbatcher *bt, int i, const td_wbackend_ops **ops, td_wbackend **ctx);

/* Client i is about to make steps: the others' steps wait for it from now
 * on (its first call does the same; this makes it so before the call). */
void td_wbatcher_join(td_wbatcher *bt, int i);

/* Client i has no step to make for a while: the others stop waiting for
 * it. Its next call makes it active again. */
void td_wbatcher_idle(td_wbatcher *bt, int i);

/* What the merging did, for tests and the log. */
typedef struct td_wbatcher_stats {
    long steps;           /* merged backend decode() calls */
    long client_steps;    /* client decode() calls they carried */
    long encodes;         /* merged backend encode() calls */
    long client_encodes;  /* client encode() calls they carried */
} td_wbatcher_stats;
void td_wbatcher_stats_get(td_wbatcher *bt, td_wbatcher_stats *out);

/* Every client must be idle (no thread inside a call). */
void td_wbatcher_free(td_wbatcher *bt);

#endif

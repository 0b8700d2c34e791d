/*
 * fuzz_model.c: libFuzzer target for the ggml Whisper model loader
 * (td_wmodel_open_memory). Any input must give TD_OK or an error, never a
 * crash, an over-read, a leak or undefined behaviour; an accepted model
 * must hand out only pointers that lie inside the input.
 *
 * Built by `make fuzz` from this file, src/whisper/model.c and
 * src/util/error.c. The language table the loader names tokens with is
 * compiled in here (lang.c has no other dependency), since the Makefile's
 * list does not carry it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "util/error.h"
#include "whisper/model.h"

#include "whisper/lang.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* p[0..n) must lie in data[0..size) or in memory the model owns; reading
 * its first and last byte lets the sanitizer check that. */
static volatile uint8_t sink;

static void touch(const void *p, size_t n)
{
    if (!n)
        return;
    sink ^= ((const uint8_t *)p)[0];
    sink ^= ((const uint8_t *)p)[n - 1];
}

static void check_inside(const uint8_t *data, size_t size, const void *p, size_t n)
{
    const uint8_t *q = p;
    if (q < data || n > size || q - data > (ptrdiff_t)(size - n))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    td_wmodel *m = NULL;
    td_error err;
    if (td_wmodel_open_memory(data, size, "fuzz.bin", &m, &err) != TD_OK) {
        if (m) /* a failed open hands nothing out */
            abort();
        return 0;
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const td_wtensor *t = &m->tensors[i];
        check_inside(data, size, t->data, t->nbytes);
        touch(t->data, t->nbytes);
        if (td_wmodel_tensor(m, t->name) != t)
            abort();
    }
    check_inside(data, size, m->mel_filters, (size_t)m->n_mel_filters * 201 * sizeof(float));
    for (int32_t id = 0; id < m->hp.n_vocab; id += 97) {
        size_t n;
        const uint8_t *tok = td_wmodel_token(m, id, &n);
        if (!tok || n > TD_WMAX_TOKEN_BYTES)
            abort();
        touch(tok, n);
    }
    size_t n;
    touch(td_wmodel_token(m, m->sp.ts_begin, &n), n);
    td_wmodel_close(m);
    return 0;
}

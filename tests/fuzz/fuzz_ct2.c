/*
 * fuzz_ct2.c: libFuzzer target for the CTranslate2 model.bin parser
 * (td_ct2_parse, whisper/ct2.h), the outside data `tapedeck models import`
 * reads. Any input must give TD_OK or an error, never a crash, an
 * over-read, a leak or undefined behaviour; an accepted model's variables
 * must lie inside the input and its hyper-parameters within the loader's
 * bounds.
 *
 * Built by `make fuzz` (see FUZZ_CT2_SRCS in the Makefile); seeds come from
 * tests/fuzz/ct2_seeds.py.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "util/error.h"
#include "whisper/ct2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    td_ct2_model *m = NULL;
    td_error err = {0};
    if (td_ct2_parse(data, size, "fuzz", &m, &err) != TD_OK)
        return 0;
    for (size_t i = 0; i < m->n_vars; i++) {
        const td_ct2_var *v = &m->vars[i];
        const uint8_t *p = v->data;
        if (p < data || v->nbytes > size || (size_t)(p - data) > size - v->nbytes)
            abort();
        if (v->nbytes) {
            sink ^= p[0];
            sink ^= p[v->nbytes - 1];
        }
    }
    if (td_whparams_check(&m->hp, NULL) != TD_OK)
        abort();
    (void)td_ct2_size_name(m);
    td_ct2_close(m);
    return 0;
}

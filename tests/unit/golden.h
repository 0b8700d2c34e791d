/*
 * golden.h: reading the Whisper golden fixtures (tests/fixtures/whisper,
 * made by scripts/whisper-oracle.py; its README says what each file
 * holds) for the unit tests that compare against them
 * (test_whisper_golden, test_vulkan_backend, test_align_golden): where the
 * fixtures and the cached real weights are, a set's meta JSON and its
 * float32 arrays, dotted-path lookups in that JSON, and a set's model
 * file remade (regenerated from its recorded recipe, or imported from the
 * cached CTranslate2 tiny.en) and checked against the hash the reference
 * read.
 *
 * Test code only: it links with cmocka, and what must be there but is
 * not (a key, a file of the wrong size, a hash that differs) fails the
 * calling test through fail_msg(). Every returned pointer is the
 * caller's (free(), or json_decref() for json_t).
 */
#ifndef TD_TEST_GOLDEN_H
#define TD_TEST_GOLDEN_H

#include <jansson.h>
#include <stddef.h>

/* The fixture folder: $TAPEDECK_FIXTURES/whisper, ./tests/fixtures/whisper
 * (make runs the tests from the repo root), or the one beside the binary
 * (O/tests/../../tests/fixtures/whisper); NULL when none is found. */
char *golden_fixtures_dir(void);

/* The whole of a file; NULL when it cannot be read. *len is its size. */
void *golden_read_file(const char *path, size_t *len);

/* dir/name, a float32 file that must hold exactly count values. */
float *golden_read_f32(const char *dir, const char *name, size_t count);

/* An error measure against a reference: golden_acc() adds one value a
 * against ref (NaN makes max_abs infinite), golden_finish() gives the
 * relative L2 error and the largest absolute difference. */
typedef struct golden_stats {
    double rel_l2, max_abs;
} golden_stats;
void golden_acc(double *num, double *den, double *mx, double a, double ref);
golden_stats golden_finish(double num, double den, double mx);

/* dir/file parsed as JSON. absent_ok: NULL when the file does not exist
 * (the caller skips); otherwise, and for a file that does not parse, the
 * test fails. */
json_t *golden_load_json(const char *dir, const char *file, int absent_ok);

/* The value at a dotted path ("a.b.c") of an object; a missing key fails
 * the test, as does a value of another type for the typed forms. */
json_t *gj_get(json_t *o, const char *path);
long long gj_int(json_t *o, const char *path);
double gj_num(json_t *o, const char *path);
const char *gj_str(json_t *o, const char *path);

/* The cached CTranslate2 folder of model NAME (e.g. "tiny.en") as
 * scripts/fetch-whisper-weights.sh leaves it, complete (.complete written
 * last): $TAPEDECK_WEIGHTS_CACHE/ct2/NAME, else $XDG_CACHE_HOME or
 * ~/.cache, /tapedeck/weights/ct2/NAME; NULL when absent. */
char *golden_weights_dir(const char *name);

/* ../shared/whisper/NAME beside the repo (the Whisper reference data,
 * never committed), found from the fixture folder; NULL when absent. */
char *golden_shared_file(const char *fix_dir, const char *name);

/* The model file of the set whose meta (NAME.json) is given, written to
 * path: a random set regenerated from its mkmodel recipe, the real set
 * ("real" in the meta) imported as F16 from the cached tiny.en. Its
 * SHA-256 and size must be the meta's, or the test fails saying which
 * side changed. 1 written; 0 when the real set's weights are not cached
 * (the caller skips; nothing written). */
int golden_write_model(json_t *meta, const char *set_name, const char *path);

#endif

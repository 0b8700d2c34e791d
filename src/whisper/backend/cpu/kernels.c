/*
 * kernels.c: the portable (scalar) kernels, the choice of SIMD variant,
 * the thread pool, and the drivers that split GEMMs and attention over
 * threads (see kernels.h). The AVX2 and AVX-512 kernels live in
 * k_avx2.c and k_avx512.c.
 */
#include "whisper/backend/cpu/kernels.h"

#include <errno.h>
#include <limits.h>
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include <cblas.h>

#include "whisper/backend/cpu/k_simd.h"

#if TD_WK_X86
#include <cpuid.h>
#endif

/* ------------------------------------------------------------------ */
/* Half precision                                                       */

float td_wk_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalize the mantissa */
            uint32_t e = 0;
            while (!(man & 0x400u)) {
                man <<= 1;
                e++;
            }
            man &= 0x3ffu;
            bits = sign | ((113u - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t td_wk_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* Inf, or NaN kept quiet with its top payload */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half, or zero */
        if (ax < 0x33000000u) /* below 2^-25, or exactly it (ties to even 0) */
            return sign;
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14 .. 24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax - 0x38000000u; /* rebias the exponent by 112 */
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | r);
}

/* ------------------------------------------------------------------ */
/* Scalar variant: plain C, the reference the SIMD ones are tested      */
/* against, and the fallback on CPUs (or architectures) without them.   */

static void f16_to_f32_scalar(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = td_wk_w_at(src, TD_WT_F16, i);
}

static void f32_to_f16_scalar(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = td_wk_f32_to_f16(src[i]);
}

static void mk_scalar(int kc, const float *ap, const float *bp, float *c, size_t ldc, int mr, int nr,
                      int load, const float *bias)
{
    float acc[TD_WK_MR][TD_WK_NR];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < kc; k++) {
        const float *b = bp + (size_t)k * TD_WK_NR;
        for (int i = 0; i < mr; i++) {
            float av = ap[(size_t)k * TD_WK_MR + i];
            for (int j = 0; j < TD_WK_NR; j++)
                acc[i][j] += av * b[j];
        }
    }
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) {
            float v = acc[i][j];
            if (bias)
                v += bias[j];
            ci[j] = load ? ci[j] + v : v;
        }
    }
}

static void pack_b_scalar(const void *w, enum td_wtype wt, size_t ldw, int nn, int kk, float *dst)
{
    int np = (nn + TD_WK_NR - 1) / TD_WK_NR;
    for (int p = 0; p < np; p++) {
        float *d = dst + (size_t)p * kk * TD_WK_NR;
        for (int j = 0; j < TD_WK_NR; j++) {
            int n = p * TD_WK_NR + j;
            if (n < nn) {
                for (int k = 0; k < kk; k++)
                    d[(size_t)k * TD_WK_NR + j] = td_wk_w_at(w, wt, (size_t)n * ldw + (size_t)k);
            } else {
                for (int k = 0; k < kk; k++)
                    d[(size_t)k * TD_WK_NR + j] = 0.0f;
            }
        }
    }
}

static void gemv_scalar(int m, int n, int k, const float *a, size_t lda, const void *w,
                        enum td_wtype wt, size_t ldw, const float *bias, float *c, size_t ldc,
                        int load)
{
    for (int j = 0; j < n; j++) {
        float acc[TD_WK_GEMV_ROWS] = {0};
        for (int kk = 0; kk < k; kk++) {
            float wv = td_wk_w_at(w, wt, (size_t)j * ldw + (size_t)kk);
            for (int i = 0; i < m; i++)
                acc[i] += a[(size_t)i * lda + (size_t)kk] * wv;
        }
        for (int i = 0; i < m; i++) {
            float v = acc[i] + (bias ? bias[j] : 0.0f);
            float *ci = c + (size_t)i * ldc + j;
            *ci = load ? *ci + v : v;
        }
    }
}

static void layernorm_scalar(int n, const float *x, const float *w, const float *b, float eps,
                             float *y)
{
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += x[i];
    float mean = sum / (float)n;
    float var = 0.0f;
    for (int i = 0; i < n; i++) {
        float d = x[i] - mean;
        var += d * d;
    }
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
    for (int i = 0; i < n; i++)
        y[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

/* GELU as x * Phi(x) = x * erfc(-x / sqrt 2) / 2: no cancellation for
 * negative x, where 1 + erf would lose the small result. */
static void gelu_scalar(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * 0.5f * erfcf(-x[i] * (float)M_SQRT1_2);
}

static void softmax_scalar(float *x, int n, int n_zero)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
    for (int i = n; i < n_zero; i++)
        x[i] = 0.0f;
}

static void colexp_scalar(float *st, int rows, float *sum)
{
    for (int j = 0; j < TD_WK_NR; j++) {
        float mx = -INFINITY;
        for (int r = 0; r < rows; r++)
            mx = st[(size_t)r * TD_WK_NR + j] > mx ? st[(size_t)r * TD_WK_NR + j] : mx;
        float s = 0.0f;
        for (int r = 0; r < rows; r++) {
            float e = expf(st[(size_t)r * TD_WK_NR + j] - mx);
            st[(size_t)r * TD_WK_NR + j] = e;
            s += e;
        }
        sum[j] = s;
    }
}

static float dot_scalar(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static const td_wk_ops ops_scalar = {
    .name = "scalar",
    .isa = TD_WK_SCALAR,
    .f16_to_f32 = f16_to_f32_scalar,
    .f32_to_f16 = f32_to_f16_scalar,
    .mk = mk_scalar,
    .pack_b = pack_b_scalar,
    .gemv = gemv_scalar,
    .layernorm = layernorm_scalar,
    .gelu = gelu_scalar,
    .softmax = softmax_scalar,
    .colexp = colexp_scalar,
    .dot = dot_scalar,
};

/* ------------------------------------------------------------------ */
/* Choosing a variant                                                   */

#if TD_WK_X86
/* F16C from cpuid (leaf 1, ECX bit 29): clang's __builtin_cpu_supports
 * does not know the name. The OS-state check (YMM) is covered by avx2. */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c >> 29) & 1u;
}
#endif

static int cpu_has(enum td_wk_isa isa)
{
    switch (isa) {
    case TD_WK_SCALAR:
        return 1;
#if TD_WK_X86
    case TD_WK_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case TD_WK_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma") && has_f16c();
#endif
    default:
        return 0;
    }
}

const td_wk_ops *td_wk_ops_get(enum td_wk_isa isa)
{
    if ((int)isa < 0 || isa >= TD_WK_N_ISA || !cpu_has(isa))
        return NULL;
    switch (isa) {
    case TD_WK_SCALAR:
        return &ops_scalar;
#if TD_WK_X86
    case TD_WK_AVX2:
        return &td_wk_ops_avx2;
    case TD_WK_AVX512:
        return &td_wk_ops_avx512;
#endif
    default:
        return NULL;
    }
}

static const td_wk_ops *best_ops;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

static void pick_best(void)
{
    int cap = TD_WK_N_ISA - 1;
    const char *env = getenv("TD_WHISPER_ISA");
    if (env && strcmp(env, "scalar") == 0)
        cap = TD_WK_SCALAR;
    else if (env && strcmp(env, "avx2") == 0)
        cap = TD_WK_AVX2;
    best_ops = &ops_scalar;
    for (int i = cap; i >= 0; i--) {
        const td_wk_ops *o = td_wk_ops_get((enum td_wk_isa)i);
        if (o) {
            best_ops = o;
            break;
        }
    }
}

const td_wk_ops *td_wk_ops_best(void)
{
    pthread_once(&best_once, pick_best);
    return best_ops;
}

/* ------------------------------------------------------------------ */
/* GEMM implementation switch                                           */

static _Atomic int gemm_impl = -1;

static void gemm_impl_init(void)
{
    int want = TD_WK_GEMM_OWN;
    const char *env = getenv("TD_WHISPER_GEMM");
    if (env && strcmp(env, "blas") == 0)
        want = TD_WK_GEMM_BLAS;
    int expect = -1;
    atomic_compare_exchange_strong(&gemm_impl, &expect, want);
}

void td_wk_set_gemm_impl(enum td_wk_gemm_impl impl)
{
    atomic_store(&gemm_impl, (int)impl);
}

enum td_wk_gemm_impl td_wk_get_gemm_impl(void)
{
    if (atomic_load(&gemm_impl) < 0)
        gemm_impl_init();
    return (enum td_wk_gemm_impl)atomic_load(&gemm_impl);
}

static _Atomic int cross_f16 = -1;

int td_wk_get_cross_f16(void)
{
    int v = atomic_load(&cross_f16);
    if (v < 0) {
        const char *env = getenv("TD_WHISPER_CROSS");
        int want = env && strcmp(env, "f16") == 0;
        atomic_compare_exchange_strong(&cross_f16, &v, want);
        v = atomic_load(&cross_f16);
    }
    return v;
}

void td_wk_set_cross_f16(int on)
{
    atomic_store(&cross_f16, on ? 1 : 0);
}

void td_wk_blas_threads(int n)
{
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(n > 0 ? n : 1);
#else
    (void)n;
#endif
}

/* ------------------------------------------------------------------ */
/* Thread pool                                                          */
/*
 * Life of a job: run() publishes fn/arg, sets pending = n - 1 and bumps
 * gen; each worker, seeing a new gen, runs its share and decrements
 * pending; run() does thread 0's share and waits for pending == 0.
 * Waiting spins for up to SPIN_NS (a decoder step hands out dozens of
 * jobs a few microseconds apart) and then sleeps on a futex; the side
 * that changes a word wakes the other only when it says it sleeps.
 * SPIN_NS was 200 us: on a loaded machine every wait for a thread that
 * the scheduler had taken off its core, and every serial stretch of the
 * caller's (sampling, beam bookkeeping, alignment), spun that long, a
 * fifth to a third of a batched run's CPU time (perf; 2 threads on the
 * shared 2-core VM). At 30 us a beam-5 batched run of the 10-minute
 * scene took 24.5 CPU s instead of 31.0, and less wall time too
 * (bench/RESULTS.md, issue 10). The clock is read every SPIN_CHECK
 * pauses.
 */

#define SPIN_NS 30000L
#define SPIN_CHECK 63u

struct worker_arg {
    td_wk_pool *pool;
    int ith;
};

struct td_wk_pool {
    int n;
    int n_started;
    pthread_t *threads;
    struct worker_arg *args;
    td_wk_task fn;
    void *arg;
    _Atomic uint32_t gen;
    _Atomic uint32_t pending;
    _Atomic int sleepers;
    _Atomic int main_waiting;
    _Atomic int stop;
};

static inline void cpu_relax(void)
{
#if TD_WK_X86
    __builtin_ia32_pause();
#endif
}

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
    (void)addr;
    (void)val;
    sched_yield();
#endif
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
#else
    (void)addr;
    (void)n;
#endif
}

/* Wait until *addr differs from val (spin, then sleep); returns it. */
static uint32_t wait_change(_Atomic uint32_t *addr, uint32_t val, _Atomic int *sleeping)
{
    long t0 = now_ns();
    for (unsigned spins = 0;; spins++) {
        uint32_t v = atomic_load_explicit(addr, memory_order_acquire);
        if (v != val)
            return v;
        if ((spins & SPIN_CHECK) == SPIN_CHECK && now_ns() - t0 > SPIN_NS) {
            atomic_fetch_add(sleeping, 1);
            if (atomic_load(addr) == val)
                futex_wait(addr, val);
            atomic_fetch_sub(sleeping, 1);
            t0 = now_ns();
        }
        cpu_relax();
    }
}

static void *worker_main(void *p_)
{
    struct worker_arg *wa = p_;
    td_wk_pool *p = wa->pool;
    uint32_t seen = 0;
    for (;;) {
        seen = wait_change(&p->gen, seen, &p->sleepers);
        if (atomic_load(&p->stop))
            return NULL;
        p->fn(p->arg, wa->ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->main_waiting))
            futex_wake(&p->pending, 1);
    }
}

int td_wk_pool_create(int n, td_wk_pool **out, td_error *err)
{
    *out = NULL;
    if (n < 1 || n > 1024)
        return td_error_set(err, TD_EINVAL, "thread pool: %d threads", n);
    td_wk_pool *p = calloc(1, sizeof *p);
    if (!p)
        return td_error_set(err, TD_ENOMEM, "thread pool: out of memory");
    p->n = n;
    if (n > 1) {
        p->threads = calloc((size_t)n, sizeof *p->threads);
        p->args = calloc((size_t)n, sizeof *p->args);
        if (!p->threads || !p->args) {
            td_wk_pool_free(p);
            return td_error_set(err, TD_ENOMEM, "thread pool: out of memory");
        }
        /* Workers inherit a full signal mask: signals go to the caller's
         * threads, which handle them. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int rc = 0;
        for (int i = 1; i < n; i++) {
            p->args[i].pool = p;
            p->args[i].ith = i;
            rc = pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]);
            if (rc != 0)
                break;
            p->n_started++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) {
            td_wk_pool_free(p);
            return td_error_errno(err, TD_ENOMEM, rc, "thread pool: starting %d threads", n - 1);
        }
    }
    *out = p;
    return TD_OK;
}

void td_wk_pool_run(td_wk_pool *p, td_wk_task fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, (uint32_t)(p->n - 1));
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0)
        futex_wake(&p->gen, INT_MAX);
    fn(arg, 0, p->n);
    long t0 = 0;
    for (unsigned spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) != 0; spins++) {
        if (t0 == 0)
            t0 = now_ns();
        if ((spins & SPIN_CHECK) == SPIN_CHECK && now_ns() - t0 > SPIN_NS) {
            atomic_store(&p->main_waiting, 1);
            uint32_t v;
            while ((v = atomic_load(&p->pending)) != 0)
                futex_wait(&p->pending, v);
            atomic_store(&p->main_waiting, 0);
            break;
        }
        cpu_relax();
    }
}

int td_wk_pool_size(const td_wk_pool *p)
{
    return p->n;
}

void td_wk_pool_free(td_wk_pool *p)
{
    if (!p)
        return;
    if (p->n_started > 0) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->gen, 1);
        futex_wake(&p->gen, INT_MAX);
        for (int i = 1; i <= p->n_started; i++)
            pthread_join(p->threads[i], NULL);
    }
    free(p->threads);
    free(p->args);
    free(p);
}

/* ------------------------------------------------------------------ */
/* Work splitting                                                       */

static inline size_t round_up(size_t x, size_t to)
{
    return (x + to - 1) / to * to;
}

/* Thread ith's share [*lo, *hi) of [0, total), in units of align. */
static void split_range(int total, int align, int ith, int nth, int *lo, int *hi)
{
    int units = (total + align - 1) / align;
    int per = units / nth, extra = units % nth;
    int u0 = ith * per + (ith < extra ? ith : extra);
    int u1 = u0 + per + (ith < extra ? 1 : 0);
    *lo = u0 * align < total ? u0 * align : total;
    *hi = u1 * align < total ? u1 * align : total;
}

static inline float *thread_scratch(const td_wk_ctx *ctx, int ith)
{
    return ctx->scratch + (size_t)ith * ctx->scratch_floats;
}

/* ------------------------------------------------------------------ */
/* Packed GEMM                                                          */

#define SCRATCH_ALIGN 16 /* floats: 64 bytes */

static size_t gemm_scratch_floats(void)
{
    return (size_t)TD_WK_NC * TD_WK_KC + (size_t)TD_WK_MC * TD_WK_KC;
}

size_t td_wk_scratch_floats(int n_ctx, int n_keys, int d)
{
    size_t g = gemm_scratch_floats();
    size_t ea = round_up((size_t)d * TD_WK_NR, SCRATCH_ALIGN) +
                round_up(round_up((size_t)n_ctx, TD_WK_MR) * TD_WK_NR, SCRATCH_ALIGN) +
                round_up(round_up((size_t)d, TD_WK_MR) * TD_WK_NR, SCRATCH_ALIGN) + TD_WK_NR;
    size_t kp = round_up((size_t)n_keys, TD_WK_NR);
    size_t da = round_up((size_t)TD_WK_ATT_QB * d, SCRATCH_ALIGN) + 2 * (size_t)TD_WK_ATT_QB * kp;
    size_t mx = g > ea ? g : ea;
    mx = mx > da ? mx : da;
    return round_up(mx, SCRATCH_ALIGN);
}

/* Which of our two GEMMs runs a product. The direct one (ops->gemv, in
 * passes of TD_WK_GEMV_ROWS rows that each read the weights again) wins
 * whenever the thread's share of the weights stays in cache: it skips
 * packing, converts F16 in registers and feeds 24 FMAs per 10 loads.
 * Best of 30, 2 threads, F16 weights (M x N x K, GFLOP/s direct/packed):
 *   12x768x768 162/58, 100x384x384 211/167, 228x768x3072 222/198,
 *   1500x384x384 205/201, 1500x3072x768 219/201, 1500x768x3072 223/198;
 * end to end, small's encoder 1950 ms against 2050 (tiny: equal). Only the
 * AVX-512 gemv is blocked for this (AVX2's, one weight row at a time, took
 * 410 ms for tiny's encoder against 240 packed). Weights beyond the cache
 * (the 80 MB token embedding, for all_logits) pack: 228 rows 468 ms
 * against 548. td_wk_set_direct_rows() (or TD_WHISPER_GEMV_ROWS) caps the
 * rows that may go direct. */
#define GEMV_CHUNKED_BYTES ((size_t)8 << 20)

static _Atomic int direct_rows = INT_MIN; /* INT_MIN: not read from the environment yet */

int td_wk_get_direct_rows(void)
{
    int v = atomic_load(&direct_rows);
    if (v == INT_MIN) {
        const char *env = getenv("TD_WHISPER_GEMV_ROWS");
        int want = env ? atoi(env) : INT_MAX;
        atomic_compare_exchange_strong(&direct_rows, &v, want);
        v = atomic_load(&direct_rows);
    }
    return v;
}

void td_wk_set_direct_rows(int max_rows)
{
    atomic_store(&direct_rows, max_rows);
}

/* Rows up to which the direct GEMM runs on a CPU whose F16 conversion
 * competes with its FMAs. On Intel cores (Ice Lake measured) a 512-bit
 * vcvtph2ps issues on ports 0 and 5, the two 512-bit FMA ports, so the
 * direct GEMM's in-loop conversion (4 per 24 FMAs) costs a third of its
 * FMA slots; packing converts each weight once per band of rows. 2
 * threads, F16, 1500 rows, GFLOP/s direct/packed: 384x384 155/189,
 * 1536x384 162/189, 384x1536 170/174; 1 thread 79/96, 75/86, 77/78. On
 * AMD (Zen 4) the conversion runs beside the FMAs, and direct wins (see
 * above). */
#define DIRECT_ROWS_INTEL 48

static int cpu_is_amd(void)
{
#if TD_WK_X86
    static _Atomic int amd = -1;
    int v = atomic_load(&amd);
    if (v < 0) {
        unsigned a = 0, b = 0, c = 0, d = 0; /* unset when the leaf is missing */
        v = __get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u /* "Auth" */ &&
            d == 0x69746e65u /* "enti" */ && c == 0x444d4163u /* "cAMD" */;
        atomic_store(&amd, v);
    }
    return v;
#else
    return 0;
#endif
}

static int use_direct(const td_wk_ops *ops, int m, size_t n, int k, enum td_wtype wt)
{
    if (m <= TD_WK_GEMV_ROWS)
        return 1;
    if (!ops->gemv_many_rows) /* scalar converts halves in software; AVX2 is load-bound */
        return 0;
    if (!cpu_is_amd() && m > DIRECT_ROWS_INTEL && wt == TD_WT_F16)
        return 0;
    size_t wbytes = n * (size_t)k * (wt == TD_WT_F16 ? 2 : 4);
    return m <= td_wk_get_direct_rows() && wbytes <= GEMV_CHUNKED_BYTES;
}

/* A-panels of rows [0, mc) x cols [0, kc) of a (lda): [mc/MR][kc][MR]. */
static void pack_a(const float *a, size_t lda, int mc, int kc, float *dst)
{
    for (int ip = 0; ip < mc; ip += TD_WK_MR) {
        int mr = mc - ip < TD_WK_MR ? mc - ip : TD_WK_MR;
        float *d = dst + (size_t)ip * kc;
        for (int i = 0; i < TD_WK_MR; i++) {
            if (i < mr) {
                const float *row = a + (size_t)(ip + i) * lda;
                for (int k = 0; k < kc; k++)
                    d[(size_t)k * TD_WK_MR + i] = row[k];
            } else {
                for (int k = 0; k < kc; k++)
                    d[(size_t)k * TD_WK_MR + i] = 0.0f;
            }
        }
    }
}

static inline const void *w_offset(const void *w, enum td_wtype wt, size_t elems)
{
    return wt == TD_WT_F16 ? (const void *)((const uint16_t *)w + elems)
                           : (const void *)((const float *)w + elems);
}

/* One thread's block: C[m][n] (+)= A[m][k] . W[n][k]^T + bias. */
static void gemm_block(const td_wk_ops *ops, float *scratch, int m, int n, int k, const float *a,
                       size_t lda, const void *w, enum td_wtype wt, size_t ldw, const float *bias,
                       float *c, size_t ldc, int acc)
{
    if (m <= 0 || n <= 0)
        return;
    if (use_direct(ops, m, (size_t)n, k, wt)) {
        for (int i = 0; i < m; i += TD_WK_GEMV_ROWS) {
            int mm = m - i < TD_WK_GEMV_ROWS ? m - i : TD_WK_GEMV_ROWS;
            ops->gemv(mm, n, k, a + (size_t)i * lda, lda, w, wt, ldw, bias, c + (size_t)i * ldc,
                      ldc, acc);
        }
        return;
    }
    float *bp = scratch;
    float *ap = scratch + (size_t)TD_WK_NC * TD_WK_KC;
    for (int jc = 0; jc < n; jc += TD_WK_NC) {
        int nc = n - jc < TD_WK_NC ? n - jc : TD_WK_NC;
        for (int pc = 0; pc < k; pc += TD_WK_KC) {
            int kc = k - pc < TD_WK_KC ? k - pc : TD_WK_KC;
            ops->pack_b(w_offset(w, wt, (size_t)jc * ldw + (size_t)pc), wt, ldw, nc, kc, bp);
            int load = acc || pc > 0;
            const float *bb = (pc == 0 && bias) ? bias + jc : NULL;
            for (int ic = 0; ic < m; ic += TD_WK_MC) {
                int mc = m - ic < TD_WK_MC ? m - ic : TD_WK_MC;
                pack_a(a + (size_t)ic * lda + (size_t)pc, lda, mc, kc, ap);
                for (int jr = 0; jr < nc; jr += TD_WK_NR) {
                    int nr = nc - jr < TD_WK_NR ? nc - jr : TD_WK_NR;
                    for (int ir = 0; ir < mc; ir += TD_WK_MR) {
                        int mr = mc - ir < TD_WK_MR ? mc - ir : TD_WK_MR;
                        ops->mk(kc, ap + (size_t)ir * kc, bp + (size_t)jr * kc,
                                c + (size_t)(ic + ir) * ldc + (size_t)(jc + jr), ldc, mr, nr, load,
                                bb ? bb + jr : NULL);
                    }
                }
            }
        }
    }
}

typedef struct gemm_multi {
    td_wk_ctx *ctx;
    int m, k;
    const float *a;
    size_t lda;
    enum td_wtype wt;
    int n_jobs;
    const td_wk_gemm_job *jobs;
    int acc;
    int split_m;
    int n_total;
    int chunk;          /* > 0: columns handed out in chunks from next */
    _Atomic int next;
} gemm_multi;

/* Columns [lo, hi) of all jobs laid end to end. */
static void gemm_multi_cols(gemm_multi *g, float *scr, int lo, int hi)
{
    const td_wk_ops *ops = g->ctx->ops;
    int base = 0;
    for (int j = 0; j < g->n_jobs && base < hi; j++) {
        const td_wk_gemm_job *jb = &g->jobs[j];
        int a0 = lo > base ? lo - base : 0;
        int a1 = hi - base < jb->n ? hi - base : jb->n;
        if (a1 > a0)
            gemm_block(ops, scr, g->m, a1 - a0, g->k, g->a, g->lda,
                       w_offset(jb->w, g->wt, (size_t)a0 * jb->ldw), g->wt, jb->ldw,
                       jb->bias ? jb->bias + a0 : NULL, jb->c + a0, jb->ldc, g->acc);
        base += jb->n;
    }
}

static void gemm_multi_task(void *arg, int ith, int nth)
{
    gemm_multi *g = arg;
    float *scr = thread_scratch(g->ctx, ith);
    const td_wk_ops *ops = g->ctx->ops;
    if (g->split_m) {
        int m0, m1;
        split_range(g->m, TD_WK_MR, ith, nth, &m0, &m1);
        for (int j = 0; j < g->n_jobs; j++) {
            const td_wk_gemm_job *jb = &g->jobs[j];
            gemm_block(ops, scr, m1 - m0, jb->n, g->k, g->a + (size_t)m0 * g->lda, g->lda, jb->w,
                       g->wt, jb->ldw, jb->bias, jb->c + (size_t)m0 * jb->ldc, jb->ldc, g->acc);
        }
        return;
    }
    if (g->chunk > 0) {
        for (;;) {
            int lo = atomic_fetch_add(&g->next, 1) * g->chunk;
            if (lo >= g->n_total)
                return;
            gemm_multi_cols(g, scr, lo, lo + g->chunk < g->n_total ? lo + g->chunk : g->n_total);
        }
    }
    /* Columns of all jobs laid end to end, split evenly. */
    int align = g->m <= TD_WK_GEMV_ROWS ? 16 : TD_WK_NR;
    int lo, hi;
    split_range(g->n_total, align, ith, nth, &lo, &hi);
    gemm_multi_cols(g, scr, lo, hi);
}

/* BLAS path: F16 weights (and F32 ones that the file left unaligned) go
 * through ctx->wconv in slabs of rows. */
typedef struct conv_slab {
    const td_wk_ops *ops;
    const void *w;
    enum td_wtype wt;
    size_t ldw;
    int rows, k;
    float *dst;
} conv_slab;

static void conv_slab_task(void *arg, int ith, int nth)
{
    conv_slab *s = arg;
    int r0, r1;
    split_range(s->rows, 1, ith, nth, &r0, &r1);
    for (int r = r0; r < r1; r++) {
        float *d = s->dst + (size_t)r * s->k;
        if (s->wt == TD_WT_F16)
            s->ops->f16_to_f32((const uint16_t *)s->w + (size_t)r * s->ldw, d, (size_t)s->k);
        else
            memcpy(d, (const unsigned char *)s->w + (size_t)r * s->ldw * sizeof(float),
                   (size_t)s->k * sizeof(float));
    }
}

static void gemm_blas(td_wk_ctx *ctx, int m, int k, const float *a, size_t lda, enum td_wtype wt,
                      const td_wk_gemm_job *jb, int acc)
{
    float beta = acc ? 1.0f : 0.0f;
    if (jb->bias) {
        for (int i = 0; i < m; i++) {
            float *ci = jb->c + (size_t)i * jb->ldc;
            for (int j = 0; j < jb->n; j++)
                ci[j] = (acc ? ci[j] : 0.0f) + jb->bias[j];
        }
        beta = 1.0f;
    }
    if (wt == TD_WT_F32 && ((uintptr_t)jb->w & (sizeof(float) - 1)) == 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, jb->n, k, 1.0f, a, (int)lda,
                    jb->w, (int)jb->ldw, beta, jb->c, (int)jb->ldc);
        return;
    }
    int slab = (int)(ctx->wconv_floats / (size_t)k);
    for (int n0 = 0; n0 < jb->n; n0 += slab) {
        int rows = jb->n - n0 < slab ? jb->n - n0 : slab;
        conv_slab cs = {ctx->ops, w_offset(jb->w, wt, (size_t)n0 * jb->ldw), wt, jb->ldw, rows, k,
                        ctx->wconv};
        td_wk_pool_run(ctx->pool, conv_slab_task, &cs);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, rows, k, 1.0f, a, (int)lda,
                    ctx->wconv, k, beta, jb->c + n0, (int)jb->ldc);
    }
}

void td_wk_gemm_multi(td_wk_ctx *ctx, int m, int k, const float *a, size_t lda, enum td_wtype wt,
                      int n_jobs, const td_wk_gemm_job *jobs, int accumulate)
{
    if (m <= 0 || n_jobs <= 0)
        return;
    if (ctx->impl == TD_WK_GEMM_BLAS && m > TD_WK_GEMV_ROWS && ctx->wconv) {
        for (int j = 0; j < n_jobs; j++)
            gemm_blas(ctx, m, k, a, lda, wt, &jobs[j], accumulate);
        return;
    }
    int nth = td_wk_pool_size(ctx->pool);
    gemm_multi g = {ctx, m, k, a, lda, wt, n_jobs, jobs, accumulate, 0, 0, 0, 0};
    for (int j = 0; j < n_jobs; j++)
        g.n_total += jobs[j].n;
    /* One or two rows (a greedy decoder step): the product streams the
     * weights from memory, and two threads' streams do not keep the same
     * pace (shared bandwidth, a busy VM), so an even split left one thread
     * waiting at the end of every product: in a tiny decoder step both
     * threads spun about a fifth of the time. Chunks of columns from a
     * counter (4 per thread, 64 to 2048 columns each: smaller ones cost
     * more in calls and shorter streams than they save) end them closer
     * together. Beam steps (3-6 rows, gemv_il_t, whose prefetch runs
     * ahead in one range) measured slower with chunks (small: 30-31 ->
     * 32-34 ms a step) and keep the even split. */
    if (m <= 2 && nth > 1) {
        int c = (g.n_total + nth * 4 - 1) / (nth * 4);
        c = (c + 15) / 16 * 16;
        g.chunk = c < 64 ? 64 : c > 2048 ? 2048 : c;
        atomic_store(&g.next, 0);
    }
    /* Packed products with many rows: each thread takes a band of rows and
     * all columns (packing B per thread costs 1/rows of the work). The
     * rest split columns: each thread streams its share of the weights. */
    int direct = 1;
    for (int j = 0; j < n_jobs; j++)
        direct = direct && use_direct(ctx->ops, m, (size_t)(jobs[j].n + nth - 1) / (size_t)nth, k, wt);
    g.split_m = !direct && m / nth >= 128;
    td_wk_pool_run(ctx->pool, gemm_multi_task, &g);
}

void td_wk_gemm(td_wk_ctx *ctx, int m, int n, int k, const float *a, size_t lda, const void *w,
                enum td_wtype wt, size_t ldw, const float *bias, float *c, size_t ldc,
                int accumulate)
{
    td_wk_gemm_job jb = {n, w, ldw, bias, c, ldc};
    td_wk_gemm_multi(ctx, m, k, a, lda, wt, 1, &jb, accumulate);
}

/* ------------------------------------------------------------------ */
/* Encoder attention                                                    */
/*
 * Per head, computed transposed so that no score matrix is ever
 * transposed: for a block of NR queries,
 *   S^T [n][NR]  = K_h (A-panels over keys)  . (Q_blk^T / sqrt d) (one B-panel)
 *   E = exp(S^T - column max), column sums  (vertical: plain vector ops)
 *   O^T [d][NR]  = V_h^T (A-panels over d)   . E (a B-panel, K = n)
 *   out rows     = O^T transposed / sums
 * K_h and V_h^T are packed once per head into ka / vta. One task is a
 * (head, query block) pair, handed out from a counter.
 */

size_t td_wk_enc_attn_floats(int n, int n_state, int n_head)
{
    int d = n_state / n_head;
    size_t kf = round_up((size_t)n, TD_WK_MR) * (size_t)d;
    size_t vf = round_up((size_t)d, TD_WK_MR) * (size_t)n;
    return (size_t)n_head * round_up(kf > vf ? kf : vf, SCRATCH_ALIGN);
}

typedef struct enc_attn {
    td_wk_ctx *ctx;
    int n, ns, nh, d;
    size_t head_floats;
    const float *q, *k, *v;
    float *ka, *vta, *out;
    _Atomic int next;
    int n_tasks;
} enc_attn;

static void enc_attn_pack_task(void *arg, int ith, int nth)
{
    enc_attn *e = arg;
    (void)nth;
    for (;;) {
        int h = atomic_fetch_add(&e->next, 1);
        if (h >= e->nh)
            break;
        (void)ith;
        float *ka = e->ka + (size_t)h * e->head_floats;
        float *vt = e->vta + (size_t)h * e->head_floats;
        /* K: panel of MR keys, [d][MR] */
        for (int ip = 0; ip < e->n; ip += TD_WK_MR) {
            float *dst = ka + (size_t)ip * e->d;
            for (int i = 0; i < TD_WK_MR; i++) {
                if (ip + i < e->n) {
                    const float *row = e->k + (size_t)(ip + i) * e->ns + (size_t)h * e->d;
                    for (int dd = 0; dd < e->d; dd++)
                        dst[(size_t)dd * TD_WK_MR + i] = row[dd];
                } else {
                    for (int dd = 0; dd < e->d; dd++)
                        dst[(size_t)dd * TD_WK_MR + i] = 0.0f;
                }
            }
        }
        /* V^T: panel of MR dims, [n][MR] */
        for (int dp = 0; dp < e->d; dp += TD_WK_MR) {
            float *dst = vt + (size_t)dp * e->n;
            int w = e->d - dp < TD_WK_MR ? e->d - dp : TD_WK_MR;
            for (int j = 0; j < e->n; j++) {
                const float *row = e->v + (size_t)j * e->ns + (size_t)h * e->d + dp;
                float *o = dst + (size_t)j * TD_WK_MR;
                int i = 0;
                for (; i < w; i++)
                    o[i] = row[i];
                for (; i < TD_WK_MR; i++)
                    o[i] = 0.0f;
            }
        }
    }
}

static void enc_attn_task(void *arg, int ith, int nth)
{
    enc_attn *e = arg;
    (void)nth;
    const td_wk_ops *ops = e->ctx->ops;
    int n = e->n, d = e->d;
    float *scr = thread_scratch(e->ctx, ith);
    float *qt = scr;
    float *st = qt + round_up((size_t)d * TD_WK_NR, SCRATCH_ALIGN);
    float *ot = st + round_up(round_up((size_t)n, TD_WK_MR) * TD_WK_NR, SCRATCH_ALIGN);
    float *sum = ot + round_up(round_up((size_t)d, TD_WK_MR) * TD_WK_NR, SCRATCH_ALIGN);
    float scale = 1.0f / sqrtf((float)d);
    int n_qb = (n + TD_WK_NR - 1) / TD_WK_NR;
    for (;;) {
        int t = atomic_fetch_add(&e->next, 1);
        if (t >= e->n_tasks)
            break;
        int h = t / n_qb, r0 = (t % n_qb) * TD_WK_NR;
        int nr = n - r0 < TD_WK_NR ? n - r0 : TD_WK_NR;
        const float *ka = e->ka + (size_t)h * e->head_floats;
        const float *vt = e->vta + (size_t)h * e->head_floats;
        /* Q block transposed and scaled: one B-panel [d][NR], which is
         * what pack_b makes of the block's rows (in registers, 16 x 16 at
         * a time; the scalar loops this replaced took 8 % of the
         * attention's time) */
        ops->pack_b(e->q + (size_t)r0 * e->ns + (size_t)h * d, TD_WT_F32, (size_t)e->ns, nr, d, qt);
        for (size_t i = 0; i < (size_t)d * TD_WK_NR; i++)
            qt[i] *= scale;
        for (int ip = 0; ip < n; ip += TD_WK_MR) {
            int mr = n - ip < TD_WK_MR ? n - ip : TD_WK_MR;
            ops->mk(d, ka + (size_t)ip * d, qt, st + (size_t)ip * TD_WK_NR, TD_WK_NR, mr, TD_WK_NR,
                    0, NULL);
        }
        ops->colexp(st, n, sum);
        for (int dp = 0; dp < d; dp += TD_WK_MR) {
            int mr = d - dp < TD_WK_MR ? d - dp : TD_WK_MR;
            ops->mk(n, vt + (size_t)dp * n, st, ot + (size_t)dp * TD_WK_NR, TD_WK_NR, mr, TD_WK_NR,
                    0, NULL);
        }
        if (d <= TD_WK_NR && (size_t)nr * TD_WK_NR <= (size_t)(ot - qt)) {
            /* O^T [d][NR] transposed the same way, into qt and st (free
             * by now): [nr][NR], row c holding the d values of query r0 + c */
            ops->pack_b(ot, TD_WT_F32, TD_WK_NR, d, nr, qt);
            for (int c = 0; c < nr; c++) {
                float inv = 1.0f / sum[c];
                const float *src = qt + (size_t)c * TD_WK_NR;
                float *row = e->out + (size_t)(r0 + c) * e->ns + (size_t)h * d;
                for (int dd = 0; dd < d; dd++)
                    row[dd] = src[dd] * inv;
            }
        } else {
            for (int c = 0; c < nr; c++) {
                float inv = 1.0f / sum[c];
                float *row = e->out + (size_t)(r0 + c) * e->ns + (size_t)h * d;
                for (int dd = 0; dd < d; dd++)
                    row[dd] = ot[(size_t)dd * TD_WK_NR + c] * inv;
            }
        }
    }
}

void td_wk_enc_attn(td_wk_ctx *ctx, int n, int n_state, int n_head, const float *q,
                    const float *k, const float *v, float *ka, float *vta, float *out)
{
    enc_attn e = {.ctx = ctx, .n = n, .ns = n_state, .nh = n_head, .d = n_state / n_head,
                  .q = q, .k = k, .v = v, .ka = ka, .vta = vta, .out = out};
    e.head_floats = td_wk_enc_attn_floats(n, n_state, n_head) / (size_t)n_head;
    atomic_store(&e.next, 0);
    td_wk_pool_run(ctx->pool, enc_attn_pack_task, &e);
    atomic_store(&e.next, 0);
    e.n_tasks = n_head * ((n + TD_WK_NR - 1) / TD_WK_NR);
    td_wk_pool_run(ctx->pool, enc_attn_task, &e);
}

/* ------------------------------------------------------------------ */
/* Decoder attention over packed caches                                 */

size_t td_wk_kv_head_floats(int cap, int d)
{
    size_t kf = (size_t)cap * (size_t)d;
    size_t vf = round_up((size_t)d, TD_WK_NR) * (size_t)cap;
    return round_up(kf + vf, SCRATCH_ALIGN);
}

void td_wk_kv_put(float *head, int cap, int d, int pos, const float *krow, const float *vrow)
{
    float *kp = head + ((size_t)(pos / TD_WK_NR) * d) * TD_WK_NR + (size_t)(pos % TD_WK_NR);
    for (int dd = 0; dd < d; dd++)
        kp[(size_t)dd * TD_WK_NR] = krow[dd];
    float *vbase = head + (size_t)cap * d;
    for (int dp = 0; dp < d; dp += TD_WK_NR) {
        float *vp = vbase + ((size_t)dp * cap + (size_t)pos * TD_WK_NR);
        int w = d - dp < TD_WK_NR ? d - dp : TD_WK_NR;
        memcpy(vp, vrow + dp, (size_t)w * sizeof(float));
    }
}

void td_wk_kv_pack(float *head, int cap, int d, int n, const float *k, const float *v, size_t ld,
                   int col0, float *tmp)
{
    (void)tmp;
    for (int j = 0; j < cap; j++) {
        float *kr = head + (size_t)j * d;
        if (j < n)
            memcpy(kr, k + (size_t)j * ld + (size_t)col0, (size_t)d * sizeof(float));
        else
            memset(kr, 0, (size_t)d * sizeof(float));
    }
    float *vt = head + (size_t)cap * d;
    for (int j0 = 0; j0 < cap; j0 += 16) { /* 16 keys at a time: whole lines of each row */
        int j1 = j0 + 16 < cap ? j0 + 16 : cap;
        for (int dd = 0; dd < d; dd++)
            for (int j = j0; j < j1; j++)
                vt[(size_t)dd * cap + (size_t)j] = j < n ? v[(size_t)j * ld + (size_t)col0 + (size_t)dd] : 0.0f;
    }
}

void td_wk_kv_pack_f16(const td_wk_ops *ops, uint16_t *head, int cap, int d, int n,
                       const float *k, const float *v, size_t ld, int col0, float *tmp)
{
    for (int j = 0; j < cap; j++) {
        uint16_t *kr = head + (size_t)j * d;
        if (j < n)
            ops->f32_to_f16(k + (size_t)j * ld + (size_t)col0, kr, (size_t)d);
        else
            memset(kr, 0, (size_t)d * sizeof(uint16_t));
    }
    uint16_t *vt = head + (size_t)cap * d;
    if (d <= TD_WK_NR) {
        /* NR keys at a time transposed in registers (pack_b gives [d][NR]),
         * each row of the block converted into its row of V^T; the strided
         * gather this replaced took 3.5 % of an int8 base encoder */
        float blk[TD_WK_NR * TD_WK_NR];
        for (int j0 = 0; j0 < cap; j0 += TD_WK_NR) {
            int nn = n - j0 < 0 ? 0 : n - j0 < TD_WK_NR ? n - j0 : TD_WK_NR;
            int w = cap - j0 < TD_WK_NR ? cap - j0 : TD_WK_NR;
            if (nn > 0)
                ops->pack_b(v + (size_t)j0 * ld + (size_t)col0, TD_WT_F32, ld, nn, d, blk);
            else
                memset(blk, 0, sizeof blk);
            for (int dd = 0; dd < d; dd++)
                ops->f32_to_f16(blk + (size_t)dd * TD_WK_NR, vt + (size_t)dd * cap + (size_t)j0,
                                (size_t)w);
        }
        return;
    }
    for (int dd = 0; dd < d; dd++) { /* one row of V^T at a time through tmp */
        for (int j = 0; j < cap; j++)
            tmp[j] = j < n ? v[(size_t)j * ld + (size_t)col0 + (size_t)dd] : 0.0f;
        ops->f32_to_f16(tmp, vt + (size_t)dd * cap, (size_t)cap);
    }
}

typedef struct dec_attn {
    td_wk_ctx *ctx;
    const td_wk_dec_attn_args *a;
    size_t head_floats;
    int n_qb;              /* uniform groups: query blocks per group */
    int n_tasks;
    int *task0;            /* ragged groups: first task of each group, and n_tasks */
    size_t lds;            /* score row stride: the most keys any row sees */
    _Atomic int next;
} dec_attn;

/* Group g's rows, first row and keys (uniform or ragged groups). */
static void group_shape(const td_wk_dec_attn_args *a, int g, int *rows, size_t *row0, int *keys0)
{
    if (a->g_rows) {
        *rows = a->g_rows[g];
        *row0 = (size_t)a->g_row0[g];
        *keys0 = a->g_keys0[g];
    } else {
        *rows = a->rows_per_group;
        *row0 = (size_t)g * (size_t)a->rows_per_group;
        *keys0 = a->n_keys0;
    }
}

/* Non-causal rows (cross-attention) over a row-layout block (td_wk_kv_pack):
 * S = (Q / sqrt d) K^T and O = P V as GEMVs of up to TD_WK_GEMV_ROWS rows,
 * K's rows and V^T's rows read whole, several streams at once. */
static void cross_attn_rows(const td_wk_ops *ops, const td_wk_dec_attn_args *a, const void *head,
                            enum td_wtype wt, size_t row0, int nq, int nk, int h, float *qs,
                            float *s, size_t lds)
{
    int d = a->d, cap = a->cap;
    float scale = 1.0f / sqrtf((float)d);
    for (int i = 0; i < nq; i++) {
        const float *row = a->q + (row0 + (size_t)i) * a->ld + (size_t)h * d;
        for (int dd = 0; dd < d; dd++)
            qs[(size_t)i * d + dd] = row[dd] * scale;
    }
    const void *vt = wt == TD_WT_F16 ? (const void *)((const uint16_t *)head + (size_t)cap * d)
                                     : (const void *)((const float *)head + (size_t)cap * d);
    for (int i = 0; i < nq; i += TD_WK_GEMV_ROWS) {
        int m = nq - i < TD_WK_GEMV_ROWS ? nq - i : TD_WK_GEMV_ROWS;
        ops->gemv(m, nk, d, qs + (size_t)i * d, (size_t)d, head, wt, (size_t)d, NULL,
                  s + (size_t)i * lds, lds, 0);
    }
    for (int i = 0; i < nq; i++)
        ops->softmax(s + (size_t)i * lds, nk, nk);
    for (int i = 0; i < nq; i += TD_WK_GEMV_ROWS) {
        int m = nq - i < TD_WK_GEMV_ROWS ? nq - i : TD_WK_GEMV_ROWS;
        ops->gemv(m, d, nk, s + (size_t)i * lds, lds, vt, wt, (size_t)cap, NULL,
                  a->out + (row0 + (size_t)i) * a->ld + (size_t)h * d, a->ld, 0);
    }
}

static void dec_attn_task(void *arg, int ith, int nth)
{
    dec_attn *e = arg;
    const td_wk_dec_attn_args *a = e->a;
    const td_wk_ops *ops = e->ctx->ops;
    (void)nth;
    int d = a->d, cap = a->cap;
    float scale = 1.0f / sqrtf((float)d);
    float *scr = thread_scratch(e->ctx, ith);
    float *qa = scr;
    float *s = qa + round_up((size_t)TD_WK_ATT_QB * d, SCRATCH_ALIGN);
    size_t lds = e->lds;
    float *pa = s + (size_t)TD_WK_ATT_QB * lds;
    for (;;) {
        int t = atomic_fetch_add(&e->next, 1);
        if (t >= e->n_tasks)
            break;
        int g, n_qb;
        if (e->task0) { /* the group whose tasks hold t */
            int lo = 0, hi = a->n_groups - 1;
            while (lo < hi) {
                int mid = (lo + hi + 1) / 2;
                if (e->task0[mid] <= t)
                    lo = mid;
                else
                    hi = mid - 1;
            }
            g = lo;
            n_qb = (e->task0[g + 1] - e->task0[g]) / a->n_head;
            t -= e->task0[g];
        } else {
            n_qb = e->n_qb;
            g = t / (n_qb * a->n_head);
            t -= g * n_qb * a->n_head;
        }
        int qb = t % n_qb;
        int h = t / n_qb;
        int g_rows, keys0;
        size_t g_row0;
        group_shape(a, g, &g_rows, &g_row0, &keys0);
        int t0 = qb * TD_WK_ATT_QB;
        int nq = g_rows - t0 < TD_WK_ATT_QB ? g_rows - t0 : TD_WK_ATT_QB;
        size_t row0 = g_row0 + (size_t)t0;
        if (!a->causal) {
            if (a->kvh)
                cross_attn_rows(ops, a, a->kvh[g] + (size_t)h * e->head_floats, TD_WT_F16, row0,
                                nq, keys0, h, qa, s, lds);
            else
                cross_attn_rows(ops, a, a->kv[g] + (size_t)h * e->head_floats, TD_WT_F32, row0,
                                nq, keys0, h, qa, s, lds);
            continue;
        }
        const float *kh = a->kv[g] + (size_t)h * e->head_floats;
        const float *vh = kh + (size_t)cap * d;
        int nk_max = keys0 + t0 + nq;
        /* Q rows as A-panels, scaled */
        for (int ip = 0; ip < nq; ip += TD_WK_MR) {
            float *dst = qa + (size_t)ip * d;
            for (int i = 0; i < TD_WK_MR; i++) {
                if (ip + i < nq) {
                    const float *row = a->q + (row0 + (size_t)(ip + i)) * a->ld + (size_t)h * d;
                    for (int dd = 0; dd < d; dd++)
                        dst[(size_t)dd * TD_WK_MR + i] = row[dd] * scale;
                } else {
                    for (int dd = 0; dd < d; dd++)
                        dst[(size_t)dd * TD_WK_MR + i] = 0.0f;
                }
            }
        }
        /* S = Q K^T over key panels */
        for (int jp = 0; jp < nk_max; jp += TD_WK_NR) {
            int nr = nk_max - jp < TD_WK_NR ? nk_max - jp : TD_WK_NR;
            for (int ip = 0; ip < nq; ip += TD_WK_MR) {
                int mr = nq - ip < TD_WK_MR ? nq - ip : TD_WK_MR;
                ops->mk(d, qa + (size_t)ip * d, kh + (size_t)jp * d, s + (size_t)ip * lds + jp,
                        lds, mr, nr, 0, NULL);
            }
        }
        for (int i = 0; i < nq; i++) {
            int nk = keys0 + t0 + i + 1;
            ops->softmax(s + (size_t)i * lds, nk, nk_max);
        }
        /* P as A-panels over keys */
        for (int ip = 0; ip < nq; ip += TD_WK_MR) {
            float *dst = pa + (size_t)ip * nk_max;
            for (int i = 0; i < TD_WK_MR; i++) {
                if (ip + i < nq) {
                    const float *row = s + (size_t)(ip + i) * lds;
                    for (int j = 0; j < nk_max; j++)
                        dst[(size_t)j * TD_WK_MR + i] = row[j];
                } else {
                    for (int j = 0; j < nk_max; j++)
                        dst[(size_t)j * TD_WK_MR + i] = 0.0f;
                }
            }
        }
        /* O = P V */
        for (int dp = 0; dp < d; dp += TD_WK_NR) {
            int nr = d - dp < TD_WK_NR ? d - dp : TD_WK_NR;
            for (int ip = 0; ip < nq; ip += TD_WK_MR) {
                int mr = nq - ip < TD_WK_MR ? nq - ip : TD_WK_MR;
                ops->mk(nk_max, pa + (size_t)ip * nk_max, vh + (size_t)dp * cap,
                        a->out + (row0 + (size_t)ip) * a->ld + (size_t)h * d + (size_t)dp, a->ld,
                        mr, nr, 0, NULL);
            }
        }
    }
}

/* Most groups a ragged call may have (cpu.c's KV slots). */
#define DEC_ATTN_MAX_GROUPS 256

void td_wk_dec_attn(td_wk_ctx *ctx, const td_wk_dec_attn_args *a)
{
    dec_attn e = {.ctx = ctx, .a = a};
    int task0[DEC_ATTN_MAX_GROUPS + 1];
    e.head_floats = td_wk_kv_head_floats(a->cap, a->d);
    int max_keys = 0;
    if (a->g_rows) {
        /* the CPU backend has at most DEC_ATTN_MAX_GROUPS KV slots, and
         * a call at most one group per slot */
        assert(a->n_groups <= DEC_ATTN_MAX_GROUPS);
        task0[0] = 0;
        for (int g = 0; g < a->n_groups; g++) {
            int qbs = (a->g_rows[g] + TD_WK_ATT_QB - 1) / TD_WK_ATT_QB;
            task0[g + 1] = task0[g] + qbs * a->n_head;
            int k = a->causal ? a->g_keys0[g] + a->g_rows[g] : a->g_keys0[g];
            if (k > max_keys)
                max_keys = k;
        }
        e.task0 = task0;
        e.n_tasks = task0[a->n_groups];
    } else {
        e.n_qb = (a->rows_per_group + TD_WK_ATT_QB - 1) / TD_WK_ATT_QB;
        e.n_tasks = a->n_groups * a->n_head * e.n_qb;
        max_keys = a->causal ? a->n_keys0 + a->rows_per_group : a->n_keys0;
    }
    e.lds = round_up((size_t)max_keys, TD_WK_NR);
    atomic_store(&e.next, 0);
    td_wk_pool_run(ctx->pool, dec_attn_task, &e);
}

/* ------------------------------------------------------------------ */
/* Convolution and row operations                                       */

typedef struct conv_perm {
    const td_wk_ops *ops;
    const void *w;
    enum td_wtype wt;
    int c_in, c_out;
    float *dst;
} conv_perm;

static void conv_perm_task(void *arg, int ith, int nth)
{
    conv_perm *c = arg;
    int o0, o1;
    split_range(c->c_out, 1, ith, nth, &o0, &o1);
    size_t row = (size_t)3 * c->c_in;
    float tmp[3 * 512];
    for (int o = o0; o < o1; o++) {
        float *d = c->dst + (size_t)o * row;
        /* source row o is [i][k]; destination [k][i] */
        for (int i0 = 0; i0 < c->c_in; i0 += 512) {
            int ni = c->c_in - i0 < 512 ? c->c_in - i0 : 512;
            size_t off = (size_t)o * row + (size_t)i0 * 3;
            if (c->wt == TD_WT_F16)
                c->ops->f16_to_f32((const uint16_t *)c->w + off, tmp, (size_t)ni * 3);
            else
                memcpy(tmp, (const float *)c->w + off, (size_t)ni * 3 * sizeof(float));
            for (int i = 0; i < ni; i++)
                for (int k = 0; k < 3; k++)
                    d[(size_t)k * c->c_in + (size_t)(i0 + i)] = tmp[i * 3 + k];
        }
    }
}

void td_wk_conv3_perm(td_wk_ctx *ctx, int c_in, int c_out, const void *w, enum td_wtype wt,
                      float *wperm)
{
    conv_perm cp = {ctx->ops, w, wt, c_in, c_out, wperm};
    td_wk_pool_run(ctx->pool, conv_perm_task, &cp);
}

void td_wk_conv3(td_wk_ctx *ctx, int n_out, int stride, int c_in, int c_out, const float *xp,
                 const void *w, enum td_wtype wt, const float *bias, float *wperm, float *out,
                 size_t ldo)
{
    td_wk_conv3_perm(ctx, c_in, c_out, w, wt, wperm);
    if (ctx->impl == TD_WK_GEMM_BLAS) {
        /* BLAS wants lda >= K: one product per kernel tap, accumulated */
        for (int k = 0; k < 3; k++)
            td_wk_gemm(ctx, n_out, c_out, c_in, xp + (size_t)k * c_in, (size_t)stride * c_in,
                       wperm + (size_t)k * c_in, TD_WT_F32, (size_t)3 * c_in, k == 0 ? bias : NULL,
                       out, ldo, k > 0);
        return;
    }
    /* A row t = xp rows stride*t .. stride*t+2, contiguous: lda = stride * c_in */
    td_wk_gemm(ctx, n_out, c_out, 3 * c_in, xp, (size_t)stride * c_in, wperm, TD_WT_F32,
               (size_t)3 * c_in, bias, out, ldo, 0);
}

typedef struct rows_ln {
    const td_wk_ops *ops;
    int rows, n;
    const float *x;
    size_t ldx;
    const float *w, *b;
    float *y;
    size_t ldy;
} rows_ln;

static void rows_ln_task(void *arg, int ith, int nth)
{
    rows_ln *r = arg;
    int r0, r1;
    split_range(r->rows, 1, ith, nth, &r0, &r1);
    for (int i = r0; i < r1; i++)
        r->ops->layernorm(r->n, r->x + (size_t)i * r->ldx, r->w, r->b, 1e-5f,
                          r->y + (size_t)i * r->ldy);
}

void td_wk_layernorm_rows(td_wk_ctx *ctx, int rows, int n, const float *x, size_t ldx,
                          const float *w, const float *b, float *y, size_t ldy)
{
    rows_ln r = {ctx->ops, rows, n, x, ldx, w, b, y, ldy};
    if ((size_t)rows * (size_t)n < 32768) /* not worth waking the pool */
        rows_ln_task(&r, 0, 1);
    else
        td_wk_pool_run(ctx->pool, rows_ln_task, &r);
}

typedef struct gelu_job {
    const td_wk_ops *ops;
    float *x;
    size_t n;
    const float *add;
} gelu_job;

static void gelu_task(void *arg, int ith, int nth)
{
    gelu_job *g = arg;
    /* split in 16-float units so threads never share a cache line */
    int units = (int)((g->n + 15) / 16), u0, u1;
    split_range(units, 1, ith, nth, &u0, &u1);
    size_t lo = (size_t)u0 * 16, hi = (size_t)u1 * 16 < g->n ? (size_t)u1 * 16 : g->n;
    if (hi <= lo)
        return;
    g->ops->gelu(g->x + lo, hi - lo);
    if (g->add)
        for (size_t i = lo; i < hi; i++)
            g->x[i] += g->add[i];
}

void td_wk_gelu_add(td_wk_ctx *ctx, float *x, size_t n, const float *add)
{
    gelu_job g = {ctx->ops, x, n, add};
    if (n < 16384)
        gelu_task(&g, 0, 1);
    else
        td_wk_pool_run(ctx->pool, gelu_task, &g);
}

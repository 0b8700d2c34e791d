// sample.comp: the heavy part of one sampling step (backend.h's sample(),
// vk_sample.h), one workgroup per row of the last decode's logits. The
// arithmetic mirrors sample.c's td_wsample_row; what needs double
// precision and what only a few scalars take (the log-sum-exps, the
// log-probabilities) is left to the host, which gets per row:
//   - the maxima and sums of exp(x - max) of the raw row, of the masked
//     text tokens and of the masked timestamp tokens (whole row when
//     there is no timestamp split), and the raw no-speech logit;
//   - whether the timestamp rule masked the text tokens;
//   - the top k (best first, ties to the lower id) with their logits;
//   - the temperature draw and its logit;
//   - flags: a NaN in the row (as sample.c finds it), and "uncertain":
//     a decision this float arithmetic cannot take as the CPU's double
//     arithmetic would (the timestamp rule or the draw within our error
//     bound of a boundary), which the host then takes on the row itself.
// Masks come from a bitmask of the sampler's suppressed ids, the row's
// ranges and flags; nothing is written to the logits. Keys: floats mapped
// to unsigned integers in the same order (-0 as +0, as float comparison
// sees them), so the top k is a radix select on keys (4 passes of 8 bits)
// that is exact, then the ties at the threshold taken lowest ids first.
// Reductions go through shared memory (no subgroup size assumed).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

// WG invocations, a power of two from 128 to 1024 (specialization
// constant 0, also the workgroup size; vk_sample.c picks it from the
// device's limits): a row is one workgroup, so at batch 1 its passes over
// the 51,865 logits run on one multiprocessor; more invocations, fewer
// iterations each. 1024 (every desktop driver's limit, lavapipe's too)
// takes 22.5 KB of shared memory, 128 (Vulkan's guaranteed minimum of
// invocations) 4.6 KB (2 KB + 20 bytes per invocation).
layout(constant_id = 0) const uint WG = 1024u;
#define HIST 256u // bins of a radix pass
#define MAX_K 65u
#define CAND 128u // top-k candidates sorted at once
#define IN_WORDS 16u
#define OUT_WORDS 148u // O_TOP_X + 65, rounded up
#define NEG_INF_KEY 0x007fffffu // fkey(-inf): below every other non-NaN float

// flags of the row (backend.h's TD_WSAMPLE_*, resolved by the host)
#define F_BLANK 1
#define F_TS_RULE 2
#define F_NOSPEECH 4

// status bits of the output's word 0
#define S_NAN 1u
#define S_FORCED 2u
#define S_UNCERTAIN 4u
#define S_DRAWN 8u

// output words
#define O_STATUS 0
#define O_RAW_MAX 1
#define O_RAW_SUM 2
#define O_NS_X 3
#define O_TEXT_MAX 4
#define O_TEXT_SUM 5
#define O_TS_MAX 6
#define O_TS_SUM 7
#define O_DRAW 8
#define O_DRAW_X 9
#define O_TOP 16
#define O_TOP_X (16 + 65)

layout(local_size_x_id = 0) in;

layout(push_constant) uniform P {
    F32 x;          // the logits, rows of nv
    U32 sup;        // suppressed ids as a bitmask (has_sup)
    I32 inp;        // IN_WORDS per row: row, flags, T, u (high part), n_ranges,
                    // ranges[4][2], 1/T (high, low part), u (low part)
    U32 outp;       // OUT_WORDS per row
    uint nv, k, has_sup, tsb; // tsb: first timestamp token, 0 = no split
    int blank, eot, nospeech; // -1: none
} p;

shared uint s_u[HIST];
shared uint s_u2[WG];
shared float s_f[WG];
shared float s_f2[WG];
shared vec2 s_ff[WG];
shared float s_sum[3];
shared uint s_max[3];
shared uint s_flag[4];
shared uint s_sel[3];
shared uint cand_id[CAND];
shared uint cand_key[CAND];
shared uint cand_n;

uint row_off;
int flags, nr;
int rlo[4], rhi[4];
bool forced = false;

uint fkey(float f)
{
    uint u = floatBitsToUint(f);
    if ((u & 0x7fffffffu) == 0u)
        u = 0u;
    return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}

float kval(uint k)
{
    return uintBitsToFloat((k & 0x80000000u) != 0u ? (k & 0x7fffffffu) : ~k);
}

// exp of a <= 0, with a past float's range taken as -126 (its exp is 0
// or a denormal, as good as 0 to the host's error bounds): -inf and its
// arithmetic are never relied on
float ex(float a)
{
    return exp(max(a, -126.0));
}

// Float-float arithmetic (a value as hi + lo) for the draw, whose sums
// must be far more exact than float for the host to trust most draws:
// sums of non-negative terms to about 2^-44, and exp good to a few float
// ulps whatever its argument (GLSL's exp may be off by 3 + 2|x| ulps).
// `precise` keeps the compiler from fusing or reordering these steps.
vec2 two_sum(float a, float b)
{
    precise float s = a + b;
    precise float bb = s - a;
    precise float e = (a - (s - bb)) + (b - bb);
    return vec2(s, e);
}

vec2 ff_add(vec2 a, vec2 b)
{
    vec2 s = two_sum(a.x, b.x);
    precise float lo = s.y + (a.y + b.y);
    return two_sum(s.x, lo);
}

vec2 ff_neg(vec2 a)
{
    return vec2(-a.x, -a.y);
}

// Dekker's split and product (no fused multiply-add assumed)
vec2 split(float a)
{
    precise float c = 4097.0 * a;
    precise float hi = c - (c - a);
    precise float lo = a - hi;
    return vec2(hi, lo);
}

vec2 two_prod(float a, float b)
{
    precise float p = a * b;
    vec2 as = split(a), bs = split(b);
    precise float e = ((as.x * bs.x - p) + as.x * bs.y + as.y * bs.x) + as.y * bs.y;
    return vec2(p, e);
}

vec2 ff_mul(vec2 a, vec2 b)
{
    vec2 p = two_prod(a.x, b.x);
    precise float lo = p.y + (a.x * b.y + a.y * b.x);
    return two_sum(p.x, lo);
}

// exp(a) for a float-float a <= 0: a = n ln2 + r (Cody and Waite's two
// constants: n * L2HI is exact), exp(r) by its Taylor series to r^8
// (|r| <= 0.35: truncation 1e-10), scaled by 2^n. About 2 ulps; below
// -87 (exp < 2e-38), 0.
float exp_ff(vec2 a)
{
    if (a.x < -87.0)
        return 0.0;
    float n = floor(a.x * 1.44269504 + 0.5);
    precise float r = ((a.x - n * 0.693145751953125) - n * 1.42860677e-06) + a.y;
    float q = 1.0 / 40320.0;
    q = q * r + 1.0 / 5040.0;
    q = q * r + 1.0 / 720.0;
    q = q * r + 1.0 / 120.0;
    q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0;
    q = q * r + 0.5;
    q = q * r + 1.0;
    q = q * r + 1.0;
    return ldexp(q, int(n));
}

// exp((x - mx) / T) with x - mx exact and 1/T given as float-float
float draw_term(float x, float mx, vec2 inv_t)
{
    return exp_ff(ff_mul(two_sum(x, -mx), inv_t));
}

bool is_nan(float f)
{
    return (floatBitsToUint(f) & 0x7fffffffu) > 0x7f800000u;
}

// masked before the timestamp rule: suppress list, blank/eot, ranges
bool masked_pre(uint i)
{
    if (p.has_sup != 0u && ((p.sup.v[i >> 5] >> (i & 31u)) & 1u) != 0u)
        return true;
    if ((flags & F_BLANK) != 0 && (int(i) == p.blank || int(i) == p.eot))
        return true;
    // all four ranges, unused ones weighed out, with no branch: the loop
    // unrolls and rlo, rhi stay in registers (an array indexed at run time
    // may live in local memory, and this runs for every logit)
    uint hit = 0u;
    [[unroll]] for (int r = 0; r < 4; r++)
        hit |= uint(r < nr) & uint(int(i) >= rlo[r]) & uint(int(i) < rhi[r]);
    return hit != 0u;
}

bool masked(uint i)
{
    return (forced && i < p.tsb) || masked_pre(i);
}

// the key of token i in the masked row (masked: that of -inf)
uint key_at(uint i)
{
    return masked(i) ? NEG_INF_KEY : fkey(p.x.v[row_off + i]);
}

// inclusive prefix sums over the workgroup (Hillis-Steele)
uint scan_u(uint v)
{
    uint t = gl_LocalInvocationID.x;
    s_u2[t] = v;
    barrier();
    for (uint d = 1u; d < WG; d <<= 1) {
        uint add = t >= d ? s_u2[t - d] : 0u;
        barrier();
        s_u2[t] += add;
        barrier();
    }
    uint r = s_u2[t];
    barrier();
    return r;
}

float scan_f(float v)
{
    uint t = gl_LocalInvocationID.x;
    s_f2[t] = v;
    barrier();
    for (uint d = 1u; d < WG; d <<= 1) {
        float add = t >= d ? s_f2[t - d] : 0.0;
        barrier();
        s_f2[t] += add;
        barrier();
    }
    float r = s_f2[t];
    barrier();
    return r;
}

vec2 scan_ff(vec2 v)
{
    uint t = gl_LocalInvocationID.x;
    s_ff[t] = v;
    barrier();
    for (uint d = 1u; d < WG; d <<= 1) {
        vec2 add = t >= d ? s_ff[t - d] : vec2(0.0);
        barrier();
        s_ff[t] = ff_add(s_ff[t], add);
        barrier();
    }
    vec2 r = s_ff[t];
    barrier();
    return r;
}

float sum_f(float v)
{
    uint t = gl_LocalInvocationID.x;
    s_f[t] = v;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (t < s)
            s_f[t] += s_f[t + s];
        barrier();
    }
    float r = s_f[0];
    barrier();
    return r;
}

void main()
{
    uint t = gl_LocalInvocationID.x, ri = gl_WorkGroupID.x;
    uint ib = ri * IN_WORDS, ob = ri * OUT_WORDS;
    row_off = uint(p.inp.v[ib]) * p.nv;
    flags = p.inp.v[ib + 1u];
    float temp = intBitsToFloat(p.inp.v[ib + 2u]);
    float u = intBitsToFloat(p.inp.v[ib + 3u]);
    nr = p.inp.v[ib + 4u];
    [[unroll]] for (int r = 0; r < 4; r++) {
        rlo[r] = p.inp.v[ib + 5u + 2u * uint(r)];
        rhi[r] = p.inp.v[ib + 6u + 2u * uint(r)];
    }
    uint nv = p.nv;
    uint split = p.tsb > 0u ? p.tsb : nv; // text tokens below, timestamps from
    bool need_raw = (flags & F_NOSPEECH) != 0;

    // 1. maxima (as keys) and NaNs
    if (t < 3u)
        s_max[t] = 0u;
    if (t < 4u)
        s_flag[t] = 0u;
    barrier();
    uint mr = 0u, mt = 0u, ms = 0u;
    bool nan_raw = false, nan_unm = false;
    for (uint i = t; i < nv; i += WG) {
        float v = p.x.v[row_off + i];
        bool n = is_nan(v);
        uint kv = fkey(v);
        if (n)
            nan_raw = true;
        else
            mr = max(mr, kv);
        if (!masked_pre(i)) {
            if (n)
                nan_unm = true;
            else if (i < split)
                mt = max(mt, kv);
            else
                ms = max(ms, kv);
        }
    }
    atomicMax(s_max[0], mr);
    atomicMax(s_max[1], mt);
    atomicMax(s_max[2], ms);
    if (nan_raw)
        atomicOr(s_flag[0], 1u);
    if (nan_unm)
        atomicOr(s_flag[1], 1u);
    barrier();
    if ((need_raw && s_flag[0] != 0u) || s_flag[1] != 0u) {
        if (t == 0u)
            p.outp.v[ob + O_STATUS] = S_NAN;
        return; // the same for the whole workgroup
    }
    uint kr = s_max[0], kt = s_max[1], ks = s_max[2];
    float mxr = kr > NEG_INF_KEY ? kval(kr) : 0.0;
    float mxt = kt > NEG_INF_KEY ? kval(kt) : 0.0;
    float mxs = ks > NEG_INF_KEY ? kval(ks) : 0.0;

    // 2. sums of exp(x - max) (every term <= 1; -inf ones left out)
    float sr = 0.0, st = 0.0, ss = 0.0;
    for (uint i = t; i < nv; i += WG) {
        float v = p.x.v[row_off + i];
        if (fkey(v) <= NEG_INF_KEY)
            continue;
        if (need_raw)
            sr += ex(v - mxr);
        if (!masked_pre(i)) {
            if (i < split)
                st += ex(v - mxt);
            else
                ss += ex(v - mxs);
        }
    }
    sr = sum_f(sr);
    st = sum_f(st);
    ss = sum_f(ss);

    // 3. the timestamp rule: do the timestamps' summed probabilities beat
    // the best text token (log-sum-exp over them > its logit)? Within
    // our error bound of a tie, the host decides on the row.
    bool uncertain = false;
    if (p.tsb > 0u && (flags & F_TS_RULE) != 0 && ks > NEG_INF_KEY) {
        if (kt <= NEG_INF_KEY) {
            forced = true;
        } else {
            float lse_ts = mxs + log(ss);
            float d = lse_ts - mxt;
            // sums good to 1e-4 relative, log to 1e-5: margin tenfold
            if (abs(d) <= 2e-4 + 1e-6 * (abs(lse_ts) + abs(mxt)))
                uncertain = true;
            else
                forced = d > 0.0;
        }
    }
    if (t == 0u) {
        p.outp.v[ob + O_RAW_MAX] = floatBitsToUint(kr > NEG_INF_KEY ? mxr : kval(NEG_INF_KEY));
        p.outp.v[ob + O_RAW_SUM] = floatBitsToUint(sr);
        uint ns = p.nospeech >= 0 ? uint(p.nospeech) : 0u;
        p.outp.v[ob + O_NS_X] = floatBitsToUint(p.x.v[row_off + ns]);
        p.outp.v[ob + O_TEXT_MAX] = floatBitsToUint(kval(max(kt, NEG_INF_KEY)));
        p.outp.v[ob + O_TEXT_SUM] = floatBitsToUint(st);
        p.outp.v[ob + O_TS_MAX] = floatBitsToUint(kval(max(ks, NEG_INF_KEY)));
        p.outp.v[ob + O_TS_SUM] = floatBitsToUint(ss);
    }
    if (uncertain) {
        if (t == 0u)
            p.outp.v[ob + O_STATUS] = S_UNCERTAIN;
        return; // uniform: every invocation computed the same
    }
    uint kf = forced ? ks : max(kt, ks); // the masked row's maximum after the rule

    // 4. top k: radix select of the k-th largest key, 8 bits at a time.
    // After a pass, once the keys above the selected digit's bin and the
    // bin itself are few (at most CAND: usually after two passes), they
    // are all collected and sorted; else, after the fourth pass, the
    // threshold key is exact and its ties are taken lowest ids first.
    uint k = p.k, prefix = 0u, pmask = 0u, rem = k;
    bool early = false;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (uint d = t; d < HIST; d += WG)
            s_u[d] = 0u;
        barrier();
        for (uint i = t; i < nv; i += WG) {
            uint kv = key_at(i);
            if ((kv & pmask) == prefix)
                atomicAdd(s_u[(kv >> uint(shift)) & 255u], 1u);
        }
        barrier();
        // thread j looks at the g digits from 255 - j g down (g = 1
        // unless the workgroup has fewer threads than bins): with the
        // scan, the keys with each digit or a higher one; the digit where
        // they first reach rem holds the k-th
        uint g = (HIST + WG - 1u) / WG, own = 0u;
        for (uint d = t * g; d < min(t * g + g, HIST); d++)
            own += s_u[HIST - 1u - d]; // threads past the bins add nothing
        uint incl = scan_u(own);
        if (incl >= rem && incl - own < rem) {
            uint acc = incl - own;
            for (uint d = t * g; d < min(t * g + g, HIST); d++) {
                uint c = s_u[HIST - 1u - d];
                if (acc + c >= rem) {
                    s_sel[0] = HIST - 1u - d;
                    s_sel[1] = rem - acc;
                    s_sel[2] = c;
                    break;
                }
                acc += c;
            }
        }
        barrier();
        prefix |= s_sel[0] << uint(shift);
        pmask |= 255u << uint(shift);
        rem = s_sel[1];
        early = k - rem + s_sel[2] <= CAND; // above the bin, and the bin
        barrier();
        if (early)
            break; // uniform: every invocation read the same
    }
    if (t == 0u)
        cand_n = 0u;
    barrier();
    uint chunk = (nv + WG - 1u) / WG, lo = min(t * chunk, nv), hi = min(lo + chunk, nv);
    if (early) {
        for (uint i = t; i < nv; i += WG) {
            uint kv = key_at(i);
            if ((kv & pmask) >= prefix) {
                uint c = atomicAdd(cand_n, 1u);
                cand_id[c] = i;
                cand_key[c] = kv;
            }
        }
        barrier();
    } else {
        // every key above the threshold (k - rem of them), then the rem
        // lowest ids among those equal to it, in id order: each thread
        // takes a contiguous stretch of ids
        for (uint i = t; i < nv; i += WG) {
            uint kv = key_at(i);
            if (kv > prefix) {
                uint c = atomicAdd(cand_n, 1u);
                cand_id[c] = i;
                cand_key[c] = kv;
            }
        }
        uint eq = 0u;
        for (uint i = lo; i < hi; i++)
            if (key_at(i) == prefix)
                eq++;
        uint before = scan_u(eq) - eq; // barriers inside: cand_n is final after
        uint above = k - rem;
        for (uint i = lo; i < hi && before < rem; i++)
            if (key_at(i) == prefix) {
                cand_id[above + before] = i;
                cand_key[above + before] = prefix;
                before++;
            }
        if (t == 0u)
            cand_n = k;
        barrier();
    }
    // sorted: larger key first, then lower id; the first k written
    uint n_cand = cand_n;
    for (uint ci = t; ci < n_cand; ci += WG) {
        uint mk = cand_key[ci], mi = cand_id[ci], rank = 0u;
        for (uint j = 0u; j < n_cand; j++) {
            uint kj = cand_key[j];
            if (kj > mk || (kj == mk && cand_id[j] < mi))
                rank++;
        }
        if (rank < k) {
            p.outp.v[ob + O_TOP + rank] = mi;
            p.outp.v[ob + O_TOP_X + rank] =
                floatBitsToUint(mk == NEG_INF_KEY ? kval(NEG_INF_KEY) : p.x.v[row_off + mi]);
        }
    }

    // 5. the draw from softmax(masked / T): the first id (in id order)
    // whose cumulative sum of exp((x - max) / T) passes u times the total,
    // as sample.c walks it. Each thread sums its stretch of ids, a scan
    // places the stretches, the thread whose stretch holds u * total walks
    // it. In float-float every term is good to 3e-7 of itself and the sums
    // to 1e-12 of themselves, so the CPU's double sums are within 3e-7 of
    // ours; a draw within 1e-6 of a boundary is left to the host (so is
    // u = 0, whose first boundary is 0 itself).
    uint status = forced ? S_FORCED : 0u;
    if (temp > 0.0 && kf > NEG_INF_KEY) {
        float mxf = kval(kf);
        vec2 inv_t = vec2(intBitsToFloat(p.inp.v[ib + 13u]), intBitsToFloat(p.inp.v[ib + 14u]));
        vec2 uu = vec2(u, intBitsToFloat(p.inp.v[ib + 15u]));
        vec2 c = vec2(0.0);
        for (uint i = lo; i < hi; i++) {
            uint kv = key_at(i);
            if (kv > NEG_INF_KEY)
                c = ff_add(c, vec2(draw_term(p.x.v[row_off + i], mxf, inv_t), 0.0));
        }
        vec2 incl = scan_ff(c);
        vec2 start = ff_add(incl, ff_neg(c));
        if (t == WG - 1u)
            s_ff[0] = incl;
        if (t == 0u) {
            s_flag[2] = 0u;
            s_flag[3] = 0u;
        }
        barrier();
        vec2 U = ff_mul(uu, s_ff[0]);
        // start <= U < start + c (in float-float)
        if (ff_add(U, ff_neg(start)).x >= 0.0 && ff_add(incl, ff_neg(U)).x > 0.0) {
            vec2 acc = start, prev = start;
            uint next = 0u;
            bool crossed = false;
            for (uint i = lo; i < hi; i++) {
                uint kv = key_at(i);
                if (kv <= NEG_INF_KEY)
                    continue;
                prev = acc;
                acc = ff_add(acc, vec2(draw_term(p.x.v[row_off + i], mxf, inv_t), 0.0));
                next = i;
                if (ff_add(acc, ff_neg(U)).x > 0.0) {
                    crossed = true;
                    break;
                }
            }
            float below = ff_add(U, ff_neg(prev)).x, above = ff_add(acc, ff_neg(U)).x;
            if (crossed && below > 1e-6 * (U.x + prev.x) + 1e-30 &&
                above > 1e-6 * (U.x + acc.x) + 1e-30) {
                atomicAdd(s_flag[2], 1u);
                s_flag[3] = next;
            } else {
                atomicAdd(s_flag[2], 2u); // counted as not certain
            }
        }
        barrier();
        if (s_flag[2] == 1u) {
            status |= S_DRAWN;
            if (t == 0u) {
                p.outp.v[ob + O_DRAW] = s_flag[3];
                p.outp.v[ob + O_DRAW_X] = floatBitsToUint(p.x.v[row_off + s_flag[3]]);
            }
        } else {
            status |= S_UNCERTAIN;
        }
    }
    if (t == 0u)
        p.outp.v[ob + O_STATUS] = status;
}

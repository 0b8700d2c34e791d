// common.glsl: what every shader of the Vulkan backend shares: buffer
// references (data reached by device address from push constants, see
// vk.h) and exact GELU. Included by the .comp files.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_scalar_block_layout : require

layout(buffer_reference, scalar, buffer_reference_align = 4) buffer F32 { float v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 4) buffer U32 { uint v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 4) buffer I32 { int v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 8) buffer U32x2 { uvec2 v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 16) buffer U32x4 { uvec4 v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 16) buffer F32x4 { vec4 v[]; };

// The same, coherent: what one workgroup writes and another reads in
// the same dispatch (after a buffer memory barrier and a signal), e.g.
// the decoder attention's split parts, which a plain load could find
// stale in a multiprocessor's cache.
layout(buffer_reference, scalar, buffer_reference_align = 4) coherent buffer F32c { float v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 4) coherent buffer U32c { uint v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 4) coherent buffer I32c { int v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 8) coherent buffer U32x2c { uvec2 v[]; };
layout(buffer_reference, scalar, buffer_reference_align = 16) coherent buffer F32x4c { vec4 v[]; };

// Activations: what matvec.glsl and dec_attn.glsl read and write of
// the residual stream, the queries, the KV caches and their outputs.
// Plain references where each product or attention is a dispatch of its
// own (the barrier between dispatches makes the writes visible);
// coherent ones where the includer defines TD_ACT_COHERENT (dec_step.comp,
// whose phases read what earlier phases of the same dispatch wrote).
#ifdef TD_ACT_COHERENT
#define ACT F32c
#define ACT_U U32c
#define ACT_U2 U32x2c
#define ACT4 F32x4c
#else
#define ACT F32
#define ACT_U U32
#define ACT_U2 U32x2
#define ACT4 F32x4
#endif

// erf by W. J. Cody's rational approximations (erf below 0.5, erfc up to
// 4, 1 beyond, where erfc < 2e-8): GLSL has no erf, and the short
// Abramowitz-Stegun forms are off by 1e-7 absolute, which GELU's large
// inputs would carry into the residual stream; this one is good to float
// rounding, as the CPU backend's erff.
float erf_f(float x)
{
    float a = abs(x);
    if (a < 0.5) {
        float t = x * x;
        float p = (((0.185777706184603153 * t + 3.16112374387056560) * t + 113.864154151050156) * t +
                   377.485237685302021) * t + 3209.37758913846947;
        float q = (((t + 23.6012909523441209) * t + 244.024637934444173) * t + 1282.61652607737228) * t +
                  2844.23683343917062;
        return x * p / q;
    }
    float r = 1.0;
    if (a < 4.0) {
        float p = (((((((2.15311535474403846e-8 * a + 5.64188496988670089e-1) * a +
                         8.88314979438837594) * a + 66.1191906371416295) * a +
                       298.635138197400131) * a + 881.952221241769090) * a +
                     1712.04761263407058) * a + 2051.07837782607147) * a + 1230.33935479799725;
        float q = (((((((a + 15.7449261107098347) * a + 117.693950891312499) * a +
                       537.181101862009858) * a + 1621.38957456669019) * a +
                     3290.79923573345963) * a + 4362.61909014324716) * a +
                   3439.36767414372164) * a + 1230.33935480374942;
        r = 1.0 - exp(-a * a) * p / q;
    }
    return x < 0.0 ? -r : r;
}

float gelu_f(float x)
{
    return 0.5 * x * (1.0 + erf_f(x * 0.70710678118654752));
}

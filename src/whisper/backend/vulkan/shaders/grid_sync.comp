// grid_sync.comp: a probe for bench/vk-dispatch.c, not used by the
// backend. It asks what a decoder step would gain as one persistent
// dispatch instead of ~195 dependent ones: P phases in one dispatch,
// separated by a barrier across the whole grid (every workgroup counts
// itself in an atomic, then waits until all have), each phase a product
// of one row of K floats by its own K x K matrix of halves (the decoder
// step's typical 2-MB product), reading the last phase's output. The
// grid must be resident at once (one workgroup per multiprocessor or a
// few): a wait that passes its limit sets a flag instead of hanging, and
// the bench reports it. With K = 0 the phases do no work: the barrier's
// own cost.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform P {
    U32c sync;   // [0]: arrivals, [1]: set when a wait passed its limit
    U32x4 w;     // P matrices of K x K halves, one after the other
    F32c x;      // two rows of K floats: phase p reads row p % 2, writes the other
    uint phases, K;
} p;

const uint SPIN_LIMIT = 1u << 20;
shared float xs[4096]; // the phase's input row (K <= 4096), read once from memory

// Every invocation's stores reach the workgroup barrier; the elected one
// then makes them visible device-wide (the release) before it counts
// itself, waits for the grid, and acquires the others' stores before the
// workgroup goes on. Once a wait passed its limit (a grid not resident at
// once) no later phase waits, so that such a grid ends in bounded time.
void grid_barrier(uint phase)
{
    barrier();
    if (gl_LocalInvocationID.x == 0) {
        memoryBarrierBuffer();
        atomicAdd(p.sync.v[0], 1u);
        uint want = (phase + 1) * gl_NumWorkGroups.x, spins = 0;
        while (p.sync.v[1] == 0u && p.sync.v[0] < want && spins < SPIN_LIMIT)
            spins++;
        if (spins >= SPIN_LIMIT)
            atomicOr(p.sync.v[1], 1u);
        memoryBarrierBuffer();
    }
    barrier();
}

void main()
{
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint teams = gl_NumWorkGroups.x * gl_NumSubgroups;
    uint team = gl_WorkGroupID.x * gl_NumSubgroups + sg;
    uint k8n = p.K / 8;
    for (uint ph = 0; ph < p.phases; ph++) {
        uint src = (ph % 2) * p.K, dst = p.K - src;
        uint wbase = ph * p.K * k8n; // uvec4s before this phase's matrix
        for (uint k = gl_LocalInvocationID.x; k < p.K; k += gl_WorkGroupSize.x)
            xs[k] = p.x.v[src + k];
        barrier();
        for (uint row = team; row < p.K; row += teams) {
            float s = 0.0;
            for (uint k8 = lane; k8 < k8n; k8 += gl_SubgroupSize) {
                uvec4 u = p.w.v[wbase + row * k8n + k8];
                uint k = k8 * 8;
                s += dot(vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y)),
                         vec4(xs[k], xs[k + 1], xs[k + 2], xs[k + 3])) +
                     dot(vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w)),
                         vec4(xs[k + 4], xs[k + 5], xs[k + 6], xs[k + 7]));
            }
            s = subgroupAdd(s);
            if (subgroupElect())
                p.x.v[dst + row] = s;
        }
        grid_barrier(ph);
    }
}

// dec_step.comp: a decoder step's products and attentions (matvec.glsl,
// dec_attn_row.glsl) as phases of one dispatch, for the few-row steps
// (batch 1 to 8) that dependent dispatches, not bytes, make slow: on an
// H100 a medium step is 195 dispatches at about 9.6 us each, most of it
// the wait for one to finish and the restart after the barrier, while a
// barrier across a resident grid inside one dispatch measured a third of
// that (bench/RESULTS.md, "what a dependency costs").
//
// The grid is G workgroups of 128 threads, all resident at once (ops.c
// picks G from the multiprocessor count and checks at open, with empty
// phases, that the barriers pass). Phase i is one dispatch of the
// one-a-dispatch path: its kind and grid from heads[i], its push
// constants from params[i]; the G workgroups walk its grid (workgroup g
// takes g, g + G, ...), then meet at a barrier across the grid before
// the next phase. So each phase computes what its own dispatch would,
// bit for bit. What a phase reads that an earlier one wrote goes through
// coherent references (common.glsl's ACT with TD_ACT_COHERENT).
//
// The barrier: every workgroup, after a buffer memory barrier, counts
// itself in sync[0]; the last to arrive sets the count back to 0 and
// advances the generation in sync[1], for which the others wait. A wait
// that passes its limit (a grid not resident at once) sets sync[2], and
// from then on nobody waits: the dispatch ends in bounded time with a
// wrong result. ops.c reads sync[2] after a check at setup and does not
// use this shader where it was set; a wait that passes its limit later
// also sets report[0], in host-visible memory, which the backend reads
// after each step (td_vko_step_failed) to drop that step's results.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_buffer_reference_uvec2 : require
// heads of 64 (every Whisper decoder's), floats or halves of keys
#define TD_ACT_COHERENT
#define DA_IN_STEP
#define DA_D 64
#include "dec_attn.glsl"

// the products' rows: 1 (one sequence) or 8 (a few), weights as halves
// @variants DS_MR 1 8
#ifndef DS_MR
#define DS_MR 8
#endif
const uint WF16 = 1;
const uint MR = DS_MR;
const uint CT = 1;
#define MV_IN_STEP
#include "matvec.glsl"
#include "dec_attn_row.glsl"

const uint PH_MATVEC = 0, PH_ATTN = 1, PH_ATTN16 = 2;

layout(buffer_reference, scalar, buffer_reference_align = 16) buffer Heads { uvec4 h[]; };
// the barrier's words: volatile, so that every read of the wait goes to
// memory
layout(buffer_reference, scalar, buffer_reference_align = 4) volatile coherent buffer SyncWords {
    uint v[];
};

layout(push_constant) uniform PC {
    Heads heads;     // per phase: kind, grid x, y, z
    uvec2 params;    // per phase: 128 bytes of parameters, read as the kind's
    SyncWords sync;  // count, generation, a wait passed its limit
    U32 report;      // host-visible: [0] set where a wait passed its limit
    uint n_phases;
} pc;

const uint SPIN_LIMIT = 1u << 20;

void grid_barrier()
{
    memoryBarrierBuffer();
    barrier();
    if (gl_LocalInvocationIndex == 0) {
        uint gen = atomicAdd(pc.sync.v[1], 0u); // ordered before the arrival below
        if (atomicAdd(pc.sync.v[0], 1u) == gl_NumWorkGroups.x - 1) {
            atomicExchange(pc.sync.v[0], 0u);
            memoryBarrierBuffer();
            atomicAdd(pc.sync.v[1], 1u);
        } else {
            uint spins = 0;
            while (pc.sync.v[1] == gen && pc.sync.v[2] == 0u && spins < SPIN_LIMIT)
                spins++;
            // by the count, and by the state: lavapipe's compiler ends a
            // shader's loops after 65,535 iterations in all. (The count
            // keeps the loop: with it unused after, spirv-opt deleted the
            // loop as one without effects, and the wait with it.)
            if (spins >= SPIN_LIMIT || (pc.sync.v[1] == gen && pc.sync.v[2] == 0u)) {
                atomicOr(pc.sync.v[2], 1u);
                pc.report.v[0] = 1u;
            }
        }
        memoryBarrierBuffer();
    }
    barrier();
}

void main()
{
    uint G = gl_NumWorkGroups.x;
    for (uint ph = 0; ph < pc.n_phases; ph++) {
        uvec4 h = pc.heads.h[ph];
        uvec3 n = h.yzw;
        uint total = n.x * n.y * n.z;
        // the phase's parameters: params + 128 ph (the address as two words)
        uint lo = pc.params.x + ph * 128;
        uvec2 a = uvec2(lo, pc.params.y + (lo < pc.params.x ? 1 : 0));
        if (h.x == PH_MATVEC) {
            mv_ref = MvParams(a);
        } else {
            da_ref = DaParams(a);
            KV16 = h.x == PH_ATTN16 ? 1 : 0;
        }
        for (uint v = gl_WorkGroupID.x; v < total; v += G) {
            barrier(); // the last workgroup's shared memory is read no more
            uvec3 w = uvec3(v % n.x, (v / n.x) % n.y, v / (n.x * n.y));
            if (h.x == PH_MATVEC)
                matvec_run(w);
            else
                dec_attn_run(w, n);
        }
        if (ph + 1 < pc.n_phases)
            grid_barrier();
    }
}

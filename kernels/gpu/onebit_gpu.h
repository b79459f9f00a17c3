/* Portability header: the same kernel source builds for gfx1151 (clang-19, amdgcn-amd-amdhsa,
 * no device libraries) and for the host (any C11 compiler, -DONEBIT_HOST) so that tests run
 * the very code that ships.
 *
 * Execution model all builds agree on: a kernel body runs once per work-group; work-items
 * appear only inside FOR_LANES(l, WG) phases, and phases are separated by BARRIER(). On the
 * GPU each work-item runs its own lane of every phase; on the serial host build the phase is
 * a loop over all lanes. So nothing private may live across a BARRIER(): data that crosses
 * phases goes through LDS arrays declared with LDS(...). Kernels are 1-D in work-items; the
 * grid may be 2-D or 3-D in work-groups. The SIMT host build (-DONEBIT_HOST -DONEBIT_SIMT)
 * runs each work-item on its own thread with real barriers, as the GPU does, so a missing
 * BARRIER() shows up in tests (and as a data race under ThreadSanitizer).
 *
 * Build both with -ffp-contract=off: the Rust references never fuse a*b+c, and fused
 * rounding would make RoPE and the epilogues differ in the last bit. */
#ifndef ONEBIT_GPU_H
#define ONEBIT_GPU_H

typedef __UINT8_TYPE__ u8;
typedef __INT8_TYPE__ i8;
typedef __UINT16_TYPE__ u16;
typedef __UINT32_TYPE__ u32;
typedef __INT32_TYPE__ i32;
typedef __UINT64_TYPE__ u64;

/* Activation scale of one quantized row, as act_quant writes it (8 bytes). */
struct onebit_act {
    float scale;
    i32 sum;
};

/* (value, index) of a partial argmax. */
struct onebit_best {
    float value;
    u32 index;
};

#ifdef ONEBIT_HOST

/* Where the host runner is in the grid; passed to every host kernel as its first argument. */
struct onebit_dispatch {
    u32 group_id[3];
    u32 num_groups[3];
    u32 workgroup_size; /* the packet's workgroup_size_x */
    u32 local_id;       /* SIMT: this thread's work-item (the serial build loops over all) */
    u32 *trap;          /* set to the source's work-group size when the packet's differs */
    void *simt;         /* SIMT: the work-item's place in its group (kernels/gpu/host_simt.c) */
};

/* What the GPU build's s_trap is on the host: the kernel records the size it is written for
 * and runs no lane, so the runner reports the mismatch instead of computing garbage. */
static inline u32 onebit_lanes_ok(const struct onebit_dispatch *d, u32 wg) {
    if (d->workgroup_size == wg)
        return 1;
    __atomic_store_n(d->trap, wg, __ATOMIC_RELAXED);
    return 0;
}

#define GLOBAL
#define GROUP_ID(dim) (onebit_d->group_id[dim])
#define NUM_GROUPS(dim) (onebit_d->num_groups[dim])

#ifdef ONEBIT_SIMT
/* One host thread per work-item (kernels/gpu/host_simt.c): a phase is the thread's own
 * lane, BARRIER() is a real barrier, and LDS is one block shared by the group's threads,
 * poisoned with 0xFF before every group (the runner finds it through the section). */
void onebit_simt_barrier(const struct onebit_dispatch *d);
#define ONEBIT_SYM(name) onebit_simt_##name
#define LDS(type, name, n) static type name[n] __attribute__((section("onebit_simt_lds"), aligned(16)))
#define FOR_LANES(l, wg)                                                                        \
    for (u32 l = onebit_d->local_id, l##_once = onebit_lanes_ok(onebit_d, wg); l##_once; l##_once = 0)
#define BARRIER() onebit_simt_barrier(onebit_d)
#define ONEBIT_EXPORT_WG(name, wg)
#else
/* Serial: a phase is a loop over the lanes, so BARRIER() has nothing left to wait for. */
#define ONEBIT_SYM(name) onebit_host_##name
#define LDS(type, name, n) static _Thread_local type name[n]
#define FOR_LANES(l, wg)                                                                        \
    for (u32 l = 0, l##_n = onebit_lanes_ok(onebit_d, wg) ? (wg) : 0; l < l##_n; l++)
#define BARRIER() ((void)0)
/* The work-group size each kernel is written for, for the Rust spec to be checked against. */
#define ONEBIT_EXPORT_WG(name, wg) const u32 onebit_wg_##name = (wg);
#endif

#define KERNEL(name, wg) ONEBIT_EXPORT_WG(name, wg) void ONEBIT_SYM(name)(const struct onebit_dispatch *onebit_d,

static inline i32 onebit_dot4_u8i8(u32 a, u32 b, i32 acc) {
    for (int i = 0; i < 4; i++)
        acc += (i32)(u8)(a >> (8 * i)) * (i32)(i8)(u8)(b >> (8 * i));
    return acc;
}
static inline float onebit_f16_to_f32(u16 h) {
    u32 sign = (u32)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        bits = sign | ((u32)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}
static inline float onebit_bf16_to_f32(u16 h) {
    u32 bits = (u32)h << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}

#else /* the GPU */

#define GLOBAL __attribute__((address_space(1)))
#define KERNEL(name, wg)                                                                        \
    __attribute__((amdgpu_kernel, visibility("default"))) void name(
#define LDS(type, name, n) static __attribute__((address_space(3), loader_uninitialized)) type name[n]
#define FOR_LANES(l, wg) for (u32 l = onebit_lane(wg), l##_once = 1; l##_once; l##_once = 0)
#define BARRIER()                                                                               \
    do {                                                                                        \
        __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");                                  \
        __builtin_amdgcn_s_barrier();                                                           \
        __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");                                  \
    } while (0)
#define GROUP_ID(dim)                                                                           \
    ((dim) == 0 ? __builtin_amdgcn_workgroup_id_x()                                             \
                : (dim) == 1 ? __builtin_amdgcn_workgroup_id_y() : __builtin_amdgcn_workgroup_id_z())
/* v5 hidden arguments: block_count_x/y/z are the first three u32 of the hidden block. */
#define NUM_GROUPS(dim)                                                                         \
    (((const __attribute__((address_space(4))) u32 *)__builtin_amdgcn_implicitarg_ptr())[dim])

/* v5 hidden arguments: group_size_x is the u16 at byte 12 of the hidden block. */
#define ONEBIT_GROUP_SIZE_X()                                                                   \
    (((const __attribute__((address_space(4))) u16 *)__builtin_amdgcn_implicitarg_ptr())[6])

/* This work-item's lane, after checking the launch: a packet whose workgroup_size_x is not
 * the size the source is written for would index LDS out of range or leave lanes unrun, so
 * the wave traps instead (s_trap 2; the dispatch never completes and the host's watchdog
 * reports the queue). */
static inline u32 onebit_lane(u32 wg) {
    if (ONEBIT_GROUP_SIZE_X() != wg)
        __builtin_trap();
    return __builtin_amdgcn_workitem_id_x();
}

static inline i32 onebit_dot4_u8i8(u32 a, u32 b, i32 acc) {
    /* v_dot4_i32_iu8: a unsigned, b signed (sdot4 does not exist on gfx11). */
    return __builtin_amdgcn_sudot4(0, (i32)a, 1, (i32)b, acc, 0);
}
static inline float onebit_f16_to_f32(u16 h) {
    return (float)__builtin_bit_cast(_Float16, h);
}
static inline float onebit_bf16_to_f32(u16 h) {
    return __builtin_bit_cast(float, (u32)h << 16);
}

#endif

/* A kernel without arguments. */
#ifdef ONEBIT_HOST
#define KERNEL0(name, wg) ONEBIT_EXPORT_WG(name, wg) void ONEBIT_SYM(name)(const struct onebit_dispatch *onebit_d)
#else
#define KERNEL0(name, wg) KERNEL(name, wg) void)
#endif

/* Tree reduction of LDS `arr` within aligned segments of `seg` lanes (a power of two);
 * lane `k * seg` ends up with segment k's result. Starts with a BARRIER(). */
#define TREE_REDUCE(arr, wg, seg, OP)                                                           \
    for (u32 onebit_s = (seg) / 2; onebit_s > 0; onebit_s >>= 1) {                              \
        BARRIER();                                                                              \
        FOR_LANES(onebit_l, wg) {                                                               \
            if (onebit_l % (seg) < onebit_s)                                                    \
                arr[onebit_l] = OP(arr[onebit_l], arr[onebit_l + onebit_s]);                    \
        }                                                                                       \
    }
#define ONEBIT_ADD(a, b) ((a) + (b))

#define ONEBIT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ONEBIT_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif

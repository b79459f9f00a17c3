/* The SIMT host runner's interface (kernels/gpu/host_simt.c); host only. */
#ifndef ONEBIT_HOST_SIMT_H
#define ONEBIT_HOST_SIMT_H
#include <stddef.h>

enum { ONEBIT_SIMT_FREE = 0, ONEBIT_SIMT_FORWARD = 1, ONEBIT_SIMT_REVERSE = 2 };

/* Runs one work-item: calls the SIMT build's kernel with `d` and the arguments in `ctx`. */
typedef void (*onebit_simt_body)(const struct onebit_dispatch *d, void *ctx);

/* Runs `body` for every work-item of a groups[0] x groups[1] x groups[2] grid of
 * work-groups of `wg` threads, under schedule `order`. `skip_barrier` (1-based, 0 for none)
 * makes every work-item skip that barrier of each group: a deliberately broken kernel for
 * tests. `*trap` is where a kernel reports a work-group size it is not written for;
 * `*barriers` (if not NULL) receives how many barriers a work-group passed (skipped included).
 * Returns 0, or an errno value when the threads could not be made (nothing ran then). */
int onebit_simt_launch(const u32 groups[3], u32 wg, u32 order, u32 skip_barrier, onebit_simt_body body,
                       void *ctx, u32 *trap, u32 *barriers);

/* Bytes of LDS the SIMT build declares (all kernels' arrays, poisoned before each group). */
size_t onebit_simt_lds_bytes(void);
#endif

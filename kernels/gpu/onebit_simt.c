/* The SIMT host build of every kernel (host only): the same sources as onebit.c, with
 * work-items on threads (kernels/gpu/host_simt.c runs them). */
#ifndef ONEBIT_SIMT
#define ONEBIT_SIMT
#endif
#include "onebit.c"

/* The one translation unit build.sh compiles: a single TU gives a code object with a single
 * AMDGPU metadata note (lld concatenates one note per input object otherwise). */
#include "ternary.c"
#include "sherry.c"
#include "quant.c"
#include "norm.c"
#include "rope.c"
#include "attention.c"
#include "elementwise.c"
#include "head.c"

// The direct kernels for the portable path (baseline x86-64 / any CPU).
#define FASTCONV_ISA_NS generic
#define FASTCONV_ISA_NAME "generic"
#include "direct_impl.h"

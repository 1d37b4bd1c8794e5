// The direct kernels for AVX2 + FMA (this file alone is compiled with -mavx2 -mfma).
#define FASTCONV_ISA_NS avx2
#define FASTCONV_ISA_NAME "avx2"
#include "direct_impl.h"

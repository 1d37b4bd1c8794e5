// AVX2 + FMA micro-kernels (this file alone is compiled with -mavx2 -mfma).
#include "ukernel.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace fastconv {

namespace {

// Writes one row of the tile: 2 vectors of C, accumulated, bias added, relu'd.
template <typename V, typename Ops>
inline void store_row(typename Ops::T* c, V v0, V v1, bool accumulate,
                      const typename Ops::T* bias, bool relu) {
    if (accumulate) {
        v0 = Ops::add(Ops::load(c), v0);
        v1 = Ops::add(Ops::load(c + Ops::width), v1);
    }
    if (bias) {
        const V b = Ops::broadcast(bias);
        v0 = Ops::add(v0, b);
        v1 = Ops::add(v1, b);
    }
    if (relu) {  // max(0, v) keeps NaN
        v0 = Ops::max(Ops::zero(), v0);
        v1 = Ops::max(Ops::zero(), v1);
    }
    Ops::store(c, v0);
    Ops::store(c + Ops::width, v1);
}

struct F32 {
    using T = float;
    using V = __m256;
    static constexpr int width = 8;
    static V load(const T* p) { return _mm256_loadu_ps(p); }
    static void store(T* p, V v) { _mm256_storeu_ps(p, v); }
    static V broadcast(const T* p) { return _mm256_broadcast_ss(p); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V max(V a, V b) { return _mm256_max_ps(a, b); }
    static V zero() { return _mm256_setzero_ps(); }
};

struct F64 {
    using T = double;
    using V = __m256d;
    static constexpr int width = 4;
    static V load(const T* p) { return _mm256_loadu_pd(p); }
    static void store(T* p, V v) { _mm256_storeu_pd(p, v); }
    static V broadcast(const T* p) { return _mm256_broadcast_sd(p); }
    static V add(V a, V b) { return _mm256_add_pd(a, b); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
    static V max(V a, V b) { return _mm256_max_pd(a, b); }
    static V zero() { return _mm256_setzero_pd(); }
};

// Where row p of the B micro-panel comes from: the packed panel, or two runs
// of the input at per-row offsets.
template <typename Ops>
struct PackedB {
    const typename Ops::T* b;
    typename Ops::V half0(std::ptrdiff_t p) const { return Ops::load(b + p * 2 * Ops::width); }
    typename Ops::V half1(std::ptrdiff_t p) const {
        return Ops::load(b + p * 2 * Ops::width + Ops::width);
    }
};

template <typename Ops>
struct InPlaceB {
    const typename Ops::T *b0, *b1;
    const std::ptrdiff_t* off;
    typename Ops::V half0(std::ptrdiff_t p) const { return Ops::load(b0 + off[p]); }
    typename Ops::V half1(std::ptrdiff_t p) const { return Ops::load(b1 + off[p]); }
};

// Where element (p, r) of the A micro-panel comes from: the packed panel, or
// row r of a row-major matrix.
template <typename Ops>
struct PackedA {
    const typename Ops::T* a;
    typename Ops::V at(std::ptrdiff_t p, int r) const { return Ops::broadcast(a + p * 6 + r); }
};

template <typename Ops>
struct RowsA {
    const typename Ops::T* a;
    std::ptrdiff_t lda;
    typename Ops::V at(std::ptrdiff_t p, int r) const { return Ops::broadcast(a + r * lda + p); }
};

// 6 rows x 2 vectors: 12 accumulators, two B vectors and one A broadcast,
// named one by one so that they stay in registers. The C tile is prefetched
// first: it is read back (accumulate) or written at the end, and an output of
// several MB is out of cache by then (measured 2-8% on the ResNet layers).
// Unrolling the depth loop by 4 gave another 5-9%.
template <typename Ops, typename ASource, typename Source>
inline void gemm_6x2v_from(std::ptrdiff_t kc, ASource a, Source b,
                           typename Ops::T* c, std::ptrdiff_t ldc, bool accumulate,
                           const typename Ops::T* bias, bool relu) {
    using V = typename Ops::V;
    for (int i = 0; i < 6; ++i) {  // each row's first and last element: its one or two lines
        _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 2 * Ops::width - 1),
                     _MM_HINT_T0);
    }
    V c00 = Ops::zero(), c01 = Ops::zero(), c10 = Ops::zero(), c11 = Ops::zero();
    V c20 = Ops::zero(), c21 = Ops::zero(), c30 = Ops::zero(), c31 = Ops::zero();
    V c40 = Ops::zero(), c41 = Ops::zero(), c50 = Ops::zero(), c51 = Ops::zero();
#pragma GCC unroll 4
    for (std::ptrdiff_t p = 0; p < kc; ++p) {
        const V b0 = b.half0(p), b1 = b.half1(p);
        V ai = a.at(p, 0);
        c00 = Ops::fma(ai, b0, c00); c01 = Ops::fma(ai, b1, c01);
        ai = a.at(p, 1);
        c10 = Ops::fma(ai, b0, c10); c11 = Ops::fma(ai, b1, c11);
        ai = a.at(p, 2);
        c20 = Ops::fma(ai, b0, c20); c21 = Ops::fma(ai, b1, c21);
        ai = a.at(p, 3);
        c30 = Ops::fma(ai, b0, c30); c31 = Ops::fma(ai, b1, c31);
        ai = a.at(p, 4);
        c40 = Ops::fma(ai, b0, c40); c41 = Ops::fma(ai, b1, c41);
        ai = a.at(p, 5);
        c50 = Ops::fma(ai, b0, c50); c51 = Ops::fma(ai, b1, c51);
    }
    store_row<V, Ops>(c + 0 * ldc, c00, c01, accumulate, bias ? bias + 0 : nullptr, relu);
    store_row<V, Ops>(c + 1 * ldc, c10, c11, accumulate, bias ? bias + 1 : nullptr, relu);
    store_row<V, Ops>(c + 2 * ldc, c20, c21, accumulate, bias ? bias + 2 : nullptr, relu);
    store_row<V, Ops>(c + 3 * ldc, c30, c31, accumulate, bias ? bias + 3 : nullptr, relu);
    store_row<V, Ops>(c + 4 * ldc, c40, c41, accumulate, bias ? bias + 4 : nullptr, relu);
    store_row<V, Ops>(c + 5 * ldc, c50, c51, accumulate, bias ? bias + 5 : nullptr, relu);
}

template <typename Ops>
void gemm_6x2v(std::ptrdiff_t kc, const typename Ops::T* a, const typename Ops::T* b,
               typename Ops::T* c, std::ptrdiff_t ldc, bool accumulate,
               const typename Ops::T* bias, bool relu) {
    gemm_6x2v_from<Ops>(kc, PackedA<Ops>{a}, PackedB<Ops>{b}, c, ldc, accumulate, bias, relu);
}

template <typename Ops>
void gemm_6x2v_in_place(std::ptrdiff_t kc, const typename Ops::T* a, const typename Ops::T* b0,
                        const typename Ops::T* b1, const std::ptrdiff_t* off,
                        typename Ops::T* c, std::ptrdiff_t ldc, bool accumulate,
                        const typename Ops::T* bias, bool relu) {
    gemm_6x2v_from<Ops>(kc, PackedA<Ops>{a}, InPlaceB<Ops>{b0, b1, off}, c, ldc, accumulate,
                        bias, relu);
}

template <typename Ops>
void gemm_6x2v_rows(std::ptrdiff_t kc, const typename Ops::T* a, std::ptrdiff_t lda,
                    const typename Ops::T* b, typename Ops::T* c, std::ptrdiff_t ldc,
                    bool accumulate, const typename Ops::T* bias, bool relu) {
    gemm_6x2v_from<Ops>(kc, RowsA<Ops>{a, lda}, PackedB<Ops>{b}, c, ldc, accumulate, bias,
                        relu);
}

template <typename Ops>
void gemm_6x2v_rows_in_place(std::ptrdiff_t kc, const typename Ops::T* a, std::ptrdiff_t lda,
                             const typename Ops::T* b0, const typename Ops::T* b1,
                             const std::ptrdiff_t* off, typename Ops::T* c, std::ptrdiff_t ldc,
                             bool accumulate, const typename Ops::T* bias, bool relu) {
    gemm_6x2v_from<Ops>(kc, RowsA<Ops>{a, lda}, InPlaceB<Ops>{b0, b1, off}, c, ldc,
                        accumulate, bias, relu);
}

}  // namespace

UKernel<float> sgemm_ukernel_avx2() {
    return {6, 16, gemm_6x2v<F32>, "f32-gemm-6x16-fma3", gemm_6x2v_in_place<F32>,
            gemm_6x2v_rows<F32>, gemm_6x2v_rows_in_place<F32>};
}

UKernel<double> dgemm_ukernel_avx2() {
    return {6, 8, gemm_6x2v<F64>, "f64-gemm-6x8-fma3", gemm_6x2v_in_place<F64>,
            gemm_6x2v_rows<F64>, gemm_6x2v_rows_in_place<F64>};
}

}  // namespace fastconv

#else  // not an x86-64 build: the portable kernels stand in

namespace fastconv {
UKernel<float> sgemm_ukernel_avx2() { return sgemm_ukernel_generic(); }
UKernel<double> dgemm_ukernel_avx2() { return dgemm_ukernel_generic(); }
}  // namespace fastconv

#endif

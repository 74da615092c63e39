// f32 GEMM on the CPU through CBLAS (OpenBLAS), row-major.
#pragma once
#include <cstdint>

namespace veda {

// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C. Single-threaded: safe to call from pool
// workers (Veda's thread pool owns the parallelism).
void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
              int64_t ldc);

// The same, with the rows of C split across the global thread pool.
void gemm_f32_parallel(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                       float* c, int64_t ldc);

}  // namespace veda

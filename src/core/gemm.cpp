#include "veda/gemm.hpp"

#include <cblas.h>

#include <algorithm>

#include "veda/thread_pool.hpp"

namespace veda {

namespace {
// Veda's pool owns the parallelism; OpenBLAS's own threads would oversubscribe the cores.
const bool kBlasSingleThreaded = [] {
  openblas_set_num_threads(1);
  return true;
}();
}  // namespace

void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
              int64_t ldc) {
  (void)kBlasSingleThreaded;
  if (m <= 0 || n <= 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha, a, int(lda), b,
              int(ldb), beta, c, int(ldc));
}

void gemm_f32_parallel(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                       float* c, int64_t ldc) {
  // Split C's rows into blocks of at least 32 rows, a few per thread for balance.
  int threads = ThreadPool::global().size();
  int64_t rows = std::max<int64_t>(32, (m + 4 * threads - 1) / (4 * threads));
  int64_t blocks = (m + rows - 1) / rows;
  parallel_for(0, blocks, [&](int64_t blk) {
    int64_t r0 = blk * rows, r = std::min(rows, m - r0);
    const float* a_blk = trans_a ? a + r0 : a + r0 * lda;
    gemm_f32(trans_a, trans_b, r, n, k, alpha, a_blk, lda, b, ldb, beta, c + r0 * ldc, ldc);
  });
}

}  // namespace veda

// General matrix multiply for the matmul/linear primitives: C = alpha * op(A) * op(B) + beta * C.
//
// Internal header: it declares the kernel only, so callers never see the SIMD library; the
// implementation (gemm.cpp) is a packed, cache-blocked GotoBLAS/BLIS-style kernel built on xsimd
// and instantiated for float and double.
#pragma once

#include <amari/autodiff/shape.hpp>

namespace amari::kernels {

/// Whether a GEMM operand is used as stored (no) or transposed (yes).
enum class Trans : bool { no = false, yes = true };

/// C = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is m x k, op(B) is k x n, C is m x n.
/// A is stored m x k (lda >= k) when trans_a == no, k x m (lda >= m) when yes; B likewise is stored
/// k x n (ldb >= n) or n x k (ldb >= k); ldc >= n. Pointers need no particular alignment.
/// beta == 0 writes C without reading it (NaN or garbage in C does not propagate); alpha == 0 or
/// k == 0 reads neither A nor B and gives C = beta * C. Any of m, n, k may be 0.
/// Cost: 2*m*n*k flops; above a size threshold it runs on omp_get_max_threads() OpenMP threads
/// (one thread when called from inside a parallel region). The result is bitwise identical for any
/// thread count: every element of C is accumulated by one thread in a fixed order of k.
/// Each calling thread keeps a grow-only packing buffer (thread_local) for reuse across calls.
/// Throws ShapeError on a negative extent or a leading dimension below its minimum.
template <class T>
void gemm(Trans trans_a, Trans trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda,
          const T* b, Index ldb, T beta, T* c, Index ldc);

extern template void gemm<float>(Trans, Trans, Index, Index, Index, float, const float*, Index,
                                 const float*, Index, float, float*, Index);
extern template void gemm<double>(Trans, Trans, Index, Index, Index, double, const double*, Index,
                                  const double*, Index, double, double*, Index);

}  // namespace amari::kernels

// K-FAC's low-rank factors: the rows behind A and the Woodbury form of its damped inverse
// (curvature/detail/factor_rows.hpp has the math).
#include <amari/curvature/detail/factor_rows.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/dense_solve.hpp>

namespace amari::curvature::detail {

using kernels::Trans;

std::vector<double> factor_row_weights(const std::vector<Index>& per_update, double decay) {
  // The k-th update (1-based) keeps eps_k = min(1 - 1/k, decay) of the old average and adds
  // (1 - eps_k) times the mean of its own rows r r^T (M&G 2015, sec. 5; kfac.cpp's moving_average).
  const std::size_t updates = per_update.size();
  std::vector<double> eps(updates);
  for (std::size_t k = 1; k <= updates; ++k) {
    eps[k - 1] = std::min(1.0 - 1.0 / static_cast<double>(k), decay);
  }
  Index total = 0;
  for (Index n : per_update) total += n;
  std::vector<double> w(static_cast<std::size_t>(total));
  double later = 1;  // prod_{k > j} eps_k, built from the last update backwards
  Index end = total;
  for (std::size_t j = updates; j-- > 0;) {
    const Index n = per_update[j];
    const double each = (1.0 - eps[j]) / static_cast<double>(n) * later;
    std::fill(w.begin() + (end - n), w.begin() + end, each);
    end -= n;
    later *= eps[j];
  }
  return w;
}

template <Real T>
FactorRows<T> with_rows_appended(const FactorRows<T>& old, const T* added, Index count, Index d) {
  const Index r0 = old.defined() ? old.rows.dim(0) : 0;
  FactorRows<T> out;
  out.rows = Tensor<T>::uninitialized(Shape{r0 + count, d});
  if (r0 > 0) std::copy(old.rows.data(), old.rows.data() + r0 * d, out.rows.data());
  std::copy(added, added + count * d, out.rows.data() + r0 * d);
  out.per_update = old.per_update;
  out.per_update.push_back(count);
  return out;
}

template <Real T>
std::optional<WoodburyInverse<T>> woodbury_inverse(const FactorRows<T>& rows, double decay,
                                                   double delta) {
  const Index r = rows.rows.dim(0), d = rows.rows.dim(1);
  const std::vector<double> w = factor_row_weights(rows.per_update, decay);
  // C = diag(sqrt(w)) R in double: the r x r system below is the one that can be ill conditioned.
  Tensor<double> c = Tensor<double>::uninitialized(Shape{r, d});
  for (Index i = 0; i < r; ++i) {
    const double s = std::sqrt(w[static_cast<std::size_t>(i)]);
    const T* src = rows.rows.data() + i * d;
    double* dst = c.data() + i * d;
    for (Index j = 0; j < d; ++j) dst[j] = s * static_cast<double>(src[j]);
  }
  // K = (delta I + C C^T)^{-1}: Cholesky reads the lower triangle only.
  Tensor<double> k = Tensor<double>::uninitialized(Shape{r, r});
  kernels::gemm<double>(Trans::no, Trans::yes, r, r, d, 1.0, c.data(), d, c.data(), d, 0.0,
                        k.data(), r);
  for (Index i = 0; i < r; ++i) k[i * r + i] += delta;
  if (cholesky_in_place(k) >= 0) return std::nullopt;
  cholesky_inverse_in_place(k);
  Tensor<double> p = Tensor<double>::uninitialized(Shape{r, d});
  kernels::gemm<double>(Trans::no, Trans::no, r, d, r, 1.0, k.data(), r, c.data(), d, 0.0,
                        p.data(), d);
  WoodburyInverse<T> out;
  out.c = Tensor<T>::uninitialized(Shape{r, d});
  out.p = Tensor<T>::uninitialized(Shape{r, d});
  for (Index i = 0; i < r * d; ++i) {
    out.c[i] = static_cast<T>(c[i]);
    out.p[i] = static_cast<T>(p[i]);
  }
  out.delta = delta;
  return out;
}

template <Real T>
void apply_woodbury_inverse(const WoodburyInverse<T>& inv, const T* x, Index cols, T* out,
                            T* scratch) {
  const Index r = inv.c.dim(0), d = inv.c.dim(1);
  const T scale = static_cast<T>(1.0 / inv.delta);
  // y = P x (r, cols); out = (x - C^T y) / delta.
  kernels::gemm<T>(Trans::no, Trans::no, r, cols, d, T(1), inv.p.data(), d, x, cols, T(0), scratch,
                   cols);
  for (Index i = 0; i < d * cols; ++i) out[i] = scale * x[i];
  kernels::gemm<T>(Trans::yes, Trans::no, d, cols, r, -scale, inv.c.data(), d, scratch, cols, T(1),
                   out, cols);
}

template <Real T>
Tensor<T> dense_woodbury_inverse(const WoodburyInverse<T>& inv) {
  const Index d = inv.c.dim(1);
  Tensor<T> eye(Shape{d, d});
  for (Index i = 0; i < d; ++i) eye[i * d + i] = T(1);
  Tensor<T> out = Tensor<T>::uninitialized(Shape{d, d});
  std::vector<T> scratch(static_cast<std::size_t>(inv.rank() * d));
  apply_woodbury_inverse(inv, eye.data(), d, out.data(), scratch.data());
  return out;
}

#define AMARI_FACTOR_ROWS(T)                                                                     \
  template FactorRows<T> with_rows_appended<T>(const FactorRows<T>&, const T*, Index, Index);  \
  template std::optional<WoodburyInverse<T>> woodbury_inverse<T>(const FactorRows<T>&, double, \
                                                                 double);                      \
  template void apply_woodbury_inverse<T>(const WoodburyInverse<T>&, const T*, Index, T*, T*); \
  template Tensor<T> dense_woodbury_inverse<T>(const WoodburyInverse<T>&);
AMARI_FACTOR_ROWS(float)
AMARI_FACTOR_ROWS(double)
#undef AMARI_FACTOR_ROWS

}  // namespace amari::curvature::detail

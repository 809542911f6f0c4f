// layer_norm: per row of x (..., D) (the last axis): mu = mean x, v = mean (x - mu)^2 (biased),
// r = 1/sqrt(v + eps),  x_hat = (x - mu) r,  y = gamma x_hat + beta with gamma, beta (D).
// With <.> the mean over the D entries of a row (per-row scalars broadcast along it):
//   JVP   d x_hat = r (dx - <dx> - x_hat <x_hat dx>)            (d mu = <dx>, dr = -r^2 <x_hat dx>)
//         dy      = gamma d x_hat + dgamma x_hat + dbeta
//   VJP   xbar   += r P(g),  g = ybar gamma,  P(a) = a - <a> - x_hat <x_hat a>
//                   (= r/D (D g - sum g - x_hat sum(g x_hat)); P is symmetric)
//         gammabar += sum over rows of ybar x_hat,   betabar += sum over rows of ybar
//   2nd   differentiating xbar = r P(g) along (dx, dgamma), ybar fixed, with s = <x_hat dx>:
//         dr P(g) + r dP(g) + r P(dg), where dr = -r^2 s, dg = ybar dgamma and
//         dP(g) = -d x_hat <x_hat g> - x_hat <d x_hat g>, so
//         xbar_dot     += r [P(h) - <x_hat g> d x_hat - <d x_hat g> x_hat],  h = dg - r s g
//         gammabar_dot += sum over rows of ybar d x_hat,   betabar_dot: none
// Residuals: x and gamma (save::x0 | x1: handles, no copy), and mu, r per row kept in the op
// struct (the tape's copy shares them); x_hat is recomputed per row. Every rule works row by row
// with the row in cache (the row sums, then the row's result), so each is one pass over memory;
// the sums over rows (gammabar, betabar) use a fixed row partition (kernels::column_sums), so the
// results are bitwise the same at any thread count.
#include <cmath>

#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

template <Real T>
struct LayerNorm {
  static constexpr const char* name = "layer_norm";
  static constexpr int arity = 3;
  static constexpr unsigned saves = save::x0 | save::x1;
  double eps = 1e-5;
  // Per-row statistics, written by the primal (shared with the tape's copy of the op).
  struct Stats {
    std::vector<T> mean, rstd;
  };
  std::shared_ptr<Stats> stats = std::make_shared<Stats>();

  Shape output_shape(const Shape& x, const Shape& gamma, const Shape& beta) const {
    const std::string got =
        "; got x " + x.str() + ", gamma " + gamma.str() + ", beta " + beta.str();
    if (x.rank() < 1 || gamma.rank() != 1 || beta.rank() != 1 || gamma[0] != x[x.rank() - 1] ||
        beta[0] != x[x.rank() - 1]) {
      throw ShapeError("layer_norm: expects x (..., D) with gamma and beta (D)" + got);
    }
    if (x[x.rank() - 1] == 0)
      throw ShapeError("layer_norm: cannot normalize over an empty last axis" + got);
    return x;
  }

  static double mean(Index d, const T* a) { return kernels::sum(d, a) / static_cast<double>(d); }
  static double mean_dot(Index d, const T* a, const T* b) {
    return kernels::dot(d, a, b) / static_cast<double>(d);
  }
  // buf = (x_row - mu) r.
  void x_hat(Index row, Index d, const T* x, T* buf) const {
    const T mu = stats->mean[static_cast<std::size_t>(row)],
            r = stats->rstd[static_cast<std::size_t>(row)];
    const T* xr = x + row * d;
    for (Index j = 0; j < d; ++j) buf[j] = (xr[j] - mu) * r;
  }
  // f(r0, r1) over blocks of rows, in parallel above the threshold.
  template <class F>
  static void for_row_blocks(Index rows, Index d, const F& f) {
    const Index per = kernels::rows_per_block(d), blocks = (rows + per - 1) / per;
    kernels::parallel_for(blocks, rows * d,
                          [&](Index b) { f(b * per, std::min(rows, (b + 1) * per)); });
  }

  void primal(const Tensor<T>& x, const Tensor<T>& gamma, const Tensor<T>& beta,
              Tensor<T>& y) const {
    const Index d = x.shape()[x.rank() - 1], rows = x.size() / d;
    stats->mean.resize(static_cast<std::size_t>(rows));
    stats->rstd.resize(static_cast<std::size_t>(rows));
    for_row_blocks(rows, d, [&](Index r0, Index r1) {
      for (Index row = r0; row < r1; ++row) {
        const T* xr = x.data() + row * d;
        T* yr = y.data() + row * d;
        const T mu = static_cast<T>(mean(d, xr));
        for (Index j = 0; j < d; ++j) yr[j] = xr[j] - mu;
        const T r = static_cast<T>(1.0 / std::sqrt(mean_dot(d, yr, yr) + eps));
        for (Index j = 0; j < d; ++j) yr[j] = yr[j] * r * gamma[j] + beta[j];
        stats->mean[static_cast<std::size_t>(row)] = mu;
        stats->rstd[static_cast<std::size_t>(row)] = r;
      }
    });
  }

  void jvp(const detail::Saved<T, 3>& s, const Tensor<T>* dx, const Tensor<T>* dgamma,
           const Tensor<T>* dbeta, Tensor<T>& dy) const {
    const Tensor<T>& x = s.x[0];
    const T* gamma = s.x[1].data();
    const Index d = x.shape()[x.rank() - 1], rows = x.size() / d;
    for_row_blocks(rows, d, [&](Index r0, Index r1) {
      std::vector<T> xh(static_cast<std::size_t>(d));
      for (Index row = r0; row < r1; ++row) {
        x_hat(row, d, x.data(), xh.data());
        T* o = dy.data() + row * d;
        for (Index j = 0; j < d; ++j) o[j] = dbeta ? (*dbeta)[j] : T(0);
        if (dgamma) {
          for (Index j = 0; j < d; ++j) o[j] += (*dgamma)[j] * xh[static_cast<std::size_t>(j)];
        }
        if (dx) {
          const T* dr = dx->data() + row * d;
          const T r = stats->rstd[static_cast<std::size_t>(row)];
          const T a1 = static_cast<T>(mean(d, dr)), a2 = static_cast<T>(mean_dot(d, xh.data(), dr));
          for (Index j = 0; j < d; ++j)
            o[j] += gamma[j] * r * (dr[j] - a1 - xh[static_cast<std::size_t>(j)] * a2);
        }
      }
    });
  }

  void vjp(const detail::Saved<T, 3>& s, const Tensor<T>& ybar, Tensor<T>* xbar,
           Tensor<T>* gammabar, Tensor<T>* betabar) const {
    const Tensor<T>& x = s.x[0];
    const T* gamma = s.x[1].data();
    const Index d = x.shape()[x.rank() - 1], rows = x.size() / d;
    std::vector<double> cols(static_cast<std::size_t>(2 * d));
    kernels::column_sums<2, T>(
        rows, d,
        [&](Index r0, Index r1, T* acc) {
          std::vector<T> xh(static_cast<std::size_t>(d)), g(static_cast<std::size_t>(d));
          for (Index row = r0; row < r1; ++row) {
            x_hat(row, d, x.data(), xh.data());
            const T* yb = ybar.data() + row * d;
            for (Index j = 0; j < d; ++j) {
              acc[j] += yb[j] * xh[static_cast<std::size_t>(j)];
              acc[d + j] += yb[j];
            }
            if (!xbar) continue;
            for (Index j = 0; j < d; ++j) g[static_cast<std::size_t>(j)] = yb[j] * gamma[j];
            const T r = stats->rstd[static_cast<std::size_t>(row)];
            const T mg = static_cast<T>(mean(d, g.data())),
                    mxg = static_cast<T>(mean_dot(d, xh.data(), g.data()));
            T* o = xbar->data() + row * d;
            for (Index j = 0; j < d; ++j) {
              const std::size_t k = static_cast<std::size_t>(j);
              o[j] += r * (g[k] - mg - xh[k] * mxg);
            }
          }
        },
        cols.data());
    for (Index j = 0; j < d; ++j) {
      if (gammabar) (*gammabar)[j] += static_cast<T>(cols[static_cast<std::size_t>(j)]);
      if (betabar) (*betabar)[j] += static_cast<T>(cols[static_cast<std::size_t>(d + j)]);
    }
  }

  void vjp_tangent(const detail::Saved<T, 3>& s, const Tensor<T>* dx, const Tensor<T>* dgamma,
                   const Tensor<T>*, const Tensor<T>&, const Tensor<T>& ybar, Tensor<T>* xbar_dot,
                   Tensor<T>* gammabar_dot, Tensor<T>*) const {
    if (!dx && !dgamma) return;
    if (!xbar_dot && !(gammabar_dot && dx)) return;
    const Tensor<T>& x = s.x[0];
    const T* gamma = s.x[1].data();
    const Index d = x.shape()[x.rank() - 1], rows = x.size() / d;
    std::vector<double> cols(static_cast<std::size_t>(d));
    kernels::column_sums<1, T>(
        rows, d,
        [&](Index r0, Index r1, T* acc) {
          const std::size_t n = static_cast<std::size_t>(d);
          std::vector<T> xh(n), dxh(n, T(0)), g(n), h(n);
          for (Index row = r0; row < r1; ++row) {
            x_hat(row, d, x.data(), xh.data());
            const T r = stats->rstd[static_cast<std::size_t>(row)];
            const T* yb = ybar.data() + row * d;
            T sdx = 0;  // <x_hat dx>
            if (dx) {
              const T* dr = dx->data() + row * d;
              const T a1 = static_cast<T>(mean(d, dr));
              sdx = static_cast<T>(mean_dot(d, xh.data(), dr));
              for (std::size_t k = 0; k < n; ++k) dxh[k] = r * (dr[k] - a1 - xh[k] * sdx);
              for (std::size_t k = 0; k < n; ++k) acc[k] += yb[k] * dxh[k];
            }
            if (!xbar_dot) continue;
            for (std::size_t k = 0; k < n; ++k) {
              g[k] = yb[k] * gamma[k];
              h[k] = (dgamma ? yb[k] * (*dgamma)[static_cast<Index>(k)] : T(0)) - r * sdx * g[k];
            }
            const T sg = static_cast<T>(mean_dot(d, xh.data(), g.data()));
            const T t = dx ? static_cast<T>(mean_dot(d, dxh.data(), g.data())) : T(0);
            const T mh = static_cast<T>(mean(d, h.data())),
                    mxh = static_cast<T>(mean_dot(d, xh.data(), h.data()));
            T* o = xbar_dot->data() + row * d;
            for (std::size_t k = 0; k < n; ++k)
              o[k] += r * (h[k] - mh - xh[k] * mxh - sg * dxh[k] - t * xh[k]);
          }
        },
        cols.data());
    if (gammabar_dot && dx) {
      for (Index j = 0; j < d; ++j)
        (*gammabar_dot)[j] += static_cast<T>(cols[static_cast<std::size_t>(j)]);
    }
  }
};

}  // namespace ops

template <Value V>
V layer_norm(const V& x, const V& gamma, const V& beta, double eps) {
  using T = typename V::value_type;
  if (!(eps >= 0)) throw ValueError("layer_norm: eps must be >= 0, got " + std::to_string(eps));
  return detail::apply(ops::LayerNorm<T>{.eps = eps}, x, gamma, beta);
}
#define AMARI_INSTANTIATE(V) template V layer_norm<V>(const V&, const V&, const V&, double);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari

// batch_norm (training mode): x viewed as (M, C), M = all axes but the last; per channel c, over
// the M values of the batch: mu = mean x, v = mean (x - mu)^2 (biased), r = 1/sqrt(v + eps),
//   x_hat = (x - mu) r,   y = gamma x_hat + beta.
// With <.> the mean over the M values of a channel (per-channel scalars broadcast back):
//   JVP   d x_hat = r (dx - <dx> - x_hat <x_hat dx>)            (d mu = <dx>, dr = -r^2 <x_hat dx>)
//         dy      = gamma d x_hat + dgamma x_hat + dbeta
//   VJP   xbar   += r P(g),  g = ybar gamma,  P(a) = a - <a> - x_hat <x_hat a>
//                   (= r/M (M g - sum g - x_hat sum(g x_hat)); P is symmetric, so this is the JVP
//                   transposed)
//         gammabar += sum ybar x_hat,   betabar += sum ybar
//   2nd   differentiating xbar = r P(g) along (dx, dgamma), ybar fixed, with s = <x_hat dx>:
//         xbar_dot  += r [P(dg - r s g) - <x_hat g> d x_hat - <d x_hat g> x_hat],  dg = ybar dgamma
//         gammabar_dot += sum ybar d x_hat,   betabar_dot: none (betabar does not depend on x)
//         Per channel this is A ybar + B dx + C x_hat + D with scalars from five channel means:
//         a1 = <dx>, a2 = <x_hat dx>, b1 = <ybar>, b2 = <x_hat ybar>, c = <dx ybar>;
//         k = dgamma - r gamma a2, t = r gamma (c - a1 b1 - a2 b2):
//         A = r k, B = -r^2 gamma b2, C = -r k b2 + r^2 gamma b2 a2 - r t, D = -r k b1 + r^2 gamma
//         b2 a1, gammabar_dot += M r (c - a1 b1 - a2 b2).
// Residuals: x and gamma (save::x0 | x1: handles, no copy), and mu, r per channel kept in the op
// struct (the tape's copy shares them); x_hat = x r - mu r is recomputed inline. Passes over
// memory: the primal reads x once for the statistics (blocks of rows in cache: exact two-pass mean
// and squared deviations per block, combined with Chan et al.'s pairwise update in double) and
// once to write y; each rule is one pass of per-channel sums and one pass writing its result.
// Every channel sum uses a fixed partition of the rows (kernels::column_sums): bitwise the same
// at any thread count.
#include <cmath>

#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/ops/primitive.hpp>

namespace amari {
namespace ops {

template <Real T>
struct BatchNorm {
  static constexpr const char* name = "batch_norm";
  static constexpr int arity = 3;
  static constexpr unsigned saves = save::x0 | save::x1;
  double eps = 1e-5;
  // Per-channel statistics, written by the primal (shared with the tape's copy of the op).
  struct Stats {
    Tensor<T> mean, var, rstd;  // (C)
  };
  std::shared_ptr<Stats> stats = std::make_shared<Stats>();

  Shape output_shape(const Shape& x, const Shape& gamma, const Shape& beta) const {
    const std::string got =
        "; got x " + x.str() + ", gamma " + gamma.str() + ", beta " + beta.str();
    if (x.rank() < 2 || gamma.rank() != 1 || beta.rank() != 1 || gamma[0] != x[x.rank() - 1] ||
        beta[0] != x[x.rank() - 1]) {
      throw ShapeError("batch_norm: expects x (N, C) or (N, H, W, C) with gamma and beta (C)" +
                       got);
    }
    if (x.numel() == 0) {
      throw ShapeError(
          "batch_norm: x has no channels or an empty batch: statistics need at least one value per "
          "channel" +
          got);
    }
    return x;
  }

  // (M, C) view.
  static Index channels(const Tensor<T>& x) { return x.shape()[x.rank() - 1]; }
  static Index rows(const Tensor<T>& x) { return x.size() / channels(x); }

  // mu, biased variance and r per channel: per block of rows an exact two-pass mean and sum of
  // squared deviations (the block is in cache), then blocks merged in order with
  // mean += d nb / n, M2 += M2b + d^2 na nb / n (Chan, Golub, LeVeque 1979), in double.
  void compute_stats(const Tensor<T>& x) const {
    const Index m = rows(x), c = channels(x);
    const Index per = kernels::rows_per_block(c), blocks = (m + per - 1) / per;
    std::vector<T> part(static_cast<std::size_t>(blocks * 2 * c));
    kernels::parallel_for(blocks, x.size(), [&](Index b) {
      const Index r0 = b * per, r1 = std::min(m, r0 + per);
      T* mean = part.data() + b * 2 * c;
      T* m2 = mean + c;
      std::fill(mean, mean + 2 * c, T(0));
      for (Index r = r0; r < r1; ++r) {
        const T* xr = x.data() + r * c;
        for (Index ch = 0; ch < c; ++ch) mean[ch] += xr[ch];
      }
      const T inv = T(1) / static_cast<T>(r1 - r0);
      for (Index ch = 0; ch < c; ++ch) mean[ch] *= inv;
      for (Index r = r0; r < r1; ++r) {
        const T* xr = x.data() + r * c;
        for (Index ch = 0; ch < c; ++ch) {
          const T d = xr[ch] - mean[ch];
          m2[ch] += d * d;
        }
      }
    });
    std::vector<double> mean(static_cast<std::size_t>(c), 0.0),
        m2(static_cast<std::size_t>(c), 0.0);
    double n = 0;
    for (Index b = 0; b < blocks; ++b) {
      const double nb = static_cast<double>(std::min(m, (b + 1) * per) - b * per), tot = n + nb;
      const T* pm = part.data() + b * 2 * c;
      for (Index ch = 0; ch < c; ++ch) {
        const std::size_t k = static_cast<std::size_t>(ch);
        const double d = static_cast<double>(pm[ch]) - mean[k];
        mean[k] += d * nb / tot;
        m2[k] += static_cast<double>(pm[c + ch]) + d * d * n * nb / tot;
      }
      n = tot;
    }
    stats->mean = Tensor<T>::uninitialized(Shape{c});
    stats->var = Tensor<T>::uninitialized(Shape{c});
    stats->rstd = Tensor<T>::uninitialized(Shape{c});
    for (Index ch = 0; ch < c; ++ch) {
      const std::size_t k = static_cast<std::size_t>(ch);
      const double var = m2[k] / static_cast<double>(m);
      stats->mean[ch] = static_cast<T>(mean[k]);
      stats->var[ch] = static_cast<T>(var);
      stats->rstd[ch] = static_cast<T>(1.0 / std::sqrt(var + eps));
    }
  }

  void primal(const Tensor<T>& x, const Tensor<T>& gamma, const Tensor<T>& beta,
              Tensor<T>& y) const {
    compute_stats(x);
    const Index c = channels(x);
    // y = gamma (x - mu) r + beta = a x + b.
    std::vector<T> a(static_cast<std::size_t>(c)), b(static_cast<std::size_t>(c));
    for (Index ch = 0; ch < c; ++ch) {
      a[static_cast<std::size_t>(ch)] = gamma[ch] * stats->rstd[ch];
      b[static_cast<std::size_t>(ch)] =
          beta[ch] - stats->mean[ch] * a[static_cast<std::size_t>(ch)];
    }
    const Index m = rows(x), per = kernels::rows_per_block(c), blocks = (m + per - 1) / per;
    kernels::parallel_for(blocks, m * c, [&](Index blk) {
      for (Index row = blk * per; row < std::min(m, (blk + 1) * per); ++row) {
        const T* xr = x.data() + row * c;
        T* yr = y.data() + row * c;
        for (Index ch = 0; ch < c; ++ch)
          yr[ch] = a[static_cast<std::size_t>(ch)] * xr[ch] + b[static_cast<std::size_t>(ch)];
      }
    });
  }

  // Channel means of the terms the rules need; x_hat = x r + q with q = -mu r.
  struct Sums {
    std::vector<double> mean_dx, mean_xh_dx, mean_yb, mean_xh_yb, mean_dx_yb;
  };
  // Means over the rows of each of: dx, x_hat dx (if dx), ybar, x_hat ybar (if yb), dx ybar (both).
  Sums channel_means(const Tensor<T>& x, const Tensor<T>* dx, const Tensor<T>* yb) const {
    const Index m = rows(x), c = channels(x);
    const T* r = stats->rstd.data();
    const T* mu = stats->mean.data();
    constexpr int K = 5;
    std::vector<double> out(static_cast<std::size_t>(K * c));
    // The loop is instantiated per combination of present inputs, so its body has no branches.
    auto sums = [&]<bool kDx, bool kYb>(std::bool_constant<kDx>, std::bool_constant<kYb>) {
      kernels::column_sums<K, T>(
          m, c,
          [&](Index r0, Index r1, T* acc) {
            for (Index row = r0; row < r1; ++row) {
              const T* xr = x.data() + row * c;
              const T* dr = kDx ? dx->data() + row * c : nullptr;
              const T* yr = kYb ? yb->data() + row * c : nullptr;
              for (Index ch = 0; ch < c; ++ch) {
                const T xh = (xr[ch] - mu[ch]) * r[ch];
                if constexpr (kDx) {
                  acc[ch] += dr[ch];
                  acc[c + ch] += xh * dr[ch];
                }
                if constexpr (kYb) {
                  acc[2 * c + ch] += yr[ch];
                  acc[3 * c + ch] += xh * yr[ch];
                }
                if constexpr (kDx && kYb) acc[4 * c + ch] += dr[ch] * yr[ch];
              }
            }
          },
          out.data());
    };
    if (dx && yb) {
      sums(std::true_type{}, std::true_type{});
    } else if (dx) {
      sums(std::true_type{}, std::false_type{});
    } else {
      sums(std::false_type{}, std::true_type{});
    }
    const double inv = 1.0 / static_cast<double>(m);
    for (double& v : out) v *= inv;
    Sums s;
    auto part = [&](int k) {
      return std::vector<double>(out.begin() + k * c, out.begin() + (k + 1) * c);
    };
    s.mean_dx = part(0), s.mean_xh_dx = part(1), s.mean_yb = part(2), s.mean_xh_yb = part(3);
    s.mean_dx_yb = part(4);
    return s;
  }

  // out (+)= A ybar + B dx + C x_hat + D per channel, with x_hat = x r - mu r folded into B x + D.
  template <bool kAccumulate>
  void write(const Tensor<T>& x, const std::vector<double>& A, const Tensor<T>* yb,
             const std::vector<double>& B, const Tensor<T>* dx, const std::vector<double>& C,
             const std::vector<double>& D, Tensor<T>& out) const {
    const Index c = channels(x);
    // Coefficients of ybar, dx, x and the constant; the x_hat term becomes C r x - C r mu.
    std::vector<T> u(static_cast<std::size_t>(c)), v(static_cast<std::size_t>(c)),
        wx(static_cast<std::size_t>(c)), w(static_cast<std::size_t>(c));
    for (Index ch = 0; ch < c; ++ch) {
      const std::size_t k = static_cast<std::size_t>(ch);
      const double r = stats->rstd[ch], mu = stats->mean[ch];
      u[k] = static_cast<T>(A[k]);
      v[k] = static_cast<T>(B[k]);
      wx[k] = static_cast<T>(C[k] * r);
      w[k] = static_cast<T>(D[k] - C[k] * r * mu);
    }
    const Index m = rows(x);
    const Index per = kernels::rows_per_block(c), blocks = (m + per - 1) / per;
    auto pass = [&]<bool kYb, bool kDx>(std::bool_constant<kYb>, std::bool_constant<kDx>) {
      kernels::parallel_for(blocks, m * c, [&](Index b) {
        for (Index row = b * per; row < std::min(m, (b + 1) * per); ++row) {
          T* o = out.data() + row * c;
          const T* xr = x.data() + row * c;
          const T* yr = kYb ? yb->data() + row * c : nullptr;
          const T* dr = kDx ? dx->data() + row * c : nullptr;
          for (Index ch = 0; ch < c; ++ch) {
            T val = wx[ch] * xr[ch] + w[ch];
            if constexpr (kYb) val += u[ch] * yr[ch];
            if constexpr (kDx) val += v[ch] * dr[ch];
            if constexpr (kAccumulate) {
              o[ch] += val;
            } else {
              o[ch] = val;
            }
          }
        }
      });
    };
    if (yb && dx) {
      pass(std::true_type{}, std::true_type{});
    } else if (yb) {
      pass(std::true_type{}, std::false_type{});
    } else if (dx) {
      pass(std::false_type{}, std::true_type{});
    } else {
      pass(std::false_type{}, std::false_type{});
    }
  }

  void jvp(const detail::Saved<T, 3>& s, const Tensor<T>* dx, const Tensor<T>* dgamma,
           const Tensor<T>* dbeta, Tensor<T>& dy) const {
    const Tensor<T>& x = s.x[0];
    const Tensor<T>& gamma = s.x[1];
    const Index c = channels(x);
    const Sums m = dx ? channel_means(x, dx, nullptr) : Sums{};
    // dy = gamma r dx + (dgamma - gamma r a2) x_hat + (dbeta - gamma r a1).
    std::vector<double> A(static_cast<std::size_t>(c), 0.0), B(A), C(A), D(A);
    for (Index ch = 0; ch < c; ++ch) {
      const std::size_t k = static_cast<std::size_t>(ch);
      const double gr = static_cast<double>(gamma[ch]) * stats->rstd[ch];
      const double a1 = dx ? m.mean_dx[k] : 0.0, a2 = dx ? m.mean_xh_dx[k] : 0.0;
      B[k] = dx ? gr : 0.0;
      C[k] = (dgamma ? static_cast<double>((*dgamma)[ch]) : 0.0) - gr * a2;
      D[k] = (dbeta ? static_cast<double>((*dbeta)[ch]) : 0.0) - gr * a1;
    }
    write<false>(x, A, nullptr, B, dx, C, D, dy);
  }

  void vjp(const detail::Saved<T, 3>& s, const Tensor<T>& ybar, Tensor<T>* xbar,
           Tensor<T>* gammabar, Tensor<T>* betabar, detail::Overwrite ow) const {
    const Tensor<T>& x = s.x[0];
    const Tensor<T>& gamma = s.x[1];
    const Index c = channels(x);
    const double count = static_cast<double>(rows(x));
    const Sums m = channel_means(x, nullptr, &ybar);
    for (Index ch = 0; ch < c; ++ch) {
      const std::size_t k = static_cast<std::size_t>(ch);
      const T gb = static_cast<T>(count * m.mean_xh_yb[k]), bb = static_cast<T>(count * m.mean_yb[k]);
      if (gammabar) (*gammabar)[ch] = ow[1] ? gb : (*gammabar)[ch] + gb;
      if (betabar) (*betabar)[ch] = ow[2] ? bb : (*betabar)[ch] + bb;
    }
    if (!xbar) return;
    // xbar += gamma r (ybar - b1 - x_hat b2).
    std::vector<double> A(static_cast<std::size_t>(c)), B(A), C(A), D(A);
    for (Index ch = 0; ch < c; ++ch) {
      const std::size_t k = static_cast<std::size_t>(ch);
      const double gr = static_cast<double>(gamma[ch]) * stats->rstd[ch];
      A[k] = gr, B[k] = 0, C[k] = -gr * m.mean_xh_yb[k], D[k] = -gr * m.mean_yb[k];
    }
    if (ow[0]) {
      write<false>(x, A, &ybar, B, nullptr, C, D, *xbar);
    } else {
      write<true>(x, A, &ybar, B, nullptr, C, D, *xbar);
    }
  }

  void vjp_tangent(const detail::Saved<T, 3>& s, const Tensor<T>* dx, const Tensor<T>* dgamma,
                   const Tensor<T>*, const Tensor<T>&, const Tensor<T>& ybar, Tensor<T>* xbar_dot,
                   Tensor<T>* gammabar_dot, Tensor<T>*) const {
    if (!xbar_dot && !(gammabar_dot && dx)) return;
    if (!dx && !dgamma) return;
    const Tensor<T>& x = s.x[0];
    const Tensor<T>& gamma = s.x[1];
    const Index c = channels(x);
    const double count = static_cast<double>(rows(x));
    const Sums m = channel_means(x, dx, &ybar);
    std::vector<double> A(static_cast<std::size_t>(c)), B(A), C(A), D(A);
    for (Index ch = 0; ch < c; ++ch) {
      const std::size_t k = static_cast<std::size_t>(ch);
      const double r = stats->rstd[ch], g = gamma[ch];
      const double a1 = dx ? m.mean_dx[k] : 0.0, a2 = dx ? m.mean_xh_dx[k] : 0.0,
                   cc = dx ? m.mean_dx_yb[k] : 0.0;
      const double b1 = m.mean_yb[k], b2 = m.mean_xh_yb[k];
      const double dg = dgamma ? static_cast<double>((*dgamma)[ch]) : 0.0;
      const double kk = dg - r * g * a2, cov = cc - a1 * b1 - a2 * b2, t = r * g * cov;
      if (gammabar_dot && dx) (*gammabar_dot)[ch] += static_cast<T>(count * r * cov);
      A[k] = r * kk;
      B[k] = -r * r * g * b2;
      C[k] = -r * kk * b2 + r * r * g * b2 * a2 - r * t;
      D[k] = -r * kk * b1 + r * r * g * b2 * a1;
    }
    if (xbar_dot) write<true>(x, A, &ybar, B, dx, C, D, *xbar_dot);
  }
};

}  // namespace ops

template <Value V>
V batch_norm(const V& x, const V& gamma, const V& beta, double eps,
             BatchStats<typename V::value_type>* stats) {
  using T = typename V::value_type;
  if (!(eps >= 0)) throw ValueError("batch_norm: eps must be >= 0, got " + std::to_string(eps));
  ops::BatchNorm<T> op{.eps = eps};
  V y = detail::apply(op, x, gamma, beta);
  if (stats) {
    stats->mean = op.stats->mean.clone();
    stats->variance = op.stats->var.clone();
    stats->count = x.shape().numel() / x.shape()[x.shape().rank() - 1];
  }
  return y;
}
#define AMARI_INSTANTIATE(V)                                     \
  template V batch_norm<V>(const V&, const V&, const V&, double, \
                           BatchStats<typename V::value_type>*);
AMARI_FOR_EACH_VALUE_TYPE(AMARI_INSTANTIATE)
#undef AMARI_INSTANTIATE

}  // namespace amari

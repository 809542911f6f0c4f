// The image, normalization and indexing primitives against their definitions: direct loops in
// double for pooling and layer norm, the statistics batch norm promises (and its coupling across
// examples), dropout's mask across modes, rules, keys and threads, and typed errors for hostile
// inputs. The registry (cases_shape.cpp, cases_norm.cpp) checks the derivative rules themselves.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include <omp.h>

#include <amari/autodiff/autodiff.hpp>

#include "support/matchers.hpp"
#include "support/random.hpp"

using namespace amari;
using namespace amari::test;

namespace {

// y and xbar = J^T u of f at x, through the tape.
template <class F>
std::pair<Tensor<double>, Tensor<double>> value_and_vjp(F f, const Tensor<double>& x,
                                                        const Tensor<double>& u) {
  Tape<double> tape;
  const Var<double> xs[] = {tape.variable(x)};
  const Var<double> ys[] = {f(xs[0])};
  const Tensor<double> us[] = {u};
  return {ys[0].value(), tape.vjp(ys, us, xs)[0]};
}

struct PoolRef {
  Tensor<double> y, xbar;
};

// Direct loops: every output element scans its full window, padded positions included.
PoolRef pool_reference(bool is_max, const Tensor<double>& x, const Tensor<double>& u,
                       const Pool2dOptions& o) {
  const Index n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const Index sh = o.stride[0] ? o.stride[0] : o.kernel[0],
              sw = o.stride[1] ? o.stride[1] : o.kernel[1];
  const Index oh = (h + 2 * o.padding[0] - o.kernel[0]) / sh + 1,
              ow = (w + 2 * o.padding[1] - o.kernel[1]) / sw + 1;
  PoolRef r{Tensor<double>(Shape{n, oh, ow, c}), Tensor<double>(x.shape())};
  for (Index b = 0; b < n; ++b)
    for (Index i = 0; i < oh; ++i)
      for (Index j = 0; j < ow; ++j)
        for (Index ch = 0; ch < c; ++ch) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0;
          Index bi = -1, bj = -1, count = 0;
          for (Index a = 0; a < o.kernel[0]; ++a)
            for (Index e = 0; e < o.kernel[1]; ++e) {
              const Index hi = i * sh - o.padding[0] + a, wi = j * sw - o.padding[1] + e;
              if (hi < 0 || hi >= h || wi < 0 || wi >= w) continue;  // padding: -inf / 0
              const double v = x.at(b, hi, wi, ch);
              ++count;
              sum += v;
              if (v > best) best = v, bi = hi, bj = wi;
            }
          const double div =
              o.count_include_pad ? static_cast<double>(o.kernel[0] * o.kernel[1]) : double(count);
          const double ub = u.at(b, i, j, ch);
          r.y.at(b, i, j, ch) = is_max ? best : sum / div;
          if (is_max) {
            r.xbar.at(b, bi, bj, ch) += ub;
          } else {
            for (Index a = 0; a < o.kernel[0]; ++a)
              for (Index e = 0; e < o.kernel[1]; ++e) {
                const Index hi = i * sh - o.padding[0] + a, wi = j * sw - o.padding[1] + e;
                if (hi >= 0 && hi < h && wi >= 0 && wi < w) r.xbar.at(b, hi, wi, ch) += ub / div;
              }
          }
        }
  return r;
}

Pool2dOptions pool(std::array<Index, 2> k, std::array<Index, 2> s, std::array<Index, 2> p,
                   bool include = true) {
  Pool2dOptions o;
  o.kernel = k, o.stride = s, o.padding = p, o.count_include_pad = include;
  return o;
}

template <class F>
void with_threads(int n, F f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(before);
}

bool bitwise_equal(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

}  // namespace

TEST_CASE(
    "max_pool2d and avg_pool2d: output and VJP equal direct window loops (padding, stride, "
    "count_include_pad)",
    "[autodiff][pool]") {
  Rng rng(3);
  const Tensor<double> x = uniform_tensor<double>(Shape{2, 7, 6, 3}, rng);
  for (const auto& o :
       {pool({2, 2}, {0, 0}, {0, 0}), pool({3, 3}, {2, 2}, {1, 1}), pool({3, 2}, {1, 3}, {1, 1}),
        pool({2, 2}, {3, 3}, {1, 0}), pool({1, 1}, {2, 1}, {0, 0}), pool({5, 4}, {1, 1}, {2, 2})}) {
    for (bool include : {true, false}) {
      Pool2dOptions oo = o;
      oo.count_include_pad = include;
      INFO("kernel " << o.kernel[0] << "x" << o.kernel[1] << " stride " << o.stride[0] << ","
                     << o.stride[1] << " padding " << o.padding[0] << "," << o.padding[1]
                     << " include " << include);
      const Tensor<double> probe = max_pool2d(x, oo);
      const Tensor<double> u = uniform_tensor<double>(probe.shape(), rng);
      const PoolRef rm = pool_reference(true, x, u, oo);
      const auto [ym, xbm] =
          value_and_vjp([&](const Var<double>& v) { return max_pool2d(v, oo); }, x, u);
      CHECK(max_abs_diff(ym, rm.y) == 0.0);
      CHECK(max_abs_diff(xbm, rm.xbar) < 1e-12);
      const PoolRef ra = pool_reference(false, x, u, oo);
      const auto [ya, xba] =
          value_and_vjp([&](const Var<double>& v) { return avg_pool2d(v, oo); }, x, u);
      CHECK(max_abs_diff(ya, ra.y) < 1e-12);
      CHECK(max_abs_diff(xba, ra.xbar) < 1e-12);
    }
  }
  // 2 x 2 windows tiling the input with whole vectors of channels: max_pool2d's vector path.
  const Tensor<double> xv = uniform_tensor<double>(Shape{2, 8, 6, 16}, rng);
  const Pool2dOptions two = pool({2, 2}, {0, 0}, {0, 0});
  const Tensor<double> uv = uniform_tensor<double>(Shape{2, 4, 3, 16}, rng);
  const PoolRef rv = pool_reference(true, xv, uv, two);
  const auto [yv, xbv] = value_and_vjp([&](const Var<double>& v) { return max_pool2d(v, two); }, xv, uv);
  CHECK(max_abs_diff(yv, rv.y) == 0.0);
  CHECK(max_abs_diff(xbv, rv.xbar) == 0.0);
}

TEST_CASE("global_avg_pool2d equals the mean over H and W", "[autodiff][pool]") {
  Rng rng(4);
  const Tensor<double> x = uniform_tensor<double>(Shape{3, 4, 5, 2}, rng);
  const Tensor<double> y = global_avg_pool2d(x);
  REQUIRE(y.shape() == Shape{3, 2});
  for (Index b = 0; b < 3; ++b)
    for (Index c = 0; c < 2; ++c) {
      double s = 0;
      for (Index i = 0; i < 4; ++i)
        for (Index j = 0; j < 5; ++j) s += x.at(b, i, j, c);
      CHECK(std::fabs(y.at(b, c) - s / 20) < 1e-14);
    }
}

TEST_CASE(
    "max_pool2d routes the cotangent to the first maximal element of a window, and propagates NaN",
    "[autodiff][pool]") {
  const Tensor<double> x = Tensor<double>::from(Shape{1, 2, 2, 1}, {1.0, 3.0, 3.0, 2.0});
  const auto [y, xbar] = value_and_vjp(
      [](const Var<double>& v) {
        return max_pool2d(v, pool({2, 2}, {0, 0}, {0, 0}));
      },
      x, Tensor<double>::full(Shape{1, 1, 1, 1}, 1.0));
  CHECK(y[0] == 3.0);
  CHECK(xbar.to_vector() == std::vector<double>{0.0, 1.0, 0.0, 0.0});
  const Tensor<double> xn = Tensor<double>::from(Shape{1, 2, 2, 1}, {1.0, NAN, 5.0, 2.0});
  CHECK(std::isnan(max_pool2d(xn, pool({2, 2}, {0, 0}, {0, 0}))[0]));
  // The same on the vector path (16 channels): channel ch holds a NaN at window position ch % 4
  // when ch is even (after a larger value when ch % 4 == 2), none when odd. The NaN is the result
  // and takes the cotangent, plain and fused with relu alike.
  Tensor<double> xv = Tensor<double>::uninitialized(Shape{1, 2, 2, 16});
  for (Index q = 0; q < 4; ++q)
    for (Index ch = 0; ch < 16; ++ch) xv[q * 16 + ch] = (ch % 2 == 0 && q == ch % 4) ? NAN : 7.0 - double(q);
  for (bool fused : {false, true}) {
    const auto [yv, xbv] = value_and_vjp(
        [&](const Var<double>& v) {
          return fused ? relu_max_pool2d(v, pool({2, 2}, {0, 0}, {0, 0})) : max_pool2d(v, pool({2, 2}, {0, 0}, {0, 0}));
        },
        xv, Tensor<double>::full(Shape{1, 1, 1, 16}, 1.0));
    for (Index ch = 0; ch < 16; ++ch) {
      INFO("fused " << fused << " channel " << ch);
      CHECK(std::isnan(yv[ch]) == (ch % 2 == 0));
      if (ch % 2 == 1) CHECK(yv[ch] == 7.0);
      // The first maximum (position 0) or the NaN takes the cotangent; fused, a NaN gets 0.
      for (Index q = 0; q < 4; ++q) {
        const double want = ch % 2 == 1 ? (q == 0 ? 1.0 : 0.0) : (!fused && q == ch % 4 ? 1.0 : 0.0);
        CHECK(xbv[q * 16 + ch] == want);
      }
    }
  }
}

TEST_CASE(
    "permute equals its index map for every permutation of ranks 1-4: value, and VJP written onto "
    "zeros and added onto values",
    "[autodiff][permute]") {
  // Extents above the 16 x 16 tiles of the transposing path, and not multiples of them.
  const std::vector<Index> extents = {3, 17, 5, 18};
  Rng rng(23);
  for (int rank = 1; rank <= 4; ++rank) {
    const Shape xs(std::span<const Index>(extents.data(), static_cast<std::size_t>(rank)));
    const Tensor<double> x = uniform_tensor<double>(xs, rng);
    std::vector<int> perm(static_cast<std::size_t>(rank));
    std::iota(perm.begin(), perm.end(), 0);
    do {
      std::array<Index, 4> yd{}, xstride{};
      Index s = 1;
      for (int a = rank - 1; a >= 0; --a) xstride[static_cast<std::size_t>(a)] = s, s *= xs[a];
      for (int a = 0; a < rank; ++a) yd[static_cast<std::size_t>(a)] = xs[perm[static_cast<std::size_t>(a)]];
      // x offset of y's element number e (row-major in y).
      const auto x_offset = [&](Index e) {
        Index off = 0;
        for (int a = rank - 1; a >= 0; --a) {
          const auto ua = static_cast<std::size_t>(a);
          off += (e % yd[ua]) * xstride[static_cast<std::size_t>(perm[ua])];
          e /= yd[ua];
        }
        return off;
      };
      const Tensor<double> y = permute(x, perm);
      const Tensor<double> u = uniform_tensor<double>(y.shape(), rng);
      const Tensor<double> w = uniform_tensor<double>(x.shape(), rng);
      Tape<double> tape;
      const Var<double> xv[] = {tape.variable(x)};
      // The reshape is recorded last, so the sweep writes its term first and permute adds to it.
      const Var<double> ys[] = {permute(xv[0], perm), reshape(xv[0], x.shape())};
      const Tensor<double> us[] = {u, w};
      const Tensor<double> fresh = tape.vjp(std::span(ys, 1), std::span(us, 1), xv)[0];
      const Tensor<double> added = tape.vjp(ys, us, xv)[0];
      bool values = true, written = true, summed = true;
      for (Index e = 0; e < y.size(); ++e) {
        const Index o = x_offset(e);
        values = values && y[e] == x[o];
        written = written && fresh[o] == u[e];
        summed = summed && added[o] == w[o] + u[e];
      }
      INFO("rank " << rank << " perm " << ::Catch::Detail::stringify(perm));
      CHECK(values);
      CHECK(written);
      CHECK(summed);
    } while (std::next_permutation(perm.begin(), perm.end()));
  }
}

TEST_CASE(
    "relu_max_pool2d equals max_pool2d(relu(x)) bit for bit: value, JVP and VJP, with ties, "
    "signed zeros, NaN and all-negative windows",
    "[autodiff][pool]") {
  // Values from a small set, so that windows hold ties, zeros of both signs, NaN, and windows
  // with no positive value; both element types, on 1 and 2 threads (parallel rows).
  const float pick[] = {-1.0f, -0.0f, 0.0f, 0.5f, 1.0f, 2.0f, -2.0f, NAN};
  Rng rng(17);
  struct Case {
    Shape x;
    Pool2dOptions o;
  };
  // 32 channels with 2 x 2 tiles: the vector path of max_pool2d.cpp; the rest the general loops.
  for (const Case& c :
       {Case{Shape{3, 8, 7, 5}, pool({2, 2}, {0, 0}, {0, 0})}, Case{Shape{3, 8, 6, 32}, pool({2, 2}, {0, 0}, {0, 0})},
        Case{Shape{3, 8, 7, 5}, pool({3, 3}, {1, 1}, {1, 1})}, Case{Shape{3, 8, 7, 5}, pool({2, 3}, {3, 2}, {1, 1})},
        Case{Shape{3, 8, 7, 5}, pool({1, 1}, {1, 1}, {0, 0})}}) {
    const Shape& shape = c.x;
    const Pool2dOptions& o = c.o;  // a reference, not a structured binding: lambdas below capture it
    INFO("x " << shape.str() << " kernel " << o.kernel[0] << "x" << o.kernel[1] << " stride " << o.stride[0]
              << "," << o.stride[1] << " padding " << o.padding[0] << "," << o.padding[1]);
    Tensor<float> x = Tensor<float>::uninitialized(shape);
    for (Index i = 0; i < x.size(); ++i) x[i] = pick[rng.below(8)];
    const Tensor<float> v = uniform_tensor<float>(x.shape(), rng);
    const auto fused = [&](const auto& t) { return relu_max_pool2d(t, o); };
    const auto composed = [&](const auto& t) { return max_pool2d(relu(t), o); };
    const Tensor<float> y = composed(x);
    const Tensor<float> u = uniform_tensor<float>(y.shape(), rng);
    for (int threads : {1, 2}) {
      with_threads(threads, [&] {
        CHECK(bitwise_equal(fused(x), y));
        const auto [yf, jf] = jvp(fused, x, v);
        const auto [yc, jc] = jvp(composed, x, v);
        CHECK(bitwise_equal(yf, y));
        CHECK(bitwise_equal(jf, jc));
        Tape<float> tape;
        const Var<float> xs[] = {tape.variable(x)};
        const Var<float> ys[] = {fused(xs[0]), composed(xs[0])};
        const Tensor<float> us[] = {u};
        const Tensor<float> bf = tape.vjp(std::span(ys, 1), us, xs)[0];
        const Tensor<float> bc = tape.vjp(std::span(ys + 1, 1), us, xs)[0];
        CHECK(bitwise_equal(bf, bc));
      });
    }
  }
  // A window of non-positive values gives +0 and derivative 0; a NaN gives NaN and derivative 0.
  const Tensor<double> x = Tensor<double>::from(Shape{1, 2, 4, 1}, {-1.0, -0.0, NAN, 3.0, -2.0, -3.0, 3.0, 1.0});
  const auto [y, xbar] = value_and_vjp(
      [](const Var<double>& t) { return relu_max_pool2d(t, pool({2, 2}, {0, 0}, {0, 0})); }, x,
      Tensor<double>::full(Shape{1, 1, 2, 1}, 1.0));
  CHECK(y[0] == 0.0);
  CHECK_FALSE(std::signbit(y[0]));
  CHECK(std::isnan(y[1]));
  CHECK(xbar.to_vector() == std::vector<double>(8, 0.0));
}

TEST_CASE(
    "pooling: zero batch gives an empty result, hostile geometries raise typed errors naming the "
    "op",
    "[autodiff][pool][errors]") {
  const Tensor<double> empty(Shape{0, 4, 4, 2});
  CHECK(max_pool2d(empty, pool({2, 2}, {0, 0}, {0, 0})).shape() == Shape{0, 2, 2, 2});
  CHECK(avg_pool2d(empty, pool({2, 2}, {0, 0}, {0, 0})).shape() == Shape{0, 2, 2, 2});
  CHECK(global_avg_pool2d(empty).shape() == Shape{0, 2});
  const Tensor<double> x(Shape{1, 3, 3, 2});
  for (const char* op : {"max_pool2d", "avg_pool2d"}) {
    auto run = [&](const Tensor<double>& t, const Pool2dOptions& o) {
      return std::string(op) == "max_pool2d" ? max_pool2d(t, o) : avg_pool2d(t, o);
    };
    // Zero channels, a window larger than the padded input, an empty spatial axis.
    CHECK_THROWS_MATCHES(run(Tensor<double>(Shape{1, 3, 3, 0}), pool({2, 2}, {0, 0}, {0, 0})),
                         ShapeError, MessageContains({op, "(1, 3, 3, 0)"}));
    CHECK_THROWS_MATCHES(run(x, pool({4, 2}, {0, 0}, {0, 0})), ShapeError,
                         MessageContains({op, "(1, 3, 3, 2)", "kernel (4, 2)"}));
    CHECK_THROWS_MATCHES(run(Tensor<double>(Shape{1, 0, 3, 2}), pool({2, 2}, {1, 1}, {1, 1})),
                         ShapeError, MessageContains({op, "(1, 0, 3, 2)"}));
    // Padding > kernel / 2 (windows of padding only), kernel 0, negative stride.
    CHECK_THROWS_MATCHES(run(x, pool({2, 2}, {1, 1}, {2, 0})), ValueError,
                         MessageContains({op, "padding (2, 0)"}));
    CHECK_THROWS_MATCHES(run(x, pool({0, 2}, {1, 1}, {0, 0})), ValueError,
                         MessageContains({op, "kernel (0, 2)"}));
    CHECK_THROWS_MATCHES(run(x, pool({2, 2}, {-1, 1}, {0, 0})), ValueError,
                         MessageContains({op, "stride (-1, 1)"}));
    CHECK_THROWS_MATCHES(run(Tensor<double>(Shape{3, 3, 2}), pool({2, 2}, {0, 0}, {0, 0})),
                         ShapeError, MessageContains({op, "(3, 3, 2)"}));
  }
  CHECK_THROWS_MATCHES(global_avg_pool2d(Tensor<double>(Shape{2, 3, 3, 0})), ShapeError,
                       MessageContains({"global_avg_pool2d", "(2, 3, 3, 0)"}));
}

TEST_CASE(
    "batch_norm: per channel the output has zero mean and unit variance, and stats are the batch "
    "mean and "
    "biased variance",
    "[autodiff][norm]") {
  Rng rng(5);
  for (const Shape& s : {Shape{16, 3}, Shape{2, 3, 4, 5}, Shape{1, 4, 4, 2}}) {
    INFO("x " << s.str());
    const Tensor<double> x = uniform_tensor<double>(s, rng, -3.0, 5.0);
    const Index c = s[s.rank() - 1], m = s.numel() / c;
    BatchStats<double> stats;
    const Tensor<double> y =
        batch_norm(x, Tensor<double>::full(Shape{c}, 1.0), Tensor<double>(Shape{c}), 0.0, &stats);
    CHECK(stats.count == m);
    for (Index ch = 0; ch < c; ++ch) {
      double mx = 0, my = 0;
      for (Index r = 0; r < m; ++r) mx += x[r * c + ch], my += y[r * c + ch];
      mx /= double(m), my /= double(m);
      double vx = 0, vy = 0;
      for (Index r = 0; r < m; ++r) {
        vx += (x[r * c + ch] - mx) * (x[r * c + ch] - mx);
        vy += (y[r * c + ch] - my) * (y[r * c + ch] - my);
      }
      vx /= double(m), vy /= double(m);
      CHECK(std::fabs(my) < 1e-13);
      CHECK(std::fabs(vy - 1.0) < 1e-12);
      CHECK(std::fabs(stats.mean[ch] - mx) < 1e-14);
      CHECK(std::fabs(stats.variance[ch] - vx) < 1e-13);
    }
  }
}

TEST_CASE(
    "batch_norm: the statistics are accurate for data far from zero (float, one value per block "
    "partition)",
    "[autodiff][norm]") {
  // A large offset relative to the spread: a one-pass sum of squares would cancel catastrophically.
  Rng rng(6);
  const Shape s{4096, 4};
  Tensor<float> x = Tensor<float>::uninitialized(s);
  for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<float>(1000.0 + rng.uniform(-1, 1));
  BatchStats<float> stats;
  (void)batch_norm(x, Tensor<float>::full(Shape{4}, 1.0f), Tensor<float>(Shape{4}), 1e-5, &stats);
  for (Index ch = 0; ch < 4; ++ch) {
    double m = 0, v = 0;
    for (Index r = 0; r < 4096; ++r) m += x[r * 4 + ch];
    m /= 4096;
    for (Index r = 0; r < 4096; ++r) v += (x[r * 4 + ch] - m) * (x[r * 4 + ch] - m);
    v /= 4096;
    CHECK(std::fabs(stats.variance[ch] - v) < 1e-4 * v);
  }
}

TEST_CASE("batch_norm couples examples: d y[0] / d x[1] is non-zero and matches finite differences",
          "[autodiff][norm]") {
  Rng rng(7);
  const Tensor<double> x = uniform_tensor<double>(Shape{4, 3}, rng);
  const Tensor<double> gamma = uniform_tensor<double>(Shape{3}, rng, 0.5, 1.5);
  const Tensor<double> beta = uniform_tensor<double>(Shape{3}, rng);
  // Tangent only on example 1; look at example 0's output.
  Tensor<double> v(Shape{4, 3});
  for (Index c = 0; c < 3; ++c) v.at(1, c) = rng.uniform(-1, 1);
  const Dual<double> yd = batch_norm(Dual<double>(x, v), Dual<double>(gamma), Dual<double>(beta));
  const double h = 1e-5;
  Tensor<double> xp = x.clone(), xm = x.clone();
  for (Index i = 0; i < x.size(); ++i) xp[i] += h * v[i], xm[i] -= h * v[i];
  const Tensor<double> yp = batch_norm(xp, gamma, beta), ym = batch_norm(xm, gamma, beta);
  double norm0 = 0;
  for (Index c = 0; c < 3; ++c) {
    const double fd = (yp.at(0, c) - ym.at(0, c)) / (2 * h);
    CHECK(std::fabs(yd.tangent().at(0, c) - fd) < 1e-7);
    norm0 += std::fabs(yd.tangent().at(0, c));
  }
  CHECK(norm0 > 1e-3);
  // The same coupling through the VJP: a cotangent on example 0 reaches example 1.
  Tensor<double> u(Shape{4, 3});
  u.at(0, 1) = 1.0;
  Tape<double> tape;
  const Var<double> xs[] = {tape.variable(x)};
  const Var<double> ys[] = {batch_norm(xs[0], Var<double>(gamma), Var<double>(beta))};
  const Tensor<double> us[] = {u};
  const Tensor<double> xbar = tape.vjp(ys, us, xs)[0];
  Tensor<double> x1p = x.clone(), x1m = x.clone();
  x1p.at(1, 1) += h, x1m.at(1, 1) -= h;
  const double fd =
      (batch_norm(x1p, gamma, beta).at(0, 1) - batch_norm(x1m, gamma, beta).at(0, 1)) / (2 * h);
  CHECK(std::fabs(xbar.at(1, 1)) > 1e-3);
  CHECK(std::fabs(xbar.at(1, 1) - fd) < 1e-7);
  CHECK(xbar.at(1, 0) == 0.0);  // channels do not couple
}

TEST_CASE("layer_norm equals the definition per row (rank 2 and 3)", "[autodiff][norm]") {
  Rng rng(8);
  for (const Shape& s : {Shape{3, 7}, Shape{2, 3, 5}}) {
    const Index d = s[s.rank() - 1];
    const Tensor<double> x = uniform_tensor<double>(s, rng, -2, 3);
    const Tensor<double> gamma = uniform_tensor<double>(Shape{d}, rng),
                         beta = uniform_tensor<double>(Shape{d}, rng);
    const double eps = 1e-3;
    const Tensor<double> y = layer_norm(x, gamma, beta, eps);
    for (Index r = 0; r < s.numel() / d; ++r) {
      double m = 0, v = 0;
      for (Index j = 0; j < d; ++j) m += x[r * d + j];
      m /= double(d);
      for (Index j = 0; j < d; ++j) v += (x[r * d + j] - m) * (x[r * d + j] - m);
      v /= double(d);
      for (Index j = 0; j < d; ++j)
        CHECK(std::fabs(y[r * d + j] -
                        ((x[r * d + j] - m) / std::sqrt(v + eps) * gamma[j] + beta[j])) < 1e-13);
    }
  }
  CHECK(layer_norm(Tensor<double>(Shape{0, 4}), Tensor<double>(Shape{4}), Tensor<double>(Shape{4}))
            .shape() == Shape{0, 4});
  CHECK_THROWS_MATCHES(
      layer_norm(Tensor<double>(Shape{3, 0}), Tensor<double>(Shape{0}), Tensor<double>(Shape{0})),
      ShapeError, MessageContains({"layer_norm", "(3, 0)"}));
  CHECK_THROWS_MATCHES(
      batch_norm(Tensor<double>(Shape{0, 2}), Tensor<double>(Shape{2}), Tensor<double>(Shape{2})),
      ShapeError, MessageContains({"batch_norm", "(0, 2)"}));
  CHECK_THROWS_MATCHES(
      batch_norm(Tensor<double>(Shape{3, 0}), Tensor<double>(Shape{0}), Tensor<double>(Shape{0})),
      ShapeError, MessageContains({"batch_norm", "(3, 0)"}));
}

TEST_CASE("dropout: one mask for the primal, the JVP and the VJP in every mode",
          "[autodiff][dropout]") {
  Rng rng(9);
  const Tensor<double> x = uniform_tensor<double>(Shape{6, 50}, rng, 1.0, 2.0);  // no zeros
  const Tensor<double> ones = Tensor<double>::full(x.shape(), 1.0);
  const double p = 0.5;
  const Tensor<double> y = dropout(x, p, 11, 3);
  const Dual<double> yd = dropout(Dual<double>(x, ones), p, 11, 3);
  const auto [yv, xbar] =
      value_and_vjp([&](const Var<double>& v) { return dropout(v, p, 11, 3); }, x, ones);
  CHECK(max_abs_diff(yd.primal(), y) == 0.0);
  CHECK(max_abs_diff(yv, y) == 0.0);
  Index zeros = 0;
  for (Index i = 0; i < y.size(); ++i) {
    const bool dropped = y[i] == 0.0;
    zeros += dropped;
    CHECK((yd.tangent()[i] == 0.0) == dropped);
    CHECK((xbar[i] == 0.0) == dropped);
    if (!dropped) {
      CHECK(y[i] == x[i] * 2.0);
      CHECK(yd.tangent()[i] == 2.0);
    }
  }
  CHECK(zeros > 0);
  CHECK(zeros < y.size());
  // p = 0 is the identity, bit for bit.
  CHECK(max_abs_diff(dropout(x, 0.0, 11, 3), x) == 0.0);
}

TEST_CASE(
    "dropout: the mask depends on seed and stream, keeps about 1 - p, and is bitwise equal at 1 "
    "and 2 threads",
    "[autodiff][dropout][openmp]") {
  const Tensor<float> x =
      Tensor<float>::full(Shape{400, 500}, 1.0f);  // above the parallel threshold
  const double p = 0.3;
  const Tensor<float> a = dropout(x, p, 5, 0);
  CHECK(max_abs_diff(dropout(x, p, 5, 1), a) > 0);
  CHECK(max_abs_diff(dropout(x, p, 6, 0), a) > 0);
  CHECK(max_abs_diff(dropout(x, p, 5, 0), a) == 0);
  Index kept = 0;
  for (Index i = 0; i < a.size(); ++i) kept += a[i] != 0.0f;
  const double n = double(a.size()), sd = std::sqrt(n * p * (1 - p));
  CHECK(std::fabs(double(kept) - n * (1 - p)) < 5 * sd);
  Tensor<float> t1, t2;
  with_threads(1, [&] { t1 = dropout(x, p, 5, 0); });
  with_threads(2, [&] { t2 = dropout(x, p, 5, 0); });
  CHECK(bitwise_equal(t1, t2));
  CHECK(bitwise_equal(t1, a));
}

TEST_CASE(
    "dropout: rows r0 to r1 - 1 passed with first = r0 * row length draw the whole tensor's mask "
    "for those rows, in the primal, the JVP and the VJP",
    "[autodiff][dropout]") {
  Rng rng(12);
  const Index n = 9, d = 70, r0 = 4, r1 = 7;  // rows of 70: blocks of 256 straddle the rows
  const Tensor<double> x = uniform_tensor<double>(Shape{n, d}, rng, 1.0, 2.0);
  const Tensor<double> ones = Tensor<double>::full(Shape{r1 - r0, d}, 1.0);
  const double p = 0.4;
  const Tensor<double> whole = dropout(x, p, 11, 3);
  CHECK(max_abs_diff(dropout(x, p, 11, 3, 0), whole) == 0.0);  // first = 0: x on its own
  const Tensor<double> rows = x.view(r0 * d, Shape{r1 - r0, d}).clone();
  const auto first = static_cast<std::uint64_t>(r0 * d);
  const Tensor<double> y = dropout(rows, p, 11, 3, first);
  const Dual<double> yd = dropout(Dual<double>(rows, ones), p, 11, 3, first);
  const auto [yv, xbar] =
      value_and_vjp([&](const Var<double>& v) { return dropout(v, p, 11, 3, first); }, rows, ones);
  for (Index i = 0; i < y.size(); ++i) {
    const double expected = whole[r0 * d + i];
    CHECK(y[i] == expected);
    CHECK(yd.primal()[i] == expected);
    CHECK(yv[i] == expected);
    CHECK(yd.tangent()[i] == (expected == 0.0 ? 0.0 : 1 / (1 - p)));
    CHECK(xbar[i] == (expected == 0.0 ? 0.0 : 1 / (1 - p)));
  }
  // The block on its own (first = 0) draws another mask.
  CHECK(max_abs_diff(dropout(rows, p, 11, 3), y) > 0);
}

TEST_CASE("dropout: p outside 0 <= p < 1 is a ValueError naming the op",
          "[autodiff][dropout][errors]") {
  const Tensor<double> x(Shape{3});
  for (double p : {1.0, -0.1, 1.5, std::nan("")})
    CHECK_THROWS_MATCHES(dropout(x, p, 1, 1), ValueError, MessageContains({"dropout", "p"}));
}

TEST_CASE(
    "batch_norm, layer_norm and pooling: results and gradients are bitwise equal at 1 and 2 "
    "threads",
    "[autodiff][norm][pool][openmp]") {
  Rng rng(10);
  const Shape s{8, 16, 16, 40};  // 81920 elements: the parallel paths
  const Tensor<float> x = uniform_tensor<float>(s, rng);
  const Tensor<float> gamma = uniform_tensor<float>(Shape{40}, rng),
                      beta = uniform_tensor<float>(Shape{40}, rng);
  auto run = [&] {
    std::vector<Tensor<float>> out;
    Tape<float> tape;
    const Var<float> in[] = {tape.variable(x), tape.variable(gamma), tape.variable(beta)};
    const Var<float> bn = batch_norm(in[0], in[1], in[2]);
    const Var<float> ln = layer_norm(in[0], in[1], in[2]);
    const Var<float> mp = max_pool2d(bn, pool({3, 3}, {2, 2}, {1, 1}));
    const Var<float> ap = avg_pool2d(ln, pool({3, 3}, {1, 1}, {1, 1}));
    const Var<float> outs[] = {sum(mp) + sum(ap * ap)};
    const Tensor<float> us[] = {Tensor<float>::full(Shape{}, 1.0f)};
    out.push_back(bn.value());
    out.push_back(ln.value());
    for (auto& g : tape.vjp(outs, us, in)) out.push_back(g);
    const Tensor<float> vs[] = {uniform_tensor<float>(s, rng), gamma, beta};
    for (auto& g : tape.hvp(outs, us, in, vs)) out.push_back(g);
    return out;
  };
  std::vector<Tensor<float>> r1, r2;
  Rng keep = rng;
  with_threads(1, [&] { r1 = run(); });
  rng = keep;
  with_threads(2, [&] { r2 = run(); });
  REQUIRE(r1.size() == r2.size());
  for (std::size_t i = 0; i < r1.size(); ++i) {
    INFO("result " << i);
    CHECK(bitwise_equal(r1[i], r2[i]));
  }
}

TEST_CASE("embedding: rows picked by index, repeated indices accumulate in the VJP, typed errors",
          "[autodiff][embedding]") {
  Rng rng(11);
  const Tensor<double> w = uniform_tensor<double>(Shape{4, 3}, rng);
  const std::vector<Index> idx = {2, 0, 2, 2, 3, 0};
  const auto [y, wbar] = value_and_vjp(
      [&](const Var<double>& v) {
        return embedding(v, idx, Shape{2, 3});
      },
      w, Tensor<double>::full(Shape{2, 3, 3}, 1.0));
  REQUIRE(y.shape() == Shape{2, 3, 3});
  for (Index i = 0; i < 6; ++i)
    for (Index d = 0; d < 3; ++d) CHECK(y[i * 3 + d] == w.at(idx[static_cast<std::size_t>(i)], d));
  const std::vector<double> counts = {2, 0, 3, 1};
  for (Index r = 0; r < 4; ++r)
    for (Index d = 0; d < 3; ++d) CHECK(wbar.at(r, d) == counts[static_cast<std::size_t>(r)]);
  CHECK_THROWS_MATCHES(embedding(w, {0, 4}, Shape{2}), ValueError,
                       MessageContains({"embedding", "4", "(4, 3)"}));
  CHECK_THROWS_MATCHES(embedding(w, {-1}, Shape{1}), ValueError,
                       MessageContains({"embedding", "-1"}));
  CHECK_THROWS_MATCHES(embedding(w, {0, 1, 2}, Shape{2, 2}), ShapeError,
                       MessageContains({"embedding", "(2, 2)"}));
  CHECK_THROWS_MATCHES(embedding(w, std::vector<Index>(16, 0), Shape{2, 2, 2, 2}), ShapeError,
                       MessageContains({"embedding", "(2, 2, 2, 2)"}));
}

TEST_CASE("concat of a list equals the joined tensors, for 1 to 10 parts on each axis",
          "[autodiff][concat]") {
  Rng rng(12);
  for (int axis : {0, 1, 2})
    for (std::size_t n = 1; n <= 10; ++n) {
      std::vector<Tensor<double>> parts;
      Index total = 0;
      for (std::size_t i = 0; i < n; ++i) {
        std::array<Index, 3> d{2, 3, 2};
        d[static_cast<std::size_t>(axis)] = Index(i % 3);
        total += d[static_cast<std::size_t>(axis)];
        parts.push_back(uniform_tensor<double>(Shape{d[0], d[1], d[2]}, rng));
      }
      const Tensor<double> y = concat(parts, axis);
      std::array<Index, 3> yd{2, 3, 2};
      yd[static_cast<std::size_t>(axis)] = total;
      REQUIRE(y.shape() == Shape{yd[0], yd[1], yd[2]});
      Index off = 0;
      for (const auto& p : parts) {
        for (Index i = 0; i < p.dim(0); ++i)
          for (Index j = 0; j < p.dim(1); ++j)
            for (Index k = 0; k < p.dim(2); ++k) {
              std::array<Index, 3> at{i, j, k};
              at[static_cast<std::size_t>(axis)] += off;
              CHECK(y.at(at[0], at[1], at[2]) == p.at(i, j, k));
            }
        off += p.dim(axis);
      }
    }
  CHECK_THROWS_AS(concat(std::vector<Tensor<double>>{}, 0), ValueError);
}

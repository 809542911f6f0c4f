// The element-wise and reduction kernels behind the primitives, at sizes that reach every code
// path: the SIMD body and the padded tail (1..70 elements), the single-thread / OpenMP switch at
// kParallelElements = 2^16 (65535, 65536, 65537, 200003), broadcasting on rank 3 and 4, long sums,
// and the log-sum-exp family along every axis of a rank-3 tensor, including extreme values.
// References are plain scalar loops (std:: functions, long double sums).
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::test::Rng;
using amari::test::uniform_tensor;

const std::vector<Index> kLargeSizes = {65535, 65536, 65537, 200003};

std::vector<Index> all_sizes() {
  std::vector<Index> n;
  for (Index i = 1; i <= 70; ++i) n.push_back(i);
  n.insert(n.end(), kLargeSizes.begin(), kLargeSizes.end());
  return n;
}

// Sets the OpenMP thread count for a scope and restores it.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int saved_;
};

template <class T>
bool bitwise_equal(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

// Worst |got - want| / (|want| + floor) over all elements.
template <class T>
double worst_rel(const Tensor<T>& got, const std::vector<double>& want, double floor = 1e-300) {
  double w = 0;
  for (Index i = 0; i < got.size(); ++i) {
    const double r = want[static_cast<std::size_t>(i)];
    w = std::max(w, std::fabs(static_cast<double>(got[i]) - r) / (std::fabs(r) + floor));
  }
  return w;
}

struct UnaryCase {
  const char* name;
  std::function<Tensor<double>(const Tensor<double>&)> fd;
  std::function<Tensor<float>(const Tensor<float>&)> ff;
  double (*ref)(double);
};

std::vector<UnaryCase> unary_cases() {
  return {
      {"tanh", [](const Tensor<double>& x) { return amari::tanh(x); },
       [](const Tensor<float>& x) { return amari::tanh(x); },
       [](double x) { return std::tanh(x); }},
      {"exp", [](const Tensor<double>& x) { return amari::exp(x); },
       [](const Tensor<float>& x) { return amari::exp(x); }, [](double x) { return std::exp(x); }}};
}

struct BinaryCase {
  const char* name;
  std::function<Tensor<double>(const Tensor<double>&, const Tensor<double>&)> fd;
  std::function<Tensor<float>(const Tensor<float>&, const Tensor<float>&)> ff;
  double (*ref)(double, double);
};

std::vector<BinaryCase> binary_cases() {
  return {{"add", [](const Tensor<double>& a, const Tensor<double>& b) { return amari::add(a, b); },
           [](const Tensor<float>& a, const Tensor<float>& b) { return amari::add(a, b); },
           [](double a, double b) { return a + b; }},
          {"mul", [](const Tensor<double>& a, const Tensor<double>& b) { return amari::mul(a, b); },
           [](const Tensor<float>& a, const Tensor<float>& b) { return amari::mul(a, b); },
           [](double a, double b) { return a * b; }}};
}

// Row-major multi-index of flat index k in a rank-4 (left-padded) shape.
std::array<Index, 4> unflatten(Index k, const std::array<Index, 4>& d) {
  std::array<Index, 4> idx{};
  for (int a = 3; a >= 0; --a) {
    idx[static_cast<std::size_t>(a)] = k % d[static_cast<std::size_t>(a)];
    k /= d[static_cast<std::size_t>(a)];
  }
  return idx;
}

std::array<Index, 4> pad4(const Shape& s) {
  std::array<Index, 4> d{1, 1, 1, 1};
  for (int a = 0; a < s.rank(); ++a) d[static_cast<std::size_t>(4 - s.rank() + a)] = s[a];
  return d;
}

// Element of x (shape s) read at output multi-index idx under NumPy broadcasting.
template <class T>
double broadcast_read(const Tensor<T>& x, const std::array<Index, 4>& idx) {
  const auto d = pad4(x.shape());
  Index off = 0;
  for (std::size_t a = 0; a < 4; ++a) off = off * d[a] + (d[a] == 1 ? 0 : idx[a]);
  return static_cast<double>(x[off]);
}

// Naive log-sum-exp / softmax along one axis of a rank-3 tensor, in long double.
struct AxisRef {
  std::vector<double> lse;      // reduced shape, row-major with the axis dropped
  std::vector<double> softmax;  // full shape
  std::vector<double> log_softmax;
};

AxisRef axis_reference(const Tensor<double>& x, int axis) {
  const Index d0 = x.dim(0), d1 = x.dim(1), d2 = x.dim(2);
  const std::array<Index, 3> d{d0, d1, d2};
  const Index n = d[static_cast<std::size_t>(axis)];
  AxisRef r;
  r.softmax.resize(static_cast<std::size_t>(x.size()));
  r.log_softmax.resize(static_cast<std::size_t>(x.size()));
  auto at = [&](std::array<Index, 3> i) { return (i[0] * d1 + i[1]) * d2 + i[2]; };
  for (Index i0 = 0; i0 < (axis == 0 ? 1 : d0); ++i0)
    for (Index i1 = 0; i1 < (axis == 1 ? 1 : d1); ++i1)
      for (Index i2 = 0; i2 < (axis == 2 ? 1 : d2); ++i2) {
        std::array<Index, 3> base{i0, i1, i2};
        long double m = -std::numeric_limits<long double>::infinity();
        for (Index j = 0; j < n; ++j) {
          auto k = base;
          k[static_cast<std::size_t>(axis)] = j;
          m = std::max<long double>(m, x[at(k)]);
        }
        long double s = 0;
        for (Index j = 0; j < n; ++j) {
          auto k = base;
          k[static_cast<std::size_t>(axis)] = j;
          s += std::exp(static_cast<long double>(x[at(k)]) - m);
        }
        const long double lse = m + std::log(s);
        r.lse.push_back(static_cast<double>(lse));
        for (Index j = 0; j < n; ++j) {
          auto k = base;
          k[static_cast<std::size_t>(axis)] = j;
          const auto flat = static_cast<std::size_t>(at(k));
          r.log_softmax[flat] = static_cast<double>(x[at(k)] - lse);
          r.softmax[flat] = static_cast<double>(std::exp(x[at(k)] - lse));
        }
      }
  return r;
}

}  // namespace

TEST_CASE(
    "kernels: tanh and exp match std:: at every size around the SIMD tail and the OpenMP "
    "threshold",
    "[kernels]") {
  Rng rng(11);
  const Tensor<double> big = uniform_tensor<double>(Shape{200003}, rng, -3.0, 3.0);
  for (const auto& c : unary_cases()) {
    const Tensor<double> big_y = c.fd(big);
    for (Index n : all_sizes()) {
      INFO(c.name << " n = " << n);
      const Tensor<double> x = big.view(0, Shape{n}).clone();
      const Tensor<double> y = c.fd(x);
      std::vector<double> want(static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) want[static_cast<std::size_t>(i)] = c.ref(x[i]);
      CHECK(worst_rel(y, want) <= 1e-14);
      // Same element, same result, whether it falls in a SIMD batch or in the padded tail.
      CHECK(bitwise_equal(y, big_y.view(0, Shape{n}).clone()));

      const Tensor<float> xf = amari::test::convert<float>(x);
      const Tensor<float> yf = c.ff(xf);
      std::vector<double> want_f(static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) want_f[static_cast<std::size_t>(i)] = c.ref(xf[i]);
      CHECK(worst_rel(yf, want_f) <= 1e-6);
    }
  }
}

TEST_CASE("kernels: add and mul equal the scalar loop exactly at every size", "[kernels]") {
  Rng rng(12);
  const Tensor<double> a_big = uniform_tensor<double>(Shape{200003}, rng);
  const Tensor<double> b_big = uniform_tensor<double>(Shape{200003}, rng);
  for (const auto& c : binary_cases()) {
    for (Index n : all_sizes()) {
      INFO(c.name << " n = " << n);
      const Tensor<double> a = a_big.view(0, Shape{n}).clone();
      const Tensor<double> b = b_big.view(200003 - n, Shape{n}).clone();
      const Tensor<double> y = c.fd(a, b);
      Tensor<double> want(Shape{n});
      for (Index i = 0; i < n; ++i) want[i] = c.ref(a[i], b[i]);
      CHECK(bitwise_equal(y, want));

      const Tensor<float> af = amari::test::convert<float>(a), bf = amari::test::convert<float>(b);
      const Tensor<float> yf = c.ff(af, bf);
      Tensor<float> want_f(Shape{n});
      for (Index i = 0; i < n; ++i) want_f[i] = static_cast<float>(c.ref(af[i], bf[i]));
      CHECK(bitwise_equal(yf, want_f));
    }
  }
}

TEST_CASE("kernels: element-wise results are bitwise identical on 1 and 2 threads", "[kernels]") {
  Rng rng(13);
  for (Index n : kLargeSizes) {
    INFO("n = " << n);
    const Tensor<double> a = uniform_tensor<double>(Shape{n}, rng);
    const Tensor<double> b = uniform_tensor<double>(Shape{n}, rng);
    Tensor<double> one, two;
    {
      ThreadCount t(1);
      one = amari::tanh(a * b + a);
    }
    {
      ThreadCount t(2);
      two = amari::tanh(a * b + a);
    }
    CHECK(bitwise_equal(one, two));
  }
}

TEST_CASE("kernels: broadcasting on rank 3 and 4 equals a naive indexed loop, small and large",
          "[kernels]") {
  struct Pair {
    Shape a, b;
  };
  const std::vector<Pair> pairs = {
      {Shape{2, 3, 1, 5}, Shape{3, 4, 1}},      {Shape{4, 1, 3}, Shape{5, 1}},
      {Shape{1, 5, 1}, Shape{3, 1, 7}},         {Shape{2, 1, 3, 1}, Shape{1, 4, 1, 9}},
      {Shape{8, 33, 50, 40}, Shape{33, 1, 40}},  // 528000 elements: the OpenMP row loop
      {Shape{1, 70001}, Shape{3, 1}},            // long rows, the stride-0 operand in the tail
      {Shape{8, 1, 50, 1}, Shape{8, 33, 1, 41}}};
  Rng rng(14);
  for (const auto& p : pairs) {
    INFO(p.a.str() << " with " << p.b.str());
    const Tensor<double> a = uniform_tensor<double>(p.a, rng);
    const Tensor<double> b = uniform_tensor<double>(p.b, rng);
    for (const auto& c : binary_cases()) {
      INFO(c.name);
      const Tensor<double> y = c.fd(a, b);
      const Tensor<double> y_rev = c.fd(b, a);
      const auto d = pad4(y.shape());
      Tensor<double> want(y.shape());
      for (Index k = 0; k < y.size(); ++k) {
        const auto idx = unflatten(k, d);
        want[k] = c.ref(broadcast_read(a, idx), broadcast_read(b, idx));
      }
      CHECK(bitwise_equal(y, want));
      CHECK(bitwise_equal(y_rev, want));  // add and mul commute exactly
    }
  }
}

TEST_CASE("kernels: the VJP of broadcasting sums over the broadcast axes (naive reference)",
          "[kernels]") {
  // d/db sum(a * b) with b broadcast is a summed over the axes b was stretched along.
  struct Pair {
    Shape a, b;
  };
  const std::vector<Pair> pairs = {{Shape{2, 3, 4, 5}, Shape{3, 1, 5}},
                                   {Shape{8, 33, 50, 40}, Shape{33, 1, 40}},
                                   {Shape{3, 70001}, Shape{3, 1}},
                                   {Shape{6, 7, 9}, Shape{1, 7, 1}}};
  Rng rng(15);
  for (const auto& p : pairs) {
    INFO(p.a.str() << " with " << p.b.str());
    const Tensor<double> a = uniform_tensor<double>(p.a, rng);
    const Tensor<double> b = uniform_tensor<double>(p.b, rng);
    const Tensor<double> g = amari::grad(
        [&](const amari::Var<double>& bv) { return amari::sum(amari::Var<double>(a) * bv); }, b);
    REQUIRE(g.shape() == p.b);
    std::vector<long double> want(static_cast<std::size_t>(b.size()), 0.0L);
    const auto d = pad4(p.a), db = pad4(p.b);
    for (Index k = 0; k < a.size(); ++k) {
      const auto idx = unflatten(k, d);
      Index off = 0;
      for (std::size_t ax = 0; ax < 4; ++ax) off = off * db[ax] + (db[ax] == 1 ? 0 : idx[ax]);
      want[static_cast<std::size_t>(off)] += a[k];
    }
    double worst = 0;
    for (Index i = 0; i < g.size(); ++i)
      worst =
          std::max(worst, std::fabs(g[i] - static_cast<double>(want[static_cast<std::size_t>(i)])));
    CHECK(worst <= 1e-9);
  }
}

TEST_CASE("kernels: sum of 1e6 elements matches a long double reference", "[kernels]") {
  Rng rng(16);
  const Index n = 1000000;
  const Tensor<double> x = uniform_tensor<double>(Shape{n}, rng, 0.0, 1.0);
  const Tensor<float> xf = amari::test::convert<float>(x);
  long double ref = 0, ref_f = 0;
  for (Index i = 0; i < n; ++i) {
    ref += x[i];
    ref_f += xf[i];
  }
  const double s = amari::sum(x).item();
  const float sf = amari::sum(xf).item();
  CHECK(std::fabs(s - static_cast<double>(ref)) <= 1e-12 * static_cast<double>(ref));
  CHECK(std::fabs(static_cast<double>(sf) - static_cast<double>(ref_f)) <=
        1e-6 * static_cast<double>(ref_f));
  // A sum of mixed signs with a small result: the error must scale with sum |x|, not blow up.
  const Tensor<double> y = uniform_tensor<double>(Shape{n}, rng, -1.0, 1.0);
  long double ry = 0, abs_sum = 0;
  for (Index i = 0; i < n; ++i) ry += y[i], abs_sum += std::fabs(y[i]);
  CHECK(std::fabs(amari::sum(y).item() - static_cast<double>(ry)) <=
        1e-14 * static_cast<double>(abs_sum));
  // Sizes around the threshold and the 1024-element block boundary.
  for (Index m : {Index{1}, Index{1023}, Index{1024}, Index{1025}, Index{65535}, Index{65536},
                  Index{65537}}) {
    INFO("m = " << m);
    long double r = 0;
    for (Index i = 0; i < m; ++i) r += x[i];
    CHECK(std::fabs(amari::sum(x.view(0, Shape{m})).item() - static_cast<double>(r)) <=
          1e-13 * static_cast<double>(r));
  }
}

TEST_CASE("kernels: sum is bitwise identical on 1 and 2 threads (block partials in fixed order)",
          "[kernels]") {
  Rng rng(17);
  for (Index n : {Index{65537}, Index{200003}, Index{1000000}}) {
    INFO("n = " << n);
    const Tensor<double> x = uniform_tensor<double>(Shape{n}, rng, -1.0, 1.0);
    const Tensor<float> xf = amari::test::convert<float>(x);
    double s1, s2, s2b;
    float f1, f2;
    {
      ThreadCount t(1);
      s1 = amari::sum(x).item();
      f1 = amari::sum(xf).item();
    }
    {
      ThreadCount t(2);
      s2 = amari::sum(x).item();
      s2b = amari::sum(x).item();
      f2 = amari::sum(xf).item();
    }
    CHECK(std::memcmp(&s1, &s2, sizeof s1) == 0);
    CHECK(std::memcmp(&s2, &s2b, sizeof s2) == 0);
    CHECK(std::memcmp(&f1, &f2, sizeof f1) == 0);
  }
}

TEST_CASE("kernels: sum along each axis of a rank-3 tensor equals a naive loop", "[kernels]") {
  Rng rng(18);
  const Tensor<double> x = uniform_tensor<double>(Shape{30, 7, 500}, rng);
  for (int axis = 0; axis < 3; ++axis) {
    INFO("axis " << axis);
    const Tensor<double> y = amari::sum(x, axis);
    double worst = 0;
    std::vector<long double> want(static_cast<std::size_t>(y.size()), 0.0L);
    for (Index i0 = 0; i0 < 30; ++i0)
      for (Index i1 = 0; i1 < 7; ++i1)
        for (Index i2 = 0; i2 < 500; ++i2) {
          const Index o = axis == 0 ? i1 * 500 + i2 : axis == 1 ? i0 * 500 + i2 : i0 * 7 + i1;
          want[static_cast<std::size_t>(o)] += x.at(i0, i1, i2);
        }
    for (Index o = 0; o < y.size(); ++o)
      worst =
          std::max(worst, std::fabs(y[o] - static_cast<double>(want[static_cast<std::size_t>(o)])));
    CHECK(worst <= 1e-12);
  }
}

TEST_CASE(
    "kernels: logsumexp, softmax and log_softmax along axes 0, 1, 2 of rank-3 tensors "
    "match a naive long double reference",
    "[kernels]") {
  Rng rng(19);
  for (const Shape& s : {Shape{3, 4, 5}, Shape{1, 9, 2}, Shape{6, 1, 33}}) {
    for (double offset : {0.0, 800.0, -800.0}) {  // large offsets: exp would overflow naively
      Tensor<double> x = uniform_tensor<double>(s, rng, -5.0, 5.0);
      for (Index i = 0; i < x.size(); ++i) x[i] += offset;
      for (int axis = 0; axis < 3; ++axis) {
        INFO("shape " << s.str() << " offset " << offset << " axis " << axis);
        const AxisRef r = axis_reference(x, axis);
        const Tensor<double> lse = amari::logsumexp(x, axis);
        const Tensor<double> sm = amari::softmax(x, axis);
        const Tensor<double> lsm = amari::log_softmax(x, axis);
        REQUIRE(lse.size() == static_cast<Index>(r.lse.size()));
        CHECK(worst_rel(lse, r.lse) <= 1e-14);
        CHECK(worst_rel(sm, r.softmax) <= 1e-13);
        double worst_abs = 0;  // log_softmax values near 0 need an absolute bound
        for (Index i = 0; i < lsm.size(); ++i)
          worst_abs =
              std::max(worst_abs, std::fabs(lsm[i] - r.log_softmax[static_cast<std::size_t>(i)]));
        CHECK(worst_abs <= 1e-12 * (1 + std::fabs(offset)));
        // Float agrees with the double reference to float accuracy.
        const Tensor<float> xf = amari::test::convert<float>(x);
        if (offset == 0.0) {
          CHECK(worst_rel(amari::softmax(xf, axis), r.softmax) <= 1e-5);
          CHECK(worst_rel(amari::logsumexp(xf, axis), r.lse, 1.0) <= 1e-6);
        }
      }
    }
  }
}

TEST_CASE("kernels: logsumexp and softmax at extreme values", "[kernels]") {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor<double> x = Tensor<double>::from(Shape{2, 2}, {1e4, -1e4, -1e4, 1e4});
  const Tensor<double> lse = amari::logsumexp(x);
  CHECK(lse[0] == 1e4);
  CHECK(lse[1] == 1e4);
  const Tensor<float> xf = Tensor<float>::from(Shape{1, 2}, {1e4f, -1e4f});
  CHECK(amari::logsumexp(xf).item() == 1e4f);
  // logsumexp of two equal huge values is the value plus log 2, finite.
  CHECK(amari::logsumexp(Tensor<double>::from(Shape{2}, {1e308, 1e308}), 0).item() ==
        Approx(1e308).epsilon(1e-15));
  // An all -inf row gives -inf (log of an empty sum), not NaN.
  const Tensor<double> ninf = Tensor<double>::from(Shape{2, 3}, {-inf, -inf, -inf, 0, 1, 2});
  const Tensor<double> l = amari::logsumexp(ninf);
  CHECK(l[0] == -inf);
  CHECK(std::isfinite(l[1]));
  CHECK(amari::logsumexp(ninf, 0)[0] == Approx(0.0).margin(1e-15));  // column {-inf, 0}
  // Softmax rows sum to one and stay finite for huge logits; -inf gets probability 0.
  const Tensor<double> z =
      Tensor<double>::from(Shape{3, 3}, {1e4, 1e4 - 1, -1e4, -1e300, 0, 1e300, -inf, 3, 3});
  const Tensor<double> p = amari::softmax(z);
  for (Index i = 0; i < 3; ++i) {
    double s = 0;
    for (Index j = 0; j < 3; ++j) {
      CHECK(std::isfinite(p.at(i, j)));
      s += p.at(i, j);
    }
    CHECK(s == Approx(1.0).epsilon(1e-11));  // x - lse at |x| = 1e4 rounds to ~1e-12
  }
  CHECK(p.at(0, 0) == Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-11));
  CHECK(p.at(1, 2) == 1.0);
  CHECK(p.at(2, 0) == 0.0);
  CHECK(p.at(2, 1) == Approx(0.5).epsilon(1e-15));
}

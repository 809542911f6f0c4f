// Conjugate gradient's fused vector passes (curvature/detail/cg_kernels.hpp): the solver gives the
// iterates of a textbook CG, damping folded into the passes gives the solve of the stored damped
// products up to rounding, p^T A p comes from the operator's apply_quadratic_form, and the result
// does not depend on the number of threads. The sizes span
// one block with a ragged tail, an odd number of blocks and the OpenMP path of the reduction the
// passes share with dot() (autodiff/kernels/vector.hpp).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/curvature/cg.hpp>
#include <amari/curvature/linear_operator.hpp>

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using namespace amari::curvature;

// 37: one block with a scalar tail; 69001: 17 blocks (an odd count), a 4057-element last block and
// more than kParallelElements (2^16) elements, so the passes run through OpenMP.
constexpr Index kSizes[] = {37, 69001};

// (A v)_i = d_i v_i + 0.5 (v_{i-1} + v_{i+1}) with d_i in [2, 4]: symmetric and diagonally
// dominant, so SPD with condition number below 5, and cheap for long vectors.
template <class T>
class Tridiagonal final : public LinearOperator<T> {
 public:
  explicit Tridiagonal(Index n) : d_(static_cast<std::size_t>(n)) {
    for (Index i = 0; i < n; ++i)
      d_[static_cast<std::size_t>(i)] = 2.0 + 2.0 * std::abs(std::sin(0.37 * i));
  }
  Index size() const override { return static_cast<Index>(d_.size()); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override {
    check_apply_arguments(*this, v, out);
    const Index n = size();
    for (Index i = 0; i < n; ++i) {
      double s = d_[static_cast<std::size_t>(i)] * static_cast<double>(v[i]);
      if (i > 0) s += 0.5 * static_cast<double>(v[i - 1]);
      if (i + 1 < n) s += 0.5 * static_cast<double>(v[i + 1]);
      out[i] = static_cast<T>(s);
    }
  }
  std::string name() const override { return "Tridiagonal"; }
  // The same product in double on std::vector, for the textbook solver below.
  void apply(const std::vector<double>& v, std::vector<double>& out, double lambda) const {
    const std::size_t n = d_.size();
    for (std::size_t i = 0; i < n; ++i) {
      double s = (d_[i] + lambda) * v[i];
      if (i > 0) s += 0.5 * v[i - 1];
      if (i + 1 < n) s += 0.5 * v[i + 1];
      out[i] = s;
    }
  }

 private:
  std::vector<double> d_;
};

// Forwards to another operator: CG cannot see that it is damped, so it stores A p and takes no
// shortcut.
template <class T>
class Opaque final : public LinearOperator<T> {
 public:
  explicit Opaque(LinearOperator<T>& inner) : inner_(inner) {}
  Index size() const override { return inner_.size(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override { inner_.apply(v, out); }
  std::string name() const override { return "Opaque(" + inner_.name() + ")"; }

 private:
  LinearOperator<T>& inner_;
};

template <class T>
Tensor<T> random_vector(Index n, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  Tensor<T> v(Shape{n});
  for (Index i = 0; i < n; ++i) {
    v[i] = static_cast<T>(2.0 * (static_cast<double>(engine() >> 11) * 0x1.0p-53) - 1.0);
  }
  return v;
}

std::vector<double> to_vector(const Tensor<double>& t) {
  return std::vector<double>(t.begin(), t.end());
}

double plain_dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

struct Textbook {
  std::vector<double> x;
  std::vector<double> model_values;
  double residual_norm;
};

// Preconditioned CG as printed (Martens 2010, alg. 2 with M = diag(m), or m empty for M = I), in
// double with sequential sums: the recursive residual r -= alpha A p and the model value
// phi = -0.5 x^T (b + r), as CgResult documents them.
Textbook textbook_cg(const Tridiagonal<double>& a, double lambda, const std::vector<double>& b,
                     const std::vector<double>& x0, const std::vector<double>& m, int iterations) {
  const std::size_t n = b.size();
  std::vector<double> x = x0, r(n), z(n), p(n), ap(n);
  a.apply(x, ap, lambda);
  for (std::size_t i = 0; i < n; ++i) r[i] = b[i] - ap[i];
  auto precondition = [&] {
    for (std::size_t i = 0; i < n; ++i) z[i] = m.empty() ? r[i] : r[i] / m[i];
  };
  auto phi = [&] {
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += x[i] * (b[i] + r[i]);
    return -0.5 * s;
  };
  precondition();
  p = z;
  double rz = plain_dot(r, z);
  Textbook out{{}, {phi()}, 0.0};
  for (int k = 0; k < iterations; ++k) {
    a.apply(p, ap, lambda);
    const double alpha = rz / plain_dot(p, ap);
    for (std::size_t i = 0; i < n; ++i) {
      x[i] += alpha * p[i];
      r[i] -= alpha * ap[i];
    }
    precondition();
    const double rz_new = plain_dot(r, z);
    for (std::size_t i = 0; i < n; ++i) p[i] = z[i] + rz_new / rz * p[i];
    rz = rz_new;
    out.model_values.push_back(phi());
  }
  out.x = x;
  out.residual_norm = std::sqrt(plain_dot(r, r));
  return out;
}

CgOptions fixed_iterations(int iterations) {
  CgOptions o;
  o.max_iterations = iterations;
  o.relative_tolerance = 0.0;
  o.progress_stopping = false;
  return o;
}

template <class T>
bool same_solve(const CgResult<T>& a, const CgResult<T>& b) {
  return a.status == b.status && a.iterations == b.iterations && a.products == b.products &&
         std::equal(a.x.begin(), a.x.end(), b.x.begin(), b.x.end()) &&
         a.model_values == b.model_values && a.residual_norm == b.residual_norm;
}

}  // namespace

TEST_CASE(
    "conjugate_gradient: iterates, model values and residual norm equal a textbook CG in "
    "double to 1e-12, plain, damped, preconditioned and warm-started") {
  const int iterations = 12;  // the residual falls to ~1e-5 of ||b||: far from rounding noise
  for (Index n : kSizes) {
    Tridiagonal<double> a(n);
    const Tensor<double> b = random_vector<double>(n, 1);
    const Tensor<double> x0 = random_vector<double>(n, 2);
    Tensor<double> m(Shape{n});
    for (Index i = 0; i < n; ++i) m[i] = 2.0 + std::abs(std::sin(0.37 * i));
    DampedOperator<double> damped(a, 0.3);
    DiagonalPreconditioner<double> precondition(m);
    struct Case {
      const char* name;
      LinearOperator<double>& op;
      double lambda;
      bool warm;
      bool preconditioned;
    };
    const Case cases[] = {{"plain", a, 0.0, false, false},
                          {"damped", damped, 0.3, false, false},
                          {"damped, preconditioned", damped, 0.3, false, true},
                          {"damped, warm start", damped, 0.3, true, false},
                          {"damped, warm start, preconditioned", damped, 0.3, true, true}};
    for (const Case& c : cases) {
      CAPTURE(n, c.name);
      const CgResult<double> res =
          conjugate_gradient(c.op, b, fixed_iterations(iterations), c.warm ? &x0 : nullptr,
                             c.preconditioned ? &precondition : nullptr);
      const Textbook ref =
          textbook_cg(a, c.lambda, to_vector(b), c.warm ? to_vector(x0) : std::vector<double>(n),
                      c.preconditioned ? to_vector(m) : std::vector<double>(), iterations);
      REQUIRE(res.status == CgStatus::max_iterations);
      REQUIRE(res.iterations == iterations);
      CHECK(res.products == iterations + (c.warm ? 1 : 0));
      double scale = 0.0, err = 0.0;
      for (Index i = 0; i < n; ++i) {
        scale = std::max(scale, std::abs(ref.x[static_cast<std::size_t>(i)]));
        err = std::max(err, std::abs(res.x[i] - ref.x[static_cast<std::size_t>(i)]));
      }
      CHECK(err <= 1e-12 * scale);
      REQUIRE(res.model_values.size() == ref.model_values.size());
      for (std::size_t k = 0; k < ref.model_values.size(); ++k) {
        CAPTURE(k);
        CHECK(std::abs(res.model_values[k] - ref.model_values[k]) <=
              1e-12 * std::abs(ref.model_values.back()));
      }
      CHECK(res.residual_norm == Approx(ref.residual_norm).epsilon(1e-10));
    }
  }
}

TEST_CASE(
    "conjugate_gradient: on a DampedOperator, lambda folded into CG's passes gives the solve of "
    "the stored damped products up to rounding") {
  // The fold forms the damped product as DampedOperator::apply does, but takes p^T A p as
  // p^T B p + lambda p^T p (both in double) instead of p^T (B p + lambda p) with the sum rounded to
  // T, so the two solves differ by rounding only.
  auto check = [](auto zero, double tolerance) {
    using T = decltype(zero);
    for (Index n : kSizes) {
      CAPTURE(n, sizeof(T));
      Tridiagonal<T> a(n);
      DampedOperator<T> damped(a, 1e-3);
      Opaque<T> stored(damped);
      const Tensor<T> b = random_vector<T>(n, 3);
      const Tensor<T> x0 = random_vector<T>(n, 4);
      Tensor<T> m = Tensor<T>::full(Shape{n}, T(2));
      DiagonalPreconditioner<T> precondition(m);
      CgOptions options = fixed_iterations(15);
      options.keep_iterates = true;
      const auto close = [&](const CgResult<T>& u, const CgResult<T>& v) {
        REQUIRE(u.status == v.status);
        REQUIRE(u.iterations == v.iterations);
        REQUIRE(u.products == v.products);
        double scale = 0.0, err = 0.0;
        for (Index i = 0; i < n; ++i) {
          scale = std::max(scale, std::abs(static_cast<double>(v.x[i])));
          err = std::max(err, std::abs(static_cast<double>(u.x[i]) - static_cast<double>(v.x[i])));
        }
        CHECK(err <= tolerance * scale);
        REQUIRE(u.model_values.size() == v.model_values.size());
        for (std::size_t k = 0; k < v.model_values.size(); ++k) {
          CHECK(std::abs(u.model_values[k] - v.model_values[k]) <=
                tolerance * std::abs(v.model_values.back()));
        }
      };
      close(conjugate_gradient(damped, b, options), conjugate_gradient(stored, b, options));
      close(conjugate_gradient(damped, b, options, &x0, &precondition),
            conjugate_gradient(stored, b, options, &x0, &precondition));
    }
  };
  check(0.0f, 1e-5);
  check(0.0, 1e-13);
}

// A J^T M J-like operator whose quadratic form is deliberately off by a factor: CG must take its
// curvature p^T A p from apply_quadratic_form (the products' own form), not from a pass of its own.
template <class T>
class SkewedForm final : public LinearOperator<T> {
 public:
  explicit SkewedForm(LinearOperator<T>& inner, double factor) : inner_(inner), factor_(factor) {}
  Index size() const override { return inner_.size(); }
  void apply(const Tensor<T>& v, Tensor<T>& out) override { inner_.apply(v, out); }
  double apply_quadratic_form(const Tensor<T>& v, Tensor<T>& out) override {
    ++forms;
    return factor_ * inner_.apply_quadratic_form(v, out);
  }
  std::string name() const override { return "SkewedForm"; }
  int forms = 0;

 private:
  LinearOperator<T>& inner_;
  double factor_;
};

TEST_CASE("conjugate_gradient: p^T A p comes from the operator's apply_quadratic_form") {
  const Index n = kSizes[0];
  Tridiagonal<double> a(n);
  const Tensor<double> b = random_vector<double>(n, 6);
  // With the form doubled every step length alpha halves: after one iteration x = alpha_true/2 b.
  SkewedForm<double> skewed(a, 2.0);
  const CgResult<double> one = conjugate_gradient(a, b, fixed_iterations(1));
  const CgResult<double> half = conjugate_gradient(skewed, b, fixed_iterations(1));
  CHECK(skewed.forms == 1);
  for (Index i = 0; i < n; ++i) CHECK(half.x[i] == Approx(0.5 * one.x[i]).epsilon(1e-14));
  // Damped: the form of the undamped operator plus lambda p^T p.
  SkewedForm<double> unit(a, 1.0);
  DampedOperator<double> damped(unit, 0.25);
  const CgResult<double> folded = conjugate_gradient(damped, b, fixed_iterations(8));
  CHECK(unit.forms == 8);
  const Textbook ref = textbook_cg(a, 0.25, to_vector(b), std::vector<double>(n), {}, 8);
  for (Index i = 0; i < n; ++i) {
    CHECK(folded.x[i] == Approx(ref.x[static_cast<std::size_t>(i)]).epsilon(1e-12).margin(1e-14));
  }
}

TEST_CASE("conjugate_gradient: the solve is bitwise the same on 1, 2 and 3 threads") {
  const Index n = kSizes[1];
  Tridiagonal<float> a(n);
  DampedOperator<float> damped(a, 1e-3);
  const Tensor<float> b = random_vector<float>(n, 5);
  Tensor<float> m = Tensor<float>::full(Shape{n}, 3.0f);
  DiagonalPreconditioner<float> precondition(m);
  const int saved = omp_get_max_threads();
  std::vector<CgResult<float>> plain, preconditioned;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    plain.push_back(conjugate_gradient(damped, b, fixed_iterations(20)));
    preconditioned.push_back(
        conjugate_gradient(damped, b, fixed_iterations(20), nullptr, &precondition));
  }
  omp_set_num_threads(saved);
  for (std::size_t t = 1; t < plain.size(); ++t) {
    CAPTURE(t + 1);
    CHECK(same_solve(plain[t], plain[0]));
    CHECK(same_solve(preconditioned[t], preconditioned[0]));
  }
}

TEST_CASE(
    "conjugate_gradient: a step that overflows float after finite ones returns the starting "
    "point with 0 iterations, status non_finite") {
  // diag(1, 1e-30) with b = (1, 1e10): x_1 = (1e20, 1e30) is finite, and the second step of CG,
  // exact on a 2 x 2 system, goes to the solution (1, 1e40), beyond the largest float.
  DiagonalOperator<float> A(Tensor<float>::from(Shape{2}, {1.0f, 1e-30f}));
  const Tensor<float> b = Tensor<float>::from(Shape{2}, {1.0f, 1e10f});
  CgOptions options = fixed_iterations(10);
  options.keep_iterates = true;
  const CgResult<float> one = conjugate_gradient(A, b, fixed_iterations(1));
  REQUIRE(one.iterations == 1);
  REQUIRE(std::isfinite(one.model_value));
  const CgResult<float> res = conjugate_gradient(A, b, options);
  CHECK(res.status == CgStatus::non_finite);
  CHECK(res.iterations == 0);
  CHECK(res.products == 2);
  CHECK(res.x[0] == 0.0f);
  CHECK(res.x[1] == 0.0f);
  CHECK(res.model_values == std::vector<double>{0.0});
  CHECK(res.iterate_steps == std::vector<int>{0});
}

// Linear operators, composites, preconditioners and the vector operations CG is built on.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>

#include <omp.h>

#include <catch2/catch.hpp>

#include <amari/curvature/cg.hpp>
#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/vector_ops.hpp>

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using namespace amari::curvature;

struct Rng {
  std::mt19937_64 engine;
  explicit Rng(std::uint64_t seed) : engine(seed) {}
  double symmetric() { return static_cast<double>(engine() >> 11) * 0x1.0p-52 - 1.0; }  // [-1, 1)
};

template <class T = double>
Tensor<T> random_tensor(const Shape& shape, Rng& rng) {
  Tensor<T> t(shape);
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<T>(rng.symmetric());
  return t;
}

// y = M x for an n x n row-major matrix, the reference for every operator test.
Tensor<double> matvec(const Tensor<double>& m, const Tensor<double>& x) {
  const Index n = x.size();
  Tensor<double> y(Shape{n});
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) y[i] += m[i * n + j] * x[j];
  return y;
}

Tensor<double> apply(LinearOperator<double>& op, const Tensor<double>& v) {
  Tensor<double> out(Shape{op.size()});
  op.apply(v, out);
  return out;
}

void check_close(const Tensor<double>& got, const Tensor<double>& want, double tol = 1e-13) {
  REQUIRE(got.size() == want.size());
  for (Index i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == Approx(want[i]).epsilon(tol).margin(tol));
  }
}

bool message_contains(const amari::Error& e, const std::string& s) {
  return std::string(e.what()).find(s) != std::string::npos;
}

}  // namespace

TEST_CASE("DenseOperator and DiagonalOperator: apply equals explicit matrix-vector arithmetic") {
  Rng rng(1);
  const Tensor<double> m = random_tensor(Shape{7, 7}, rng);
  const Tensor<double> v = random_tensor(Shape{7}, rng);
  DenseOperator<double> dense(m);
  CHECK(dense.size() == 7);
  CHECK(dense.name() == "Dense(7 x 7)");
  check_close(apply(dense, v), matvec(m, v));

  const Tensor<double> d = random_tensor(Shape{7}, rng);
  DiagonalOperator<double> diagonal(d);
  Tensor<double> expected(Shape{7});
  for (Index i = 0; i < 7; ++i) expected[i] = d[i] * v[i];
  check_close(apply(diagonal, v), expected);

  // The operator copied its matrix: later edits of the caller's tensor do not leak in.
  Tensor<double> m2 = m.clone();
  DenseOperator<double> owned(m2);
  m2[0] += 100.0;
  check_close(apply(owned, v), matvec(m, v));
}

TEST_CASE("composites: damped, scaled and sum operators equal explicit dense arithmetic") {
  Rng rng(2);
  const Index n = 6;
  const Tensor<double> ma = random_tensor(Shape{n, n}, rng);
  const Tensor<double> mb = random_tensor(Shape{n, n}, rng);
  const Tensor<double> v = random_tensor(Shape{n}, rng);
  auto A = std::make_shared<DenseOperator<double>>(ma);
  auto B = std::make_shared<DenseOperator<double>>(mb);
  const Tensor<double> av = matvec(ma, v);
  const Tensor<double> bv = matvec(mb, v);

  auto damped_a = damped(A, 0.3);
  Tensor<double> want(Shape{n});
  for (Index i = 0; i < n; ++i) want[i] = av[i] + 0.3 * v[i];
  check_close(apply(*damped_a, v), want);
  CHECK(damped_a->name() == "Dense(6 x 6) + 0.3 I");
  damped_a->set_lambda(2.5);
  CHECK(damped_a->lambda() == 2.5);
  for (Index i = 0; i < n; ++i) want[i] = av[i] + 2.5 * v[i];
  check_close(apply(*damped_a, v), want);
  damped_a->set_lambda(0.0);
  check_close(apply(*damped_a, v), av);

  auto scaled_a = scaled(A, -1.75);
  for (Index i = 0; i < n; ++i) want[i] = -1.75 * av[i];
  check_close(apply(*scaled_a, v), want);

  auto sum_ab = sum_of(A, B);
  for (Index i = 0; i < n; ++i) want[i] = av[i] + bv[i];
  check_close(apply(*sum_ab, v), want);
  check_close(apply(*sum_ab, v), want);  // second apply reuses the scratch buffer

  // Nested and shared: 2 (A + B) + 0.5 I, with A also inside damped_a.
  auto nested = damped(scaled(sum_ab, 2.0), 0.5);
  for (Index i = 0; i < n; ++i) want[i] = 2.0 * (av[i] + bv[i]) + 0.5 * v[i];
  check_close(apply(*nested, v), want);
  CHECK(nested->name() == "2 * ((Dense(6 x 6)) + (Dense(6 x 6))) + 0.5 I");
}

TEST_CASE("composites: a reference is borrowed, a shared_ptr is shared, and the operand says which") {
  Rng rng(3);
  const Tensor<double> d = random_tensor(Shape{4}, rng);
  DiagonalOperator<double> local(d);
  const Operand<double> borrowed_operand = borrowed<double>(local);
  CHECK(borrowed_operand.get() == &local);
  CHECK_FALSE(borrowed_operand.owns());
  // A composite on the stack borrowing an operator on the stack: no shared_ptr anywhere.
  DampedOperator<double> damped_local(local, 1.0);
  CHECK(&damped_local.base() == &local);
  const Tensor<double> v = random_tensor(Shape{4}, rng);
  const Tensor<double> out = apply(damped_local, v);
  for (Index i = 0; i < 4; ++i) CHECK(out[i] == Approx(d[i] * v[i] + v[i]).epsilon(1e-15));
  // Shared: the composite keeps the operand alive after the caller's pointer is gone.
  auto shared = std::make_shared<DiagonalOperator<double>>(d);
  std::weak_ptr<DiagonalOperator<double>> watch = shared;
  ScaledOperator<double> scaled_shared(shared, 2.0);
  shared.reset();
  CHECK_FALSE(watch.expired());
  const Tensor<double> twice = apply(scaled_shared, v);
  for (Index i = 0; i < 4; ++i) CHECK(twice[i] == Approx(2 * d[i] * v[i]).epsilon(1e-15));
  // A null shared_ptr is refused by name.
  CHECK_THROWS_WITH(DampedOperator<double>(std::shared_ptr<LinearOperator<double>>(), 1.0),
                    Catch::Contains("DampedOperator") && Catch::Contains("null"));
}

TEST_CASE("composites: conjugate_gradient on damped(A, lambda) solves (A + lambda I) x = b") {
  const Tensor<double> d = Tensor<double>::from(Shape{3}, {1.0, 2.0, 4.0});
  auto A = std::make_shared<DiagonalOperator<double>>(d);
  auto system = damped(A, 0.5);
  const Tensor<double> b = Tensor<double>::from(Shape{3}, {3.0, 5.0, 9.0});
  CgOptions options;
  options.relative_tolerance = 1e-12;
  const CgResult<double> res = conjugate_gradient(*system, b, options);
  CHECK(res.status == CgStatus::converged);
  for (Index i = 0; i < 3; ++i) CHECK(res.x[i] == Approx(b[i] / (d[i] + 0.5)).epsilon(1e-12));
}

TEST_CASE("composites: mismatched sizes throw ShapeError naming both operators and sizes") {
  auto A = std::make_shared<DenseOperator<double>>(Tensor<double>(Shape{3, 3}));
  auto B = std::make_shared<DiagonalOperator<double>>(Tensor<double>(Shape{4}));
  try {
    sum_of(A, B);
    FAIL("sum_of accepted operators of sizes 3 and 4");
  } catch (const amari::ShapeError& e) {
    CHECK(message_contains(e, "Dense(3 x 3)"));
    CHECK(message_contains(e, "Diagonal(4)"));
    CHECK(message_contains(e, "size 3"));
    CHECK(message_contains(e, "size 4"));
  }
}

TEST_CASE(
    "operators: apply with wrong shapes throws ShapeError naming the operator and shapes, "
    "aliased input and output throw ValueError") {
  Rng rng(4);
  auto A = std::make_shared<DenseOperator<double>>(random_tensor(Shape{5, 5}, rng));
  std::shared_ptr<LinearOperator<double>> ops[] = {A, damped(A, 1.0), scaled(A, 2.0), sum_of(A, A)};
  for (auto& op : ops) {
    CAPTURE(op->name());
    Tensor<double> v(Shape{5}), out(Shape{5});
    Tensor<double> short_v(Shape{4}), matrix_out(Shape{5, 1}), undefined;
    try {
      op->apply(short_v, out);
      FAIL("apply accepted a vector of length 4");
    } catch (const amari::ShapeError& e) {
      CHECK(message_contains(e, op->name()));
      CHECK(message_contains(e, "(4)"));
      CHECK(message_contains(e, "(5)"));
    }
    CHECK_THROWS_AS(op->apply(v, matrix_out), amari::ShapeError);
    CHECK_THROWS_AS(op->apply(v, undefined), amari::ShapeError);
    CHECK_THROWS_AS(op->apply(v, v), amari::ValueError);
  }
  DiagonalPreconditioner<double> M(Tensor<double>::full(Shape{5}, 2.0));
  Tensor<double> r(Shape{5}), short_z(Shape{3});
  CHECK_THROWS_AS(M.apply(r, short_z), amari::ShapeError);
}

TEST_CASE("composites: negative, NaN or infinite lambda throws ValueError and leaves lambda") {
  auto A = std::make_shared<DiagonalOperator<double>>(Tensor<double>::full(Shape{3}, 1.0));
  const double bad[] = {-1e-12, -1.0, std::numeric_limits<double>::quiet_NaN(),
                        std::numeric_limits<double>::infinity()};
  for (double lambda : bad) {
    CAPTURE(lambda);
    CHECK_THROWS_AS(damped(A, lambda), amari::ValueError);
    auto op = damped(A, 0.25);
    CHECK_THROWS_AS(op->set_lambda(lambda), amari::ValueError);
    CHECK(op->lambda() == 0.25);
  }
  CHECK_THROWS_AS(scaled(A, std::numeric_limits<double>::quiet_NaN()), amari::ValueError);
  CHECK_THROWS_AS(damped(std::shared_ptr<DenseOperator<double>>(), 1.0), amari::ValueError);
  CHECK_THROWS_AS(sum_of(A, std::shared_ptr<DenseOperator<double>>()), amari::ValueError);
}

TEST_CASE("operators: invalid matrices and diagonals are refused at construction") {
  CHECK_THROWS_AS(DenseOperator<double>(Tensor<double>(Shape{3, 4})), amari::ShapeError);
  CHECK_THROWS_AS(DenseOperator<double>(Tensor<double>(Shape{9})), amari::ShapeError);
  Tensor<double> m(Shape{2, 2});
  m[3] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(DenseOperator<double>(m), amari::ValueError);
  CHECK_THROWS_AS(DiagonalOperator<double>(Tensor<double>(Shape{2, 2})), amari::ShapeError);
  Tensor<float> d = Tensor<float>::full(Shape{3}, 1.0f);
  d[1] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(DiagonalOperator<float>(d), amari::ValueError);
}

TEST_CASE("DiagonalPreconditioner: z = r / m, zero, negative or non-finite m is refused") {
  const Tensor<double> m = Tensor<double>::from(Shape{3}, {2.0, 0.5, 4.0});
  DiagonalPreconditioner<double> M(m);
  const Tensor<double> r = Tensor<double>::from(Shape{3}, {1.0, 1.0, -8.0});
  Tensor<double> z(Shape{3});
  M.apply(r, z);
  CHECK(z[0] == 0.5);
  CHECK(z[1] == 2.0);
  CHECK(z[2] == -2.0);
  for (double bad : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN()}) {
    Tensor<double> mb = m.clone();
    mb[1] = bad;
    CHECK_THROWS_AS(DiagonalPreconditioner<double>(mb), amari::ValueError);
  }
}

TEST_CASE("martens_preconditioner: m = (sum of squared gradients + lambda)^alpha") {
  const Tensor<double> s = Tensor<double>::from(Shape{3}, {0.0, 3.0, 15.0});
  const DiagonalPreconditioner<double> M = martens_preconditioner(s, 1.0, 0.75);
  CHECK(M.diagonal()[0] == Approx(1.0));
  CHECK(M.diagonal()[1] == Approx(std::pow(4.0, 0.75)));
  CHECK(M.diagonal()[2] == Approx(8.0));
  const DiagonalPreconditioner<double> identity = martens_preconditioner(s, 1.0, 0.0);
  CHECK(identity.diagonal()[2] == 1.0);
  const DiagonalPreconditioner<float> full =
      martens_preconditioner(Tensor<float>::from(Shape{2}, {1.0f, 3.0f}), 1.0, 1.0);
  CHECK(full.diagonal()[1] == 4.0f);

  CHECK_THROWS_AS(martens_preconditioner(s, 0.0), amari::ValueError);  // 0 + 0 -> zero entry
  CHECK_THROWS_AS(martens_preconditioner(s, -1.0), amari::ValueError);
  CHECK_THROWS_AS(martens_preconditioner(s, 1.0, -0.5), amari::ValueError);
  CHECK_THROWS_AS(martens_preconditioner(s, 1.0, std::numeric_limits<double>::quiet_NaN()),
                  amari::ValueError);
  CHECK_THROWS_AS(martens_preconditioner(Tensor<double>::from(Shape{2}, {1.0, -1.0}), 1.0),
                  amari::ValueError);
  CHECK_THROWS_AS(martens_preconditioner(Tensor<double>(Shape{2, 2}), 1.0), amari::ShapeError);
}

TEST_CASE("vector ops: dot of float vectors is accumulated in double") {
  // 1e8, 998 ones, -1e8: in float 1e8 + 1 rounds back to 1e8, so any float partial sum that
  // meets the 1e8 loses the ones after it; the double sum is exactly 998.
  const Index n = 1000;
  Tensor<float> x = Tensor<float>::full(Shape{n}, 1.0f);
  x[0] = 1e8f;
  x[n - 1] = -1e8f;
  const Tensor<float> ones = Tensor<float>::full(Shape{n}, 1.0f);
  CHECK(dot(x, ones) == 998.0);
  CHECK(norm(Tensor<float>::from(Shape{2}, {3.0f, 4.0f})) == 5.0);
}

TEST_CASE("vector ops: dot is accurate and bit-identical for 1, 2 and 4 threads") {
  Rng rng(5);
  // Long enough for the OpenMP path, with a ragged tail.
  const Index n = (Index{1} << 20) + 13;
  const Tensor<double> x = random_tensor(Shape{n}, rng);
  const Tensor<double> y = random_tensor(Shape{n}, rng);
  long double reference = 0.0L;
  for (Index i = 0; i < n; ++i) reference += static_cast<long double>(x[i]) * y[i];

  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = dot(x, y);
  omp_set_num_threads(2);
  const double two = dot(x, y);
  omp_set_num_threads(4);
  const double four = dot(x, y);
  omp_set_num_threads(saved);
  CHECK(one == two);
  CHECK(one == four);
  CHECK(one == Approx(static_cast<double>(reference)).epsilon(1e-12));
  // Independent of the address of the data: a shifted copy gives the same bits.
  Tensor<double> xs(Shape{n + 1}), ys(Shape{n + 1});
  for (Index i = 0; i < n; ++i) {
    xs[i + 1] = x[i];
    ys[i + 1] = y[i];
  }
  CHECK(dot(xs.view(1, Shape{n}), ys.view(1, Shape{n})) == one);
}

TEST_CASE(
    "vector ops: axpy, xpby, scal and copy compute their formulas on short and long vectors") {
  Rng rng(6);
  for (Index n : {Index{0}, Index{1}, Index{37}, (Index{1} << 17) + 5}) {
    CAPTURE(n);
    const Tensor<double> x = random_tensor(Shape{n}, rng);
    const Tensor<double> y0 = random_tensor(Shape{n}, rng);
    Tensor<double> y = y0.clone();
    axpy(-0.5, x, y);
    // Each element is the formula rounded once per operation, or with the multiply-add fused into
    // one FMA (GCC contracts a * b + c by default in C++, -ffp-contract=fast, where it vectorizes):
    // either is exact to the formula's rounding, and which one a build gives is the compiler's.
    const auto either = [](double got, double a, double b, double c) {
      const volatile double product = a * b;  // volatile: rounded before the addition
      return got == product + c || got == std::fma(a, b, c);
    };
    bool ok = true;
    for (Index i = 0; i < n; ++i) ok = ok && either(y[i], -0.5, x[i], y0[i]);
    CHECK(ok);
    y.copy_from(y0);
    xpby(x, 3.0, y);
    for (Index i = 0; i < n; ++i) ok = ok && either(y[i], 3.0, y0[i], x[i]);
    CHECK(ok);
    y.copy_from(y0);
    scal(-2.0, y);
    for (Index i = 0; i < n; ++i) ok = ok && y[i] == -2.0 * y0[i];
    CHECK(ok);
    copy(x, y);
    for (Index i = 0; i < n; ++i) ok = ok && y[i] == x[i];
    CHECK(ok);
  }
  Tensor<double> a(Shape{3}), b(Shape{4});
  CHECK_THROWS_AS(dot(a, b), amari::ShapeError);
  CHECK_THROWS_AS(axpy(1.0, a, b), amari::ShapeError);
  CHECK_THROWS_AS(xpby(a, 1.0, b), amari::ShapeError);
  CHECK_THROWS_AS(copy(a, b), amari::ShapeError);
}

TEST_CASE("vector ops: all_finite finds a NaN or inf at any position") {
  const Index n = (Index{1} << 17) + 3;
  Tensor<float> x = Tensor<float>::full(Shape{n}, 1.0f);
  CHECK(all_finite(x));
  for (Index pos : {Index{0}, Index{5000}, n - 1}) {
    for (float bad :
         {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
      CAPTURE(pos, bad);
      x[pos] = bad;
      CHECK_FALSE(all_finite(x));
      x[pos] = 1.0f;
    }
  }
  CHECK(all_finite(Tensor<double>(Shape{0})));
  CHECK(all_finite(Tensor<double>::from(Shape{1}, {std::numeric_limits<double>::max()})));
}


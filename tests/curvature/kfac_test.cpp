// K-FAC (curvature/kfac.hpp) and the dense Cholesky behind it (curvature/dense_solve.hpp).
//
// The references are built here independently of the code under test: per-example activations by
// plain Tensor forward passes through the Sequential's children, per-example errors delta_l as
// the bias gradient of layer l from a parameter VJP on a batch of one example (dl/db_l = delta_l,
// not the intermediate-Var VJP that K-FAC uses), sampled labels by the head's counter-based
// sample() on that single example (first_example = i), explicit Kronecker products and Gaussian
// elimination for the damped block solves, and the dense MC Fisher from its operator.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>
#include <omp.h>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/cg.hpp>
#include <amari/curvature/dense_solve.hpp>
#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/function_module.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/image_layers.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/normalization.hpp>
#include <amari/nn/residual.hpp>
#include <amari/nn/training.hpp>

#include "support/dense.hpp"
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tape;
using amari::Tensor;
using amari::ValueError;
using amari::Var;
using amari::curvature::cholesky_in_place;
using amari::curvature::cholesky_inverse_in_place;
using amari::curvature::cholesky_solve_in_place;
using amari::curvature::Kfac;
using amari::curvature::KfacApproximation;
using amari::curvature::KfacConv;
using amari::curvature::KfacFisher;
using amari::curvature::KfacLayerKind;
using amari::curvature::KfacOperator;
using amari::curvature::KfacOptions;
using amari::curvature::KfacPreconditioner;
using amari::curvature::KroneckerFactors;
using amari::curvature::MonteCarloFisherOperator;
using amari::curvature::spd_inverse;
using amari::curvature::symmetric_gram;
using amari::nn::Act;
using amari::nn::ForwardContext;
using amari::nn::Gaussian;
using amari::nn::Head;
using amari::nn::Linear;
using amari::nn::Model;
using amari::nn::Sequential;
using amari::nn::SigmoidBernoulli;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::normal_tensor;
using amari::test::Rng;
using amari::test::row;
using Catch::Matchers::Contains;

constexpr Index kD = 3, kH = 4, kC = 3, kN = 6;

// A dense row-major matrix for the references.
struct Mat {
  Index r = 0, c = 0;
  std::vector<double> v;
  Mat(Index rows, Index cols) : r(rows), c(cols), v(static_cast<std::size_t>(rows * cols), 0.0) {}
  double& operator()(Index i, Index j) { return v[static_cast<std::size_t>(i * c + j)]; }
  double operator()(Index i, Index j) const { return v[static_cast<std::size_t>(i * c + j)]; }
};

template <class T>
Mat mat_of(const Tensor<T>& t) {
  Mat m(t.dim(0), t.dim(1));
  for (Index k = 0; k < t.size(); ++k) m.v[static_cast<std::size_t>(k)] = static_cast<double>(t[k]);
  return m;
}

double max_abs(const Mat& m) {
  double s = 0;
  for (double x : m.v) s = std::max(s, std::fabs(x));
  return s;
}

// max |a - b| / max |b|.
double rel_diff(const Mat& a, const Mat& b) {
  double d = 0;
  for (std::size_t k = 0; k < a.v.size(); ++k) d = std::max(d, std::fabs(a.v[k] - b.v[k]));
  return d / max_abs(b);
}

Mat kron(const Mat& a, const Mat& g) {
  Mat k(a.r * g.r, a.c * g.c);
  for (Index i = 0; i < a.r; ++i)
    for (Index j = 0; j < a.c; ++j)
      for (Index p = 0; p < g.r; ++p)
        for (Index q = 0; q < g.c; ++q) k(i * g.r + p, j * g.c + q) = a(i, j) * g(p, q);
  return k;
}

Mat plus_identity(Mat m, double d) {
  for (Index i = 0; i < m.r; ++i) m(i, i) += d;
  return m;
}

// M x = b by Gaussian elimination with partial pivoting.
std::vector<double> solve(Mat m, std::vector<double> b) {
  const Index n = m.r;
  for (Index k = 0; k < n; ++k) {
    Index piv = k;
    for (Index i = k + 1; i < n; ++i)
      if (std::fabs(m(i, k)) > std::fabs(m(piv, k))) piv = i;
    for (Index j = 0; j < n; ++j) std::swap(m(k, j), m(piv, j));
    std::swap(b[static_cast<std::size_t>(k)], b[static_cast<std::size_t>(piv)]);
    for (Index i = k + 1; i < n; ++i) {
      const double f = m(i, k) / m(k, k);
      for (Index j = k; j < n; ++j) m(i, j) -= f * m(k, j);
      b[static_cast<std::size_t>(i)] -= f * b[static_cast<std::size_t>(k)];
    }
  }
  std::vector<double> x(static_cast<std::size_t>(n));
  for (Index i = n - 1; i >= 0; --i) {
    double s = b[static_cast<std::size_t>(i)];
    for (Index j = i + 1; j < n; ++j) s -= m(i, j) * x[static_cast<std::size_t>(j)];
    x[static_cast<std::size_t>(i)] = s / m(i, i);
  }
  return x;
}

void randomize(Model<double>& model, Rng& rng, double scale) {
  Tensor<double>& theta = model.parameters();
  for (Index k = 0; k < theta.size(); ++k) theta[k] = rng.uniform(-scale, scale);
}

Model<double> make_mlp(Rng& rng) {
  Model<double> model(amari::nn::mlp<double>({kD, kH, kC}, Act::tanh));
  randomize(model, rng, 1.0);
  return model;
}

// Targets of the kind each head expects.
Tensor<double> targets_for(const Head<double>& head, Index n, Index c, Rng& rng) {
  Tensor<double> y(Shape{n, c});
  const std::string name = head.name();
  for (Index i = 0; i < n; ++i) {
    if (name.find("softmax") != std::string::npos) {
      y[i * c + static_cast<Index>(rng.below(static_cast<std::uint64_t>(c)))] = 1.0;
    } else if (name.find("Bernoulli") != std::string::npos) {
      for (Index j = 0; j < c; ++j) y[i * c + j] = rng.uniform() < 0.5 ? 0.0 : 1.0;
    } else {
      for (Index j = 0; j < c; ++j) y[i * c + j] = rng.normal();
    }
  }
  return y;
}

std::vector<std::unique_ptr<Head<double>>> all_heads() {
  std::vector<std::unique_ptr<Head<double>>> heads;
  heads.push_back(std::make_unique<SoftmaxCrossEntropy<double>>());
  heads.push_back(std::make_unique<SigmoidBernoulli<double>>());
  heads.push_back(std::make_unique<Gaussian<double>>(0.7));
  return heads;
}

// Per-layer K-FAC references from per-example quantities: A = mean a a^T (a with a trailing 1
// for a layer with a bias), G = mean delta delta^T. The error of example i at layer l is the bias
// gradient of layer l of <c_i, z_i>, from a parameter VJP on example i alone; c_i comes from
// `cotangent(z_i, i)`. Every Linear layer must have a bias.
struct Reference {
  std::vector<Mat> a, g;
};
template <class Cotangent>
Reference reference_factors(const Model<double>& model, const Tensor<double>& x,
                            const Cotangent& cotangent) {
  const auto& net = dynamic_cast<const Sequential<double>&>(model.module());
  const std::vector<Tensor<double>>& views = model.parameter_views();
  Reference ref;
  const Index n = x.dim(0);
  for (Index i = 0; i < n; ++i) {
    // Activations: plain forward through the children, one example.
    std::vector<Tensor<double>> acts;
    std::vector<std::size_t> bias_index;  // parameter index of each Linear's bias
    Tensor<double> h = row(x, i);
    std::size_t p = 0;
    for (std::size_t m = 0; m < net.size(); ++m) {
      std::vector<amari::nn::ParamSpec> specs;
      net[m].declare(specs, "");
      ForwardContext<Tensor<double>> cursor(
          std::span<const Tensor<double>>(views).subspan(p, specs.size()));
      if (dynamic_cast<const Linear<double>*>(&net[m])) {
        REQUIRE(specs.size() == 2);
        acts.push_back(h.clone());
        bias_index.push_back(p + 1);
      }
      h = net[m].forward(h, cursor);
      p += specs.size();
    }
    // Errors: parameter gradient of <c_i, z_i> on a tape holding example i only.
    Tape<double> tape;
    const std::vector<Var<double>> params = model.variables(tape);
    const Var<double> z =
        model.forward(Var<double>(row(x, i)), std::span<const Var<double>>(params));
    const Tensor<double> c = cotangent(z.value(), i);
    const auto grads = tape.vjp(std::span<const Var<double>>(&z, 1),
                                std::span<const Tensor<double>>(&c, 1), params);
    if (ref.a.empty()) {
      for (std::size_t l = 0; l < acts.size(); ++l) {
        const Index in = acts[l].dim(1), out = grads[bias_index[l]].size();
        ref.a.emplace_back(in + 1, in + 1);
        ref.g.emplace_back(out, out);
      }
    }
    for (std::size_t l = 0; l < acts.size(); ++l) {
      const Index in = acts[l].dim(1);
      std::vector<double> a(static_cast<std::size_t>(in + 1), 1.0);
      for (Index k = 0; k < in; ++k) a[static_cast<std::size_t>(k)] = acts[l][k];
      const Tensor<double>& delta = grads[bias_index[l]];
      for (Index r = 0; r <= in; ++r)
        for (Index s = 0; s <= in; ++s)
          ref.a[l](r, s) += a[static_cast<std::size_t>(r)] * a[static_cast<std::size_t>(s)] / n;
      for (Index r = 0; r < delta.size(); ++r)
        for (Index s = 0; s < delta.size(); ++s) ref.g[l](r, s) += delta[r] * delta[s] / n;
    }
  }
  return ref;
}

// True-Fisher cotangent of example i: mu(z_i) - T(y_i), y_i ~ r(.|z_i) drawn with the key
// (seed, example i, sample k).
auto sampled_error(const Head<double>& head, std::uint64_t seed, std::uint64_t k) {
  return [&head, seed, k](const Tensor<double>& zi, Index i) {
    const Tensor<double> y = head.sample(zi, seed, k, i);
    Tensor<double> s(zi.shape());
    head.score(zi, y, s);
    for (Index j = 0; j < s.size(); ++j) s[j] = -s[j];
    return s;
  };
}

Mat dense_fisher_block(amari::curvature::LinearOperator<double>& op) {
  const Index n = op.size();
  Mat m(n, n);
  Tensor<double> e(Shape{n}), col(Shape{n});
  for (Index j = 0; j < n; ++j) {
    e.fill(0.0);
    e[j] = 1.0;
    op.apply(e, col);
    for (Index i = 0; i < n; ++i) m(i, j) = col[i];
  }
  return m;
}

Model<double> single_linear(Rng& rng) {
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(kD, kC);
  Model<double> model(net);
  randomize(model, rng, 1.0);
  return model;
}

}  // namespace

// ---- dense_solve
// ----------------------------------------------------------------------------------

TEST_CASE("dense_solve: blocked Cholesky gives L L^T = A and the inverse, across block edges",
          "[kfac]") {
  Rng rng(11);
  for (Index n : {1, 5, 64, 65, 150}) {
    const Tensor<double> x = normal_tensor<double>(Shape{n + 3, n}, rng);
    Tensor<double> a(Shape{n, n});
    symmetric_gram<double>(n + 3, n, 1.0, x.data(), n, 0.0, a.data(), n);
    for (Index i = 0; i < n; ++i) a[i * n + i] += 0.1;
    Tensor<double> l = a.clone();
    REQUIRE(cholesky_in_place(l) == -1);
    double err = 0, scale = 0;
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) {
        if (j > i) CHECK(l[i * n + j] == 0.0);
        double s = 0;
        for (Index k = 0; k < n; ++k) s += l[i * n + k] * l[j * n + k];
        err = std::max(err, std::fabs(s - a[i * n + j]));
        scale = std::max(scale, std::fabs(a[i * n + j]));
      }
    }
    CHECK(err <= 1e-13 * scale);
    const Tensor<double> inv = spd_inverse(a);
    double id_err = 0;
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) {
        CHECK(inv[i * n + j] == inv[j * n + i]);
        double s = 0;
        for (Index k = 0; k < n; ++k) s += inv[i * n + k] * a[k * n + j];
        id_err = std::max(id_err, std::fabs(s - (i == j ? 1.0 : 0.0)));
      }
    }
    CHECK(id_err < 1e-9);
    // cholesky_solve: A X = B.
    Tensor<double> b = normal_tensor<double>(Shape{n, 2}, rng), xs = b.clone();
    cholesky_solve_in_place(l, xs);
    double res = 0;
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < 2; ++j) {
        double s = 0;
        for (Index k = 0; k < n; ++k) s += a[i * n + k] * xs[k * 2 + j];
        res = std::max(res, std::fabs(s - b[i * 2 + j]));
      }
    CHECK(res < 1e-9);
  }
}

TEST_CASE("dense_solve: 1025 x 1025 inverse (the largest K-FAC factor of a 1024-input layer)",
          "[kfac]") {
  const Index n = 1025;
  Rng rng(12);
  const Tensor<double> x = normal_tensor<double>(Shape{n + 10, n}, rng);
  Tensor<double> a(Shape{n, n});
  symmetric_gram<double>(n + 10, n, 1.0 / n, x.data(), n, 0.0, a.data(), n);
  for (Index i = 0; i < n; ++i) a[i * n + i] += 1e-2;
  const Tensor<double> inv = spd_inverse(a);
  // A (A^{-1} v) = v for a few random v: O(n^2) each.
  for (int t = 0; t < 3; ++t) {
    const Tensor<double> v = normal_tensor<double>(Shape{n}, rng);
    std::vector<double> w(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) {
      double s = 0;
      for (Index k = 0; k < n; ++k) s += inv[i * n + k] * v[k];
      w[static_cast<std::size_t>(i)] = s;
    }
    double err = 0;
    for (Index i = 0; i < n; ++i) {
      double s = 0;
      for (Index k = 0; k < n; ++k) s += a[i * n + k] * w[static_cast<std::size_t>(k)];
      err = std::max(err, std::fabs(s - v[i]));
    }
    CHECK(err < 1e-8);
  }
  // The blocks run in parallel, each GEMM on one thread: 1 and 2 threads give the same bits.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Tensor<double> one = spd_inverse(a);
  omp_set_num_threads(2);
  const Tensor<double> two = spd_inverse(a);
  omp_set_num_threads(saved);
  Index differ = 0;
  for (Index i = 0; i < n * n; ++i) differ += one[i] != two[i] || one[i] != inv[i];
  CHECK(differ == 0);
}

TEST_CASE("dense_solve: a matrix that is not positive definite reports the failing pivot",
          "[kfac]") {
  // diag(1, 4, -1, 2) with a small off-diagonal coupling: the third pivot is negative.
  Tensor<double> a =
      Tensor<double>::from(Shape{4, 4}, {1, 0.1, 0, 0, 0.1, 4, 0, 0, 0, 0, -1, 0, 0, 0, 0, 2});
  Tensor<double> l = a.clone();
  CHECK(cholesky_in_place(l) == 2);
  CHECK_THROWS_WITH(spd_inverse(a), Contains("pivot 2"));
  Tensor<double> nan = Tensor<double>::from(Shape{2, 2}, {1, 0, NAN, 1});
  CHECK(cholesky_in_place(nan) == 1);
}

TEST_CASE("symmetric_gram: equals X^T X (alpha, beta) and is exactly symmetric", "[kfac]") {
  Rng rng(13);
  const Index m = 37, n = 70;  // n crosses a block edge
  const Tensor<float> x = normal_tensor<float>(Shape{m, n}, rng);
  Tensor<float> c0 = normal_tensor<float>(Shape{n, n}, rng);
  for (Index i = 0; i < n; ++i)  // symmetric start
    for (Index j = 0; j < i; ++j) c0[j * n + i] = c0[i * n + j];
  Tensor<float> c = c0.clone();
  symmetric_gram<float>(m, n, 0.5, x.data(), n, 0.25, c.data(), n);
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < n; ++j) {
      double s = 0;
      for (Index k = 0; k < m; ++k) s += static_cast<double>(x[k * n + i]) * x[k * n + j];
      CHECK(c[i * n + j] == Approx(0.5 * s + 0.25 * c0[i * n + j]).margin(1e-4));
      CHECK(c[i * n + j] == c[j * n + i]);
    }
  }
}

// ---- the Kronecker factors
// --------------------------------------------------------------------------

TEST_CASE(
    "K-FAC factors: A and G equal the means of per-example a a^T and delta delta^T "
    "(true Fisher, sampled labels), for the three heads",
    "[kfac]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(21);
    Model<double> model = make_mlp(rng);
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> y = targets_for(*head, kN, kC, rng);
    KroneckerFactors<double> f(model, *head, {.seed = 5});
    Tensor<double> g = model.zeros_like_parameters();
    const double loss = f.update(x, y, &g);
    REQUIRE(f.layers().size() == 2);
    const Reference ref = reference_factors(model, x, sampled_error(*head, 5, 0));
    for (std::size_t l = 0; l < 2; ++l) {
      INFO("layer " << l);
      CHECK(rel_diff(mat_of(f.factor_a(l)), ref.a[l]) < 1e-13);
      CHECK(rel_diff(mat_of(f.factor_g(l)), ref.g[l]) < 1e-12);
    }
    // The gradient and loss from the same recorded pass match nn::loss_and_gradient.
    Tensor<double> g_ref = model.zeros_like_parameters();
    const double loss_ref = amari::nn::loss_and_gradient(model, *head, x, y, g_ref);
    CHECK(loss == Approx(loss_ref).epsilon(1e-14));
    CHECK(amari::test::max_abs_diff(g, g_ref) < 1e-14);
  }
}

TEST_CASE("K-FAC factors: moving averages weight the k-th update by max(1/k, 1 - decay)",
          "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(22);
  Model<double> model = make_mlp(rng);
  KroneckerFactors<double> f(model, head, {.decay = 0.6, .seed = 9});
  std::vector<Reference> refs;
  for (std::uint64_t k = 0; k < 3; ++k) {
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> y = targets_for(head, kN, kC, rng);
    f.update(x, y);
    refs.push_back(reference_factors(model, x, sampled_error(head, 9, k)));
  }
  CHECK(f.updates() == 3);
  // Weights on the old value: k = 2: min(1/2, 0.6) = 0.5; k = 3: min(2/3, 0.6) = 0.6.
  for (std::size_t l = 0; l < 2; ++l) {
    Mat a = refs[0].a[l], g = refs[0].g[l];
    for (std::size_t e = 0; e < a.v.size(); ++e) {
      a.v[e] = 0.6 * (0.5 * a.v[e] + 0.5 * refs[1].a[l].v[e]) + 0.4 * refs[2].a[l].v[e];
    }
    for (std::size_t e = 0; e < g.v.size(); ++e) {
      g.v[e] = 0.6 * (0.5 * g.v[e] + 0.5 * refs[1].g[l].v[e]) + 0.4 * refs[2].g[l].v[e];
    }
    CHECK(rel_diff(mat_of(f.factor_a(l)), a) < 1e-13);
    CHECK(rel_diff(mat_of(f.factor_g(l)), g) < 1e-12);
  }
}

TEST_CASE("K-FAC factors: the empirical variant uses the data labels' errors, not sampled ones",
          "[kfac]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(23);
    Model<double> model = make_mlp(rng);
    const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
    const Tensor<double> y = targets_for(*head, kN, kC, rng);
    KroneckerFactors<double> emp(model, *head, {.fisher = KfacFisher::empirical, .seed = 5});
    KroneckerFactors<double> fisher(model, *head, {.fisher = KfacFisher::sampled, .seed = 5});
    emp.update(x, y);
    fisher.update(x, y);
    CHECK_THAT(emp.name(), Contains("EMPIRICAL"));
    const Reference ref = reference_factors(model, x, [&](const Tensor<double>& zi, Index i) {
      Tensor<double> s(zi.shape());
      head->score(zi, row(y, i), s);  // data label
      for (Index j = 0; j < s.size(); ++j) s[j] = -s[j];
      return s;
    });
    for (std::size_t l = 0; l < 2; ++l) {
      CHECK(rel_diff(mat_of(emp.factor_a(l)), ref.a[l]) < 1e-13);
      CHECK(rel_diff(mat_of(emp.factor_g(l)), ref.g[l]) < 1e-12);
      // The sampled-label G is a different matrix.
      CHECK(rel_diff(mat_of(fisher.factor_g(l)), ref.g[l]) > 1e-2);
    }
  }
}

TEST_CASE("K-FAC factors: statistics_batch restricts A and G to the first examples", "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(24);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  KroneckerFactors<double> f(model, head, {.seed = 3, .statistics_batch = 2});
  f.update(x, y);
  const Reference ref =
      reference_factors(model, x.view(0, Shape{2, kD}), sampled_error(head, 3, 0));
  for (std::size_t l = 0; l < 2; ++l) {
    CHECK(rel_diff(mat_of(f.factor_a(l)), ref.a[l]) < 1e-13);
    CHECK(rel_diff(mat_of(f.factor_g(l)), ref.g[l]) < 1e-12);
  }
}

TEST_CASE(
    "K-FAC: one Linear layer, one example: A (x) G is exactly the MC Fisher with the same "
    "sampled label",
    "[kfac]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(31);
    Model<double> model = single_linear(rng);
    const Tensor<double> x1 = normal_tensor<double>(Shape{1, kD}, rng);
    const Tensor<double> y1 = targets_for(*head, 1, kC, rng);
    MonteCarloFisherOperator<double> mc(model, *head, x1, 1, 17);  // draws sample(z, 17, 0)
    const Mat fisher = dense_fisher_block(mc);
    KroneckerFactors<double> f(model, *head, {.seed = 17});
    f.update(x1, y1);
    const Mat k = kron(mat_of(f.factor_a(0)), mat_of(f.factor_g(0)));
    REQUIRE(k.r == model.num_parameters());
    CHECK(rel_diff(k, fisher) < 1e-13);

    // In a deeper net too, with one example, every diagonal block of the MC Fisher is A_l (x) G_l.
    Model<double> deep = make_mlp(rng);
    MonteCarloFisherOperator<double> mc_deep(deep, *head, x1, 1, 17);
    const Mat fd = dense_fisher_block(mc_deep);
    KroneckerFactors<double> fdeep(deep, *head, {.seed = 17});
    fdeep.update(x1, y1);
    for (std::size_t l = 0; l < fdeep.layers().size(); ++l) {
      const auto& L = fdeep.layers()[l];
      const Mat kl = kron(mat_of(fdeep.factor_a(l)), mat_of(fdeep.factor_g(l)));
      Mat block(kl.r, kl.c);
      for (Index i = 0; i < kl.r; ++i)
        for (Index j = 0; j < kl.c; ++j) block(i, j) = fd(L.offset + i, L.offset + j);
      CHECK(rel_diff(kl, block) < 1e-12);
    }

    // With two examples A (x) G is only an approximation of the block.
    const Tensor<double> x2 = normal_tensor<double>(Shape{2, kD}, rng);
    const Tensor<double> y2 = targets_for(*head, 2, kC, rng);
    MonteCarloFisherOperator<double> mc2(model, *head, x2, 1, 17);
    KroneckerFactors<double> f2(model, *head, {.seed = 17});
    f2.update(x2, y2);
    CHECK(rel_diff(kron(mat_of(f2.factor_a(0)), mat_of(f2.factor_g(0))), dense_fisher_block(mc2)) >
          1e-3);
  }
}

TEST_CASE(
    "K-FAC: the preconditioned gradient equals the dense solve with "
    "kron(A + pi sqrt(lambda) I, G + sqrt(lambda)/pi I) per layer (with and without bias)",
    "[kfac]") {
  Rng rng(41);
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(kD, kH, false);  // no bias: A is in x in
  net->emplace<amari::nn::Tanh<double>>();
  net->emplace<Linear<double>>(kH, kC);
  Model<double> model(net);
  randomize(model, rng, 1.0);
  SoftmaxCrossEntropy<double> head;
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  KroneckerFactors<double> f(model, head, {.seed = 1});
  f.update(x, y);
  const double lambda = 0.05;
  f.update_inverses(lambda);
  const Tensor<double> g = normal_tensor<double>(Shape{model.num_parameters()}, rng);
  Tensor<double> u(g.shape());
  f.precondition(g, u);

  REQUIRE(f.layers().size() == 2);
  CHECK(f.factor_a(0).dim(0) == kD);
  CHECK(f.factor_a(1).dim(0) == kH + 1);
  for (std::size_t l = 0; l < 2; ++l) {
    INFO("layer " << l);
    const auto& L = f.layers()[l];
    const Mat a = mat_of(f.factor_a(l)), gm = mat_of(f.factor_g(l));
    double ta = 0, tg = 0;
    for (Index i = 0; i < a.r; ++i) ta += a(i, i) / a.r;
    for (Index i = 0; i < gm.r; ++i) tg += gm(i, i) / gm.r;
    const double pi = std::sqrt(ta / tg);
    CHECK(f.pi(l) == Approx(pi).epsilon(1e-14));
    CHECK(f.damping_used(l) == lambda);
    const Mat m =
        kron(plus_identity(a, pi * std::sqrt(lambda)), plus_identity(gm, std::sqrt(lambda) / pi));
    const Index len = L.rows() * L.out;
    std::vector<double> b(g.data() + L.offset, g.data() + L.offset + len);
    const std::vector<double> want = solve(m, b);
    double err = 0, scale = 0;
    for (Index k = 0; k < len; ++k) {
      err = std::max(err, std::fabs(u[L.offset + k] - want[static_cast<std::size_t>(k)]));
      scale = std::max(scale, std::fabs(want[static_cast<std::size_t>(k)]));
    }
    CHECK(err < 1e-11 * scale);
  }
  // In place gives the same.
  Tensor<double> in_place = g.clone();
  f.precondition(in_place, in_place);
  CHECK(amari::test::max_abs_diff(in_place, u) == 0.0);

  // KfacPreconditioner applies the same map.
  KfacPreconditioner<double> m(f);
  CHECK(m.size() == model.num_parameters());
  Tensor<double> z(g.shape());
  m.apply(g, z);
  CHECK(amari::test::max_abs_diff(z, u) == 0.0);
  CHECK_THAT(m.name(), Contains("K-FAC(true Fisher, 2 layers"));
}

TEST_CASE(
    "K-FAC preconditioner: on softmax regression with badly scaled inputs, PCG on the "
    "damped GGN needs fewer than half the CG iterations",
    "[kfac]") {
  // Feature j has scale 10^(2j/(D-1) - 1) and mean 0.5: the GGN inherits the input covariance,
  // which is what the factor A captures. (On tiny random MLPs the cross-layer blocks dominate and
  // no block-diagonal preconditioner, not even the exact blocks, beats plain CG.)
  const Index d = 30, c = 5, n = 200;
  Rng rng(42);
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(d, c);
  Model<double> model(net, 3);
  SoftmaxCrossEntropy<double> head;
  Tensor<double> x = normal_tensor<double>(Shape{n, d}, rng);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < d; ++j)
      x[i * d + j] = x[i * d + j] * std::pow(10.0, 2.0 * j / (d - 1) - 1.0) + 0.5;
  const Tensor<double> y = targets_for(head, n, c, rng);
  const double lambda = 1e-3;
  KroneckerFactors<double> f(model, head, {.seed = 2});
  f.update(x, y);
  f.update_inverses(lambda);
  KfacPreconditioner<double> m(f);
  amari::curvature::GgnOperator<double> ggn(model, head, x);
  amari::curvature::DampedOperator<double> a(ggn, lambda);
  const Tensor<double> b = normal_tensor<double>(Shape{model.num_parameters()}, rng);
  const amari::curvature::CgOptions opts{
      .max_iterations = 2000, .relative_tolerance = 1e-6, .progress_stopping = false};
  const auto plain = amari::curvature::conjugate_gradient(a, b, opts);
  const auto pcg = amari::curvature::conjugate_gradient(a, b, opts, nullptr, &m);
  REQUIRE(plain.status == amari::curvature::CgStatus::converged);
  REQUIRE(pcg.status == amari::curvature::CgStatus::converged);
  INFO("plain " << plain.iterations << " preconditioned " << pcg.iterations);
  CHECK(pcg.iterations * 2 < plain.iterations);
}

// ---- the optimizer
// ------------------------------------------------------------------------------------

TEST_CASE("Kfac: 20 steps decrease the training loss with softmax, Bernoulli and Gaussian heads",
          "[kfac]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(51);
    const Index n = 64, d = 4, c = 3;
    // A teacher network labels the inputs, so the task is learnable.
    Model<double> teacher(amari::nn::mlp<double>({d, 6, c}, Act::tanh), 99);
    randomize(teacher, rng, 2.0);
    const Tensor<double> x = normal_tensor<double>(Shape{n, d}, rng);
    const Tensor<double> zt = teacher.forward(x);
    Tensor<double> y(zt.shape());
    const std::string name = head->name();
    for (Index i = 0; i < n; ++i) {
      Index best = 0;
      for (Index j = 0; j < c; ++j) {
        if (zt[i * c + j] > zt[i * c + best]) best = j;
        if (name.find("Bernoulli") != std::string::npos) y[i * c + j] = zt[i * c + j] > 0 ? 1 : 0;
        if (name.find("Gaussian") != std::string::npos) y[i * c + j] = zt[i * c + j];
      }
      if (name.find("softmax") != std::string::npos) y[i * c + best] = 1;
    }
    Model<double> model(amari::nn::mlp<double>({d, 8, c}, Act::tanh), 1);
    Kfac<double> kfac(model, *head, {.seed = 4});  // default options
    double first = 0, last = 0;
    int decreases = 0;
    for (int t = 0; t < 20; ++t) {
      const auto r = kfac.step(x, y);
      if (t == 0) first = r.loss;
      last = r.loss_after;
      decreases += r.loss_after < r.loss;
      CHECK(r.lambda == 1e-3);
      CHECK(r.gradient_norm > 0);
      CHECK(r.step_norm > 0);
      CHECK_FALSE(r.adaptive);  // the default mode has no quadratic model
    }
    INFO("loss " << first << " -> " << last);
    CHECK(last < 0.5 * first);
    CHECK(decreases >= 18);
    CHECK(kfac.steps() == 20);
  }
}

TEST_CASE("Kfac: the KL clip scales the step to lr^2 g^T F^-1 g = kl_clip", "[kfac]") {
  Rng rng(52);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  const Tensor<double> theta0 = model.gather();
  // Unclipped step for reference.
  Kfac<double> free(model, head, {.learning_rate = 1.0, .kl_clip = 0});
  const auto r_free = free.step(x, y);
  CHECK(r_free.step_scale == 1.0);
  Tensor<double> d_free = model.gather();
  for (Index k = 0; k < d_free.size(); ++k) d_free[k] -= theta0[k];  // -lr F^-1 g
  model.scatter(theta0);
  Tensor<double> g = model.zeros_like_parameters();
  amari::nn::loss_and_gradient(model, head, x, y, g);
  const double gfg = -amari::test::dot(g, d_free);  // g^T F^-1 g (lr = 1)
  REQUIRE(gfg > 0);
  const double clip = 0.01 * gfg;
  Kfac<double> clipped(model, head, {.learning_rate = 1.0, .kl_clip = clip});
  const auto r = clipped.step(x, y);
  CHECK(r.step_scale == Approx(std::sqrt(clip / gfg)).epsilon(1e-12));
  CHECK(r.step_norm == Approx(r_free.step_norm * r.step_scale).epsilon(1e-12));
}

TEST_CASE("Kfac: the step multiplier scales the update after the KL clip (0 leaves theta)",
          "[kfac]") {
  Rng rng(54);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  const Tensor<double> theta0 = model.gather();
  Kfac<double> full(model, head, {.learning_rate = 1.0, .kl_clip = 1e-4});
  const auto r_full = full.step(x, y);
  REQUIRE(r_full.step_scale < 1);  // clipped
  model.scatter(theta0);
  Kfac<double> half(model, head, {.learning_rate = 1.0, .kl_clip = 1e-4});
  half.set_step_multiplier(0.5);
  CHECK(half.step_multiplier() == 0.5);
  const auto r_half = half.step(x, y);
  CHECK(r_half.step_norm == Approx(0.5 * r_full.step_norm).epsilon(1e-12));
  model.scatter(theta0);
  Kfac<double> none(model, head);
  none.set_step_multiplier(0);
  none.step(x, y);
  CHECK(amari::test::max_abs_diff(model.parameters(), theta0) == 0.0);
  CHECK_THROWS_AS(none.set_step_multiplier(-1), ValueError);
}

TEST_CASE("Kfac: weight decay joins the damping of the inverses (gamma = sqrt(lambda + wd))",
          "[kfac]") {
  Rng rng(53);
  SoftmaxCrossEntropy<double> head;
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  Kfac<double> kfac(model, head, {.damping = 0.01, .weight_decay = 0.02});
  kfac.step(x, y);
  for (std::size_t l = 0; l < 2; ++l) CHECK(kfac.factors().damping_used(l) == Approx(0.03));
}

TEST_CASE("Kfac: the same seed gives bitwise the same parameters, another seed does not",
          "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(61);
  const Tensor<double> x = normal_tensor<double>(Shape{16, kD}, rng);
  const Tensor<double> y = targets_for(head, 16, kC, rng);
  auto run = [&](std::uint64_t seed) {
    Model<double> model(amari::nn::mlp<double>({kD, kH, kC}, Act::tanh), 3);
    Kfac<double> kfac(model, head,
                      {.inverse_update_every = 2, .seed = seed, .momentum = 0.9, .kl_clip = 1e-2});
    for (int t = 0; t < 5; ++t) kfac.step(x, y);
    return model.gather().to_vector();
  };
  const std::vector<double> a = run(7), b = run(7), c = run(8);
  CHECK(a == b);
  CHECK(a != c);
}

TEST_CASE("Kfac: float models train too", "[kfac]") {
  Rng rng(62);
  SoftmaxCrossEntropy<float> head;
  Model<float> model(amari::nn::mlp<float>({kD, 8, kC}, Act::tanh), 2);
  const Tensor<float> x = normal_tensor<float>(Shape{32, kD}, rng);
  std::vector<int> labels;
  for (Index i = 0; i < 32; ++i) labels.push_back(x[i * kD] > 0 ? 0 : (x[i * kD + 1] > 0 ? 1 : 2));
  const Tensor<float> y = amari::nn::one_hot<float>(labels, kC);
  Kfac<float> kfac(model, head, {.learning_rate = 0.2});
  const double first = kfac.step(x, y).loss;
  double last = 0;
  for (int t = 0; t < 15; ++t) last = kfac.step(x, y).loss_after;
  CHECK(last < 0.6 * first);
}

// ---- errors
// ---------------------------------------------------------------------------------------------

TEST_CASE(
    "Kfac: models without a tapped layer, grouped convolutions and shared weights raise "
    "ValueError naming the problem",
    "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(70);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  // Parameters only in untapped modules (layer norm).
  Model<double> norm_only(std::make_shared<amari::nn::LayerNorm<double>>(kD));
  KroneckerFactors<double> f(norm_only, head);
  CHECK_THROWS_AS(f.update(x, y), ValueError);
  CHECK_THROWS_WITH(f.update(x, y), Contains("tapped no Linear or Conv2d layer"));
  CHECK(f.updates() == 0);
  // A grouped convolution. (It is the last layer so that the pass completes whatever its output
  // size: GCC 12 with -march=native on AVX-512 was seen to give Conv2d(4, 4, 1, {.groups = 2}) the
  // padding (1, 0).)
  amari::Conv2dOptions two_groups;
  two_groups.groups = 2;
  auto grouped = std::make_shared<Sequential<double>>();
  grouped->emplace<amari::nn::Reshape<double>>(std::vector<Index>{1, 1, 4})
      .emplace<amari::nn::Conv2d<double>>(4, 4, 1, two_groups)
      .emplace<amari::nn::Flatten<double>>();
  Model<double> gm(grouped);
  KroneckerFactors<double> fg(gm, head);
  const Tensor<double> x4 = normal_tensor<double>(Shape{kN, 4}, rng);
  const Tensor<double> y4 = normal_tensor<double>(Shape{kN, 4}, rng);
  CHECK_THROWS_WITH(fg.update(x4, y4),
                    Contains("1: Conv2d(4 -> 4, 1) is a grouped convolution (groups = 2)"));
  // One Linear weight used twice in one pass (a forward function tapping it twice).
  auto twice = amari::nn::function_module<double>(
      "tied", {{"weight", Shape{kD, kD}, amari::nn::Init::xavier_uniform, kD, kD}},
      [](const auto& in, auto& c) {
        using V = std::decay_t<decltype(in)>;
        const V& w = c.next();
        const V h = amari::matmul(in, w);
        amari::nn::LayerTap<V> tap;
        tap.input = &in;
        tap.output = &h;
        c.tap(tap);
        const V out = amari::matmul(h, w);
        tap.input = &h;
        tap.output = &out;
        c.tap(tap);  // the same weight_index 0 again
        return out;
      });
  Model<double> tied(twice);
  KroneckerFactors<double> ft(tied, head);
  CHECK_THROWS_WITH(ft.update(x, y), Contains("tapped twice"));
  // A bare Linear (the model is the layer) and parameter-free nested containers are fine.
  Model<double> bare(std::make_shared<Linear<double>>(kD, kC));
  KroneckerFactors<double> fb(bare, head);
  fb.update(x, y);
  REQUIRE(fb.layers().size() == 1);
  CHECK(fb.layers()[0].name == "Linear(3 -> 3)");
}

TEST_CASE("Kfac: bad options and misuse raise errors naming the problem", "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(71);
  Model<double> model = make_mlp(rng);
  CHECK_THROWS_WITH(Kfac<double>(model, head, {.damping = 0}), Contains("damping"));
  CHECK_THROWS_WITH(Kfac<double>(model, head, {.decay = 1}), Contains("decay"));
  CHECK_THROWS_WITH(Kfac<double>(model, head, {.inverse_update_every = 0}),
                    Contains("inverse_update_every"));
  CHECK_THROWS_WITH(Kfac<double>(model, head, {.momentum = -0.1}), Contains("momentum"));
  CHECK_THROWS_WITH(Kfac<double>(model, head, {.kl_clip = -1}), Contains("kl_clip"));
  KroneckerFactors<double> f(model, head);
  CHECK_THROWS_WITH(f.update_inverses(0.1), Contains("no statistics yet"));
  Tensor<double> g = model.zeros_like_parameters(), out = g.clone();
  CHECK_THROWS_WITH(f.precondition(g, out), Contains("no inverses yet"));
  KfacPreconditioner<double> m(f);
  CHECK_THROWS_AS(m.apply(g, out), ValueError);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  CHECK_THROWS_AS(f.update(x, Tensor<double>(Shape{kN + 1, kC})), amari::ShapeError);
}

// ---- hardening: non-finite statistics, reset, error types, the strong guarantee (issue 10)
// -------

namespace {

// Every statistic of two factor objects is bitwise the same.
void check_same_statistics(const KroneckerFactors<double>& a, const KroneckerFactors<double>& b) {
  REQUIRE(a.layers().size() == b.layers().size());
  CHECK(a.updates() == b.updates());
  CHECK(a.has_inverses() == b.has_inverses());
  for (std::size_t l = 0; l < a.layers().size(); ++l) {
    CHECK(amari::test::max_abs_diff(a.factor_a(l), b.factor_a(l)) == 0.0);
    CHECK(amari::test::max_abs_diff(a.factor_g(l), b.factor_g(l)) == 0.0);
    if (a.has_inverses()) {
      CHECK(amari::test::max_abs_diff(a.inverse_a(l), b.inverse_a(l)) == 0.0);
      CHECK(amari::test::max_abs_diff(a.inverse_g(l), b.inverse_g(l)) == 0.0);
    }
  }
}

}  // namespace

TEST_CASE(
    "K-FAC: a batch whose statistics are not finite raises ValueError naming the layer and "
    "leaves every average unchanged",
    "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(72);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  // Inputs of 1e200: the tanh saturates so the loss is finite, but a a^T overflows in layer 0.
  const Tensor<double> huge = Tensor<double>::full(Shape{kN, kD}, 1e200);
  for (KfacApproximation approx : {KfacApproximation::kfac, KfacApproximation::ekfac}) {
    INFO("ekfac " << (approx == KfacApproximation::ekfac));
    KroneckerFactors<double> f(model, head, {.seed = 3, .approximation = approx});
    KroneckerFactors<double> clean(model, head, {.seed = 3, .approximation = approx});
    // Before any statistics, and after some.
    CHECK_THROWS_WITH(f.update(huge, y), Contains("layer 0: Linear(3 -> 4)") &&
                                             Contains("factor A is not finite") &&
                                             Contains("left unchanged"));
    CHECK(f.updates() == 0);
    CHECK(f.layers().empty());
    f.update(x, y);
    clean.update(x, y);
    Tensor<double> gradient = Tensor<double>::full(Shape{model.num_parameters()}, 7.0);
    CHECK_THROWS_AS(f.update(huge, y, &gradient), ValueError);
    CHECK(amari::test::max_abs_diff(gradient, Tensor<double>::full(gradient.shape(), 7.0)) == 0.0);
    check_same_statistics(f, clean);
    // The next update is the one the object would have made without the bad batch.
    f.update(x, y);
    clean.update(x, y);
    f.update_inverses(1e-3);
    clean.update_inverses(1e-3);
    check_same_statistics(f, clean);
    if (approx == KfacApproximation::ekfac) {
      CHECK(amari::test::max_abs_diff(f.scalings(0), clean.scalings(0)) == 0.0);
    }
  }

  // In float, inputs of 1e20 (the example of issue 10): a a^T = 1e40 overflows.
  SoftmaxCrossEntropy<float> head32;
  Model<float> model32(amari::nn::mlp<float>({kD, kH, kC}, Act::tanh));
  KroneckerFactors<float> f32(model32, head32);
  const Tensor<float> y32 = amari::test::convert<float>(y);
  f32.update(amari::test::convert<float>(x), y32);
  const Tensor<float> a0 = f32.factor_a(0).clone();
  CHECK_THROWS_AS(f32.update(Tensor<float>::full(Shape{kN, kD}, 1e20f), y32), ValueError);
  CHECK(amari::test::max_abs_diff(f32.factor_a(0), a0) == 0.0);
  f32.update_inverses(1e-3);  // the averages are still usable
}

TEST_CASE(
    "K-FAC: reset_statistics forgets every statistic, the next update equals that of a new "
    "object",
    "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(73);
  Model<double> model = make_mlp(rng);
  const Tensor<double> x1 = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> x2 = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  for (KfacApproximation approx : {KfacApproximation::kfac, KfacApproximation::ekfac}) {
    INFO("ekfac " << (approx == KfacApproximation::ekfac));
    KroneckerFactors<double> f(model, head, {.seed = 3, .approximation = approx});
    f.update(x1, y);
    f.update(x1, y);
    f.update_inverses(1e-2);
    f.reset_statistics();
    CHECK(f.updates() == 0);
    CHECK(!f.has_inverses());
    CHECK(f.layers().empty());
    CHECK_THROWS_AS(f.update_inverses(1e-2), ValueError);
    KroneckerFactors<double> fresh(model, head, {.seed = 3, .approximation = approx});
    f.update(x2, y);
    fresh.update(x2, y);
    f.update_inverses(1e-2);
    fresh.update_inverses(1e-2);
    check_same_statistics(f, fresh);
  }
  // The optimizer: a reset refreshes the inverses at the next step.
  Kfac<double> kfac(model, head, {.inverse_update_every = 100, .seed = 2});
  kfac.step(x1, y);
  kfac.step(x1, y);
  kfac.reset_statistics();
  CHECK(kfac.factors().updates() == 0);
  kfac.step(x2, y);
  CHECK(kfac.factors().updates() == 1);
  CHECK(kfac.factors().has_inverses());
}

TEST_CASE(
    "K-FAC: misuse raises amari errors, never std::out_of_range (layer indices, a Sequential "
    "changed after its Model was built, a module failing with a standard logic error)",
    "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(74);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  Model<double> model = make_mlp(rng);
  KroneckerFactors<double> f(model, head);
  CHECK_THROWS_WITH(f.factor_a(0),
                    Contains("layer index 0 out of range") && Contains("no update yet"));
  f.update(x, y);
  CHECK_THROWS_AS(f.factor_a(2), ValueError);
  CHECK_THROWS_AS(f.factor_g(2), ValueError);
  CHECK_THROWS_AS(f.inverse_a(2), ValueError);
  CHECK_THROWS_AS(f.inverse_g(2), ValueError);
  CHECK_THROWS_AS(f.pi(2), ValueError);
  CHECK_THROWS_AS(f.damping_used(2), ValueError);
  CHECK_THROWS_AS(f.eigenvectors_a(2), ValueError);
  CHECK_THROWS_AS(f.scalings(9), ValueError);

  // A Sequential that grew after the Model was built.
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(kD, kH).emplace<amari::nn::Tanh<double>>();
  Model<double> grown(net);
  net->emplace<Linear<double>>(kH, kC);
  Kfac<double> kfac(grown, head);
  CHECK_THROWS_AS(kfac.step(x, y), amari::Error);

  // A module whose forward pass throws a standard logic error.
  auto broken = amari::nn::function_module<double>(
      "broken", {{"weight", Shape{kD, kC}, amari::nn::Init::xavier_uniform, kD, kC}},
      [](const auto& in, auto& c) -> std::decay_t<decltype(in)> {
        (void)c.next();
        (void)in;
        throw std::out_of_range("vector::_M_range_check");
      });
  Model<double> bad(broken);
  KroneckerFactors<double> fb(bad, head);
  CHECK_THROWS_WITH(fb.update(x, y), Contains("K-FAC: the forward pass of broken failed") &&
                                         Contains("_M_range_check"));
  CHECK_THROWS_AS(fb.update(x, y), amari::Error);
}

TEST_CASE(
    "Kfac: a step that throws midway leaves the optimizer, the factors and the model as before, "
    "and the next step gives what it would have given",
    "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(75);
  const Index n = 8;
  std::vector<Tensor<double>> xs;
  for (int b = 0; b < 3; ++b) xs.push_back(normal_tensor<double>(Shape{n, kD}, rng));
  const Tensor<double> y = targets_for(head, n, kC, rng);
  // A model with running statistics (batch norm, train mode) and a tripwire: an identity module
  // that throws on a chosen call of the plain forward pass (the loss after the step), after the
  // factors, the parameters, the momentum and the running statistics (moved by the step's
  // recorded pass) have all been moved.
  auto calls = std::make_shared<int>(0);
  auto trigger = std::make_shared<int>(-1);
  auto make = [&](std::uint64_t seed) {
    auto tripwire =
        amari::nn::function_module<double>("tripwire", {}, [calls, trigger](const auto& in, auto&) {
          using V = std::decay_t<decltype(in)>;
          if constexpr (std::is_same_v<V, Tensor<double>>) {
            if ((*calls)++ == *trigger) throw amari::Error("tripwire");
          }
          return in;
        });
    auto net = std::make_shared<Sequential<double>>();
    net->emplace<Linear<double>>(kD, kH)
        .emplace<amari::nn::BatchNorm<double>>(kH)
        .emplace<amari::nn::Tanh<double>>()
        .add(tripwire)
        .emplace<Linear<double>>(kH, kC);
    return Model<double>(net, seed);
  };
  for (KfacApproximation approx : {KfacApproximation::kfac, KfacApproximation::ekfac}) {
    INFO("ekfac " << (approx == KfacApproximation::ekfac));
    const KfacOptions options{
        .inverse_update_every = 2, .seed = 6, .momentum = 0.5, .approximation = approx};
    Model<double> model = make(1), twin = make(1);
    Kfac<double> kfac(model, head, options), reference(twin, head, options);
    for (int b = 0; b < 2; ++b) {
      kfac.step(xs[static_cast<std::size_t>(b)], y);
      reference.step(xs[static_cast<std::size_t>(b)], y);
    }
    // 1. The loss after the step throws (the step and the inverse refresh were done).
    *calls = 0;
    *trigger = 0;  // the step's only plain forward pass: the loss after the step
    CHECK_THROWS_WITH(kfac.step(xs[2], y), Contains("tripwire"));
    *trigger = -1;
    // 2. A NaN in the batch (non-finite loss) and 3. mismatched shapes.
    Tensor<double> nan_batch = xs[2].clone();
    nan_batch[3] = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(kfac.step(nan_batch, y), ValueError);
    CHECK_THROWS_AS(kfac.step(xs[2], Tensor<double>(Shape{n + 1, kC})), amari::ShapeError);
    // Nothing moved.
    CHECK(kfac.steps() == 2);
    CHECK(model.step() == twin.step());
    CHECK(amari::test::max_abs_diff(model.parameters(), twin.parameters()) == 0.0);
    CHECK(amari::test::max_abs_diff(model.state(), twin.state()) == 0.0);
    CHECK(amari::test::max_abs_diff(kfac.velocity(), reference.velocity()) == 0.0);
    check_same_statistics(kfac.factors(), reference.factors());
    // The next steps are those the optimizer would have taken without the failed calls.
    for (int b = 2; b >= 0; --b) {
      const auto r = kfac.step(xs[static_cast<std::size_t>(b)], y);
      const auto want = reference.step(xs[static_cast<std::size_t>(b)], y);
      CHECK(r.loss == want.loss);
      CHECK(r.loss_after == want.loss_after);
    }
    CHECK(amari::test::max_abs_diff(model.parameters(), twin.parameters()) == 0.0);
    CHECK(amari::test::max_abs_diff(model.state(), twin.state()) == 0.0);
    check_same_statistics(kfac.factors(), reference.factors());
  }
}

// ---- any model: taps, convolutions, untapped parameters, KFLR, the forward operator
// ---------------

namespace {

// The diagonal block [offset, offset + len) of a dense matrix.
Mat block_of(const Mat& m, Index offset, Index len) {
  Mat b(len, len);
  for (Index i = 0; i < len; ++i)
    for (Index j = 0; j < len; ++j) b(i, j) = m(offset + i, offset + j);
  return b;
}

// The GGN (1/N) sum_i J_i^T H_L(z_i) J_i assembled in double from forward-mode JVPs with unit
// tangents (J column by column) and the head's closed-form H_L products: no tape involved.
Mat dense_ggn(const Model<double>& model, const Head<double>& head, const Tensor<double>& x) {
  const Index p = model.num_parameters(), n = x.dim(0);
  const Tensor<double> z = model.forward(x);
  const Index c = z.dim(1);
  std::vector<Tensor<double>> jcols;  // J e_j, (N, C)
  Tensor<double> e(Shape{p});
  for (Index j = 0; j < p; ++j) {
    e.fill(0.0);
    e[j] = 1.0;
    jcols.push_back(model.forward_jvp(x, e).tangent_or_zeros());
  }
  Mat ggn(p, p);
  Tensor<double> hj(z.shape());
  for (Index j = 0; j < p; ++j) {
    head.hessian_product(z, jcols[static_cast<std::size_t>(j)], hj);
    for (Index i = 0; i < p; ++i) {
      double s = 0;
      for (Index k = 0; k < n * c; ++k) s += jcols[static_cast<std::size_t>(i)][k] * hj[k];
      ggn(i, j) = s / static_cast<double>(n);
    }
  }
  return ggn;
}

// Every K-FAC block A_l (x) G_l equals the matching diagonal block of `dense` (rel. tolerance).
void check_blocks(const KroneckerFactors<double>& f, const Mat& dense, double tolerance) {
  for (std::size_t l = 0; l < f.layers().size(); ++l) {
    const auto& L = f.layers()[l];
    INFO("layer " << L.name);
    const Mat k = kron(mat_of(f.factor_a(l)), mat_of(f.factor_g(l)));
    CHECK(rel_diff(k, block_of(dense, L.offset, k.r)) < tolerance);
  }
}

// Reshape(3, 3, 2) -> Conv2d(2 -> 4, 3x3, no padding) -> Tanh -> Flatten -> Linear(4 -> 3): the
// convolution has exactly one output position.
Model<double> one_position_cnn(Rng& rng) {
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<amari::nn::Reshape<double>>(std::vector<Index>{3, 3, 2})
      .emplace<amari::nn::Conv2d<double>>(2, 4, 3)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Flatten<double>>()
      .emplace<Linear<double>>(4, kC);
  Model<double> model(net);
  randomize(model, rng, 1.0);
  return model;
}

// A linear layer as a forward function that reports its own tap.
std::shared_ptr<amari::nn::FunctionModule<double>> tapped_function(Index in, Index out) {
  return amari::nn::function_module<double>(
      "tapped linear",
      {{"weight", Shape{in, out}, amari::nn::Init::xavier_uniform, in, out}, {"bias", Shape{out}}},
      [](const auto& x, auto& c) {
        using V = std::decay_t<decltype(x)>;
        const std::size_t first = c.position();
        const V& w = c.next();
        const V& b = c.next();
        const V y = amari::linear(x, w, b);
        amari::nn::LayerTap<V> tap;
        tap.input = &x;
        tap.output = &y;
        tap.weight_index = first;
        tap.has_bias = true;
        c.tap(tap);
        return y;
      });
}

// Linear(3 -> 4), Tanh, Residual(Sequential(Linear(4 -> 4), Tanh, Sequential(Linear(4 -> 4)))),
// LayerNorm(4) (untapped), a forward function tapping its linear map (4 -> 3).
Model<double> nested_model(Rng& rng) {
  auto inner = std::make_shared<Sequential<double>>();
  inner->emplace<Linear<double>>(kH, kH);
  auto body = std::make_shared<Sequential<double>>();
  body->emplace<Linear<double>>(kH, kH).emplace<amari::nn::Tanh<double>>().add(inner);
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(kD, kH)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Residual<double>>(body)
      .emplace<amari::nn::LayerNorm<double>>(kH)
      .add(tapped_function(kH, kC));
  Model<double> model(net);
  randomize(model, rng, 1.0);
  return model;
}

}  // namespace

TEST_CASE(
    "K-FAC conv block: one example, one output position: A (x) G is exactly the MC Fisher block "
    "(expand and reduce agree)",
    "[kfac]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(81);
    Model<double> model = one_position_cnn(rng);
    const Tensor<double> x1 = normal_tensor<double>(Shape{1, 18}, rng);
    const Tensor<double> y1 = targets_for(*head, 1, kC, rng);
    MonteCarloFisherOperator<double> mc(model, *head, x1, 1, 17);
    const Mat fisher = dense_fisher_block(mc);
    for (KfacConv approx : {KfacConv::expand, KfacConv::reduce}) {
      KroneckerFactors<double> f(model, *head, {.seed = 17, .conv = approx});
      f.update(x1, y1);
      REQUIRE(f.layers().size() == 2);
      CHECK(f.layers()[0].kind == KfacLayerKind::conv2d);
      CHECK(f.layers()[0].name == "1: Conv2d(2 -> 4, 3)");
      CHECK(f.layers()[0].rows() == 3 * 3 * 2 + 1);
      CHECK(f.layers()[1].kind == KfacLayerKind::linear);
      CHECK(f.untapped().empty());
      check_blocks(f, fisher, 1e-12);
    }
  }
}

TEST_CASE(
    "K-FAC conv block with stride, padding and dilation: A equals the mean of the im2col patch "
    "outer products (expand over examples and positions, reduce of the mean patch), reduced G "
    "the mean outer product of the bias gradients",
    "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(82);
  const amari::Conv2dOptions geometry{.stride = {2, 1}, .padding = {1, 1}, .dilation = {1, 2}};
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<amari::nn::Reshape<double>>(std::vector<Index>{5, 6, 2})
      .emplace<amari::nn::Conv2d<double>>(2, 3, 3, geometry)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::GlobalAvgPool<double>>()
      .emplace<Linear<double>>(3, kC);
  Model<double> model(net);
  randomize(model, rng, 1.0);
  const Index n = 4, k = 3 * 3 * 2, rows = k + 1;
  const Tensor<double> x = normal_tensor<double>(Shape{n, 60}, rng);
  const Tensor<double> y = targets_for(head, n, kC, rng);
  // Patches from the library's conv2d with an identity weight: output channel j of position t
  // is entry j of the patch (an independent im2col).
  Tensor<double> eye(Shape{3, 3, 2, k});
  for (Index j = 0; j < k; ++j) eye[j * k + j] = 1.0;
  const Tensor<double> patches = amari::conv2d(x.reshaped(Shape{n, 5, 6, 2}), eye, geometry);
  const Index positions = patches.size() / (n * k);
  REQUIRE(positions > 1);
  Mat a_expand(rows, rows), a_reduce(rows, rows);
  for (Index i = 0; i < n; ++i) {
    std::vector<double> mean(static_cast<std::size_t>(rows), 0.0);
    for (Index t = 0; t < positions; ++t) {
      std::vector<double> r(static_cast<std::size_t>(rows), 1.0);
      for (Index j = 0; j < k; ++j)
        r[static_cast<std::size_t>(j)] = patches[(i * positions + t) * k + j];
      for (Index p = 0; p < rows; ++p) {
        mean[static_cast<std::size_t>(p)] += r[static_cast<std::size_t>(p)] / positions;
        for (Index q = 0; q < rows; ++q)
          a_expand(p, q) +=
              r[static_cast<std::size_t>(p)] * r[static_cast<std::size_t>(q)] / (n * positions);
      }
    }
    for (Index p = 0; p < rows; ++p)
      for (Index q = 0; q < rows; ++q)
        a_reduce(p, q) += mean[static_cast<std::size_t>(p)] * mean[static_cast<std::size_t>(q)] / n;
  }
  KroneckerFactors<double> fe(model, head, {.seed = 4});
  KroneckerFactors<double> fr(model, head, {.seed = 4, .conv = KfacConv::reduce});
  fe.update(x, y);
  fr.update(x, y);
  CHECK(rel_diff(mat_of(fe.factor_a(0)), a_expand) < 1e-13);
  CHECK(rel_diff(mat_of(fr.factor_a(0)), a_reduce) < 1e-13);
  // Reduced G: the error summed over positions is the conv bias gradient of the example's
  // sampled-label loss <-score, z_i> (a parameter VJP on example i alone).
  Mat g_reduce(3, 3);
  const auto cot = sampled_error(head, 4, 0);
  for (Index i = 0; i < n; ++i) {
    Tape<double> tape;
    const std::vector<Var<double>> params = model.variables(tape);
    const Var<double> z =
        model.forward(Var<double>(row(x, i)), std::span<const Var<double>>(params));
    const Tensor<double> c = cot(z.value(), i);
    const auto grads = tape.vjp(std::span<const Var<double>>(&z, 1),
                                std::span<const Tensor<double>>(&c, 1), params);
    const Tensor<double>& gb = grads[1];  // the conv's bias
    for (Index p = 0; p < 3; ++p)
      for (Index q = 0; q < 3; ++q) g_reduce(p, q) += gb[p] * gb[q] / n;
  }
  CHECK(rel_diff(mat_of(fr.factor_g(0)), g_reduce) < 1e-12);
  // Expanded G sums the per-position outer products instead: a different matrix.
  CHECK(rel_diff(mat_of(fe.factor_g(0)), g_reduce) > 1e-3);
}

TEST_CASE(
    "K-FAC taps: layers inside a Residual, a nested Sequential and a forward function are found, "
    "and with one example each block is exactly the MC Fisher block",
    "[kfac]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(83);
    Model<double> model = nested_model(rng);
    const Tensor<double> x1 = normal_tensor<double>(Shape{1, kD}, rng);
    const Tensor<double> y1 = targets_for(*head, 1, kC, rng);
    KroneckerFactors<double> f(model, *head, {.seed = 17});
    f.update(x1, y1);
    REQUIRE(f.layers().size() == 4);
    CHECK(f.layers()[0].name == "0: Linear(3 -> 4)");
    CHECK(f.layers()[1].name == "2.body.0: Linear(4 -> 4)");
    CHECK(f.layers()[2].name == "2.body.2.0: Linear(4 -> 4)");
    CHECK(f.layers()[3].name == "4: Linear(4 -> 3)");
    // The layer norm's scale and shift (2 x 4 parameters) are the only untapped ones.
    REQUIRE(f.untapped().size() == 1);
    CHECK(f.untapped()[0].second == 2 * kH);
    CHECK(f.untapped()[0].first == model.layout()[6].offset);
    CHECK_THAT(f.name(), Contains("4 layers") && Contains("8 untapped"));
    MonteCarloFisherOperator<double> mc(model, *head, x1, 1, 17);
    check_blocks(f, dense_fisher_block(mc), 1e-12);
  }
}

TEST_CASE(
    "K-FAC untapped parameters: preconditioned by (c + lambda)^{-1} (c = untapped_curvature), "
    "plain gradient steps for c = 1",
    "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(84);
  Model<double> model = nested_model(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  const Tensor<double> g = normal_tensor<double>(Shape{model.num_parameters()}, rng);
  for (double c : {1.0, 0.0, 3.0}) {
    INFO("c = " << c);
    KroneckerFactors<double> f(model, head, {.untapped_curvature = c});
    f.update(x, y);
    const double lambda = 0.01;
    f.update_inverses(lambda);
    Tensor<double> u(g.shape());
    f.precondition(g, u);
    const auto [offset, length] = f.untapped().at(0);
    for (Index i = offset; i < offset + length; ++i)
      CHECK(u[i] == Approx(g[i] / (c + lambda)).epsilon(1e-14));
    KfacOperator<double> op(f);
    Tensor<double> fv(g.shape());
    op.apply(g, fv);
    for (Index i = offset; i < offset + length; ++i)
      CHECK(fv[i] == Approx(c * g[i]).epsilon(1e-14));
  }
  // The optimizer moves them like SGD with K-FAC's learning rate (c = 1, no clip, no momentum).
  Kfac<double> kfac(model, head, {.learning_rate = 0.5, .damping = 1e-3, .kl_clip = 0});
  const Tensor<double> theta0 = model.gather();
  Tensor<double> grad = model.zeros_like_parameters();
  amari::nn::loss_and_gradient(model, head, x, y, grad);
  kfac.step(x, y);
  const auto [offset, length] = kfac.factors().untapped().at(0);
  for (Index i = offset; i < offset + length; ++i) {
    CHECK(model.parameters()[i] == Approx(theta0[i] - 0.5 * grad[i] / (1 + 1e-3)).epsilon(1e-10));
  }
}

TEST_CASE(
    "KFLR: with one example, every block A_l (x) G_l is exactly the dense GGN block (from JVPs), "
    "with two it is an approximation",
    "[kfac]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(85);
    const Tensor<double> x1 = normal_tensor<double>(Shape{1, kD}, rng);
    const Tensor<double> y1 = targets_for(*head, 1, kC, rng);
    Model<double> lin = single_linear(rng);
    KroneckerFactors<double> f(lin, *head, {.fisher = KfacFisher::kflr});
    f.update(x1, y1);
    CHECK_THAT(f.name(), Contains("KFLR"));
    const Mat ggn = dense_ggn(lin, *head, x1);
    CHECK(rel_diff(kron(mat_of(f.factor_a(0)), mat_of(f.factor_g(0))), ggn) < 1e-12);
    // Deeper, and through a residual block and a forward function.
    Model<double> deep = nested_model(rng);
    KroneckerFactors<double> fd(deep, *head, {.fisher = KfacFisher::kflr});
    fd.update(x1, y1);
    check_blocks(fd, dense_ggn(deep, *head, x1), 1e-11);
    // Two examples: only an approximation of the block, except for the Gaussian head on one
    // Linear layer, where G = I / sigma^2 is the same for every example and A (x) G stays exact.
    const Tensor<double> x2 = normal_tensor<double>(Shape{2, kD}, rng);
    const Tensor<double> y2 = targets_for(*head, 2, kC, rng);
    KroneckerFactors<double> f2(lin, *head, {.fisher = KfacFisher::kflr});
    f2.update(x2, y2);
    const double diff =
        rel_diff(kron(mat_of(f2.factor_a(0)), mat_of(f2.factor_g(0))), dense_ggn(lin, *head, x2));
    if (head->name().find("Gaussian") != std::string::npos) {
      CHECK(diff < 1e-12);
    } else {
      CHECK(diff > 1e-3);
    }
  }
}

TEST_CASE(
    "KfacOperator: equals the dense blockdiag(A_l (x) G_l) + c I on untapped parameters, and with "
    "factored damping it is the matrix precondition() inverts",
    "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(86);
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(kD, kH, false)
      .emplace<amari::nn::LayerNorm<double>>(kH)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<Linear<double>>(kH, kC);
  Model<double> model(net);
  randomize(model, rng, 1.0);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  const double c = 0.7;
  KroneckerFactors<double> f(model, head, {.seed = 3, .untapped_curvature = c});
  KfacOperator<double> early(f);
  Tensor<double> v0 = model.zeros_like_parameters(), o0 = v0.clone();
  CHECK_THROWS_WITH(early.apply(v0, o0), Contains("no statistics yet"));
  f.update(x, y);
  const Index p = model.num_parameters();
  for (double lambda : {0.0, 0.05}) {
    INFO("lambda = " << lambda);
    Mat want(p, p);
    for (std::size_t l = 0; l < f.layers().size(); ++l) {
      const auto& L = f.layers()[l];
      Mat a = mat_of(f.factor_a(l)), g = mat_of(f.factor_g(l));
      if (lambda > 0) {
        double ta = 0, tg = 0;
        for (Index i = 0; i < a.r; ++i) ta += a(i, i) / a.r;
        for (Index i = 0; i < g.r; ++i) tg += g(i, i) / g.r;
        const double pi = std::sqrt(ta / tg);
        a = plus_identity(a, pi * std::sqrt(lambda));
        g = plus_identity(g, std::sqrt(lambda) / pi);
      }
      const Mat k = kron(a, g);
      for (Index i = 0; i < k.r; ++i)
        for (Index j = 0; j < k.c; ++j) want(L.offset + i, L.offset + j) = k(i, j);
    }
    for (const auto& [offset, length] : f.untapped())
      for (Index i = offset; i < offset + length; ++i) want(i, i) = c + lambda;
    KfacOperator<double> op(f, lambda);
    CHECK(op.size() == p);
    const amari::test::Dense got = amari::test::dense_of(op);
    Mat gm(p, p);
    gm.v = got.a;
    CHECK(rel_diff(gm, want) < 1e-14);
    if (lambda > 0) {
      // The damped operator undoes the preconditioner: K (K^{-1} g) = g.
      f.update_inverses(lambda);
      const Tensor<double> g = normal_tensor<double>(Shape{p}, rng);
      Tensor<double> u(g.shape()), back(g.shape());
      f.precondition(g, u);
      op.apply(u, back);
      CHECK(amari::test::max_abs_diff(back, g) < 1e-10 * max_abs(mat_of(g.reshaped(Shape{p, 1}))));
      CHECK_THAT(op.name(), Contains("factored damping"));
    }
  }
  CHECK_THROWS_AS(KfacOperator<double>(f, -1.0), ValueError);
}

TEST_CASE(
    "Kfac trains a residual MLP with a layer norm: the loss falls by more than half in 30 steps",
    "[kfac]") {
  Rng rng(87);
  const Index n = 128, d = 6, c = 4;
  Model<double> teacher(amari::nn::mlp<double>({d, 8, c}, Act::tanh), 98);
  randomize(teacher, rng, 2.0);
  const Tensor<double> x = normal_tensor<double>(Shape{n, d}, rng);
  const std::vector<int> labels = amari::nn::argmax_rows(teacher.forward(x));
  const Tensor<double> y = amari::nn::one_hot<double>(labels, c);
  auto body = std::make_shared<Sequential<double>>();
  body->emplace<Linear<double>>(16, 16).emplace<amari::nn::Tanh<double>>().emplace<Linear<double>>(
      16, 16);
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<Linear<double>>(d, 16)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Residual<double>>(body)
      .emplace<amari::nn::LayerNorm<double>>(16)
      .emplace<Linear<double>>(16, c);
  Model<double> model(net, 5);
  SoftmaxCrossEntropy<double> head;
  Kfac<double> kfac(model, head, {.learning_rate = 0.2, .damping = 1e-2, .seed = 1});
  double first = 0, last = 0;
  for (int t = 0; t < 30; ++t) {
    const auto r = kfac.step(x, y);
    if (t == 0) first = r.loss;
    last = r.loss_after;
  }
  INFO("loss " << first << " -> " << last);
  CHECK(kfac.factors().layers().size() == 4);
  CHECK(last < 0.5 * first);
}

TEST_CASE("Kfac trains a small CNN on synthetic images (expand and reduce, sampled and KFLR)",
          "[kfac]") {
  // 8x8 single-channel images: a bright 3x3 blob in one of four quadrants plus noise; the class is
  // the quadrant.
  Rng rng(88);
  const Index n = 96, side = 8, c = 4;
  Tensor<double> x(Shape{n, side * side});
  std::vector<int> labels;
  for (Index i = 0; i < n; ++i) {
    const int q = static_cast<int>(rng.below(4));
    labels.push_back(q);
    const Index r0 = (q / 2) * 4 + static_cast<Index>(rng.below(2)),
                c0 = (q % 2) * 4 + static_cast<Index>(rng.below(2));
    for (Index p = 0; p < side * side; ++p) x[i * side * side + p] = 0.3 * rng.normal();
    for (Index a = 0; a < 3; ++a)
      for (Index b = 0; b < 3; ++b) x[i * side * side + (r0 + a) * side + c0 + b] += 1.0;
  }
  const Tensor<double> y = amari::nn::one_hot<double>(labels, c);
  SoftmaxCrossEntropy<double> head;
  for (KfacFisher fisher : {KfacFisher::sampled, KfacFisher::kflr}) {
    for (KfacConv approx : {KfacConv::expand, KfacConv::reduce}) {
      INFO("kflr " << (fisher == KfacFisher::kflr) << " reduce " << (approx == KfacConv::reduce));
      auto net = std::make_shared<Sequential<double>>();
      net->emplace<amari::nn::Reshape<double>>(std::vector<Index>{side, side, 1})
          .emplace<amari::nn::Conv2d<double>>(1, 4, 3, amari::Conv2dOptions{.padding = {1, 1}})
          .emplace<amari::nn::ReLU<double>>()
          .emplace<amari::nn::MaxPool2d<double>>(2)
          .emplace<amari::nn::Conv2d<double>>(4, 8, 3, amari::Conv2dOptions{.padding = {1, 1}})
          .emplace<amari::nn::ReLU<double>>()
          .emplace<amari::nn::MaxPool2d<double>>(2)
          .emplace<amari::nn::Flatten<double>>()
          .emplace<Linear<double>>(8 * 2 * 2, c);
      Model<double> model(net, 6);
      Kfac<double> kfac(
          model, head,
          {.learning_rate = 0.3, .damping = 1e-2, .fisher = fisher, .seed = 2, .conv = approx});
      double first = 0, last = 0;
      for (int t = 0; t < 40; ++t) {
        const auto r = kfac.step(x, y);
        if (t == 0) first = r.loss;
        last = r.loss_after;
      }
      const double accuracy = amari::nn::accuracy(model.forward(x), labels);
      INFO("loss " << first << " -> " << last << ", accuracy " << accuracy);
      CHECK(kfac.factors().layers().size() == 3);
      CHECK(last < 0.3 * first);
      CHECK(accuracy > 0.9);
    }
  }
}

TEST_CASE("K-FAC: a forward pass that taps other layers than the first one raises ValueError",
          "[kfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(89);
  auto calls = std::make_shared<int>(0);
  auto net = amari::nn::function_module<double>(
      "sometimes tapped", {{"weight", Shape{kD, kC}, amari::nn::Init::xavier_uniform, kD, kC}},
      [calls](const auto& in, auto& c) {
        using V = std::decay_t<decltype(in)>;
        const V& w = c.next();
        const V out = amari::matmul(in, w);
        if ((*calls)++ == 0) {
          amari::nn::LayerTap<V> tap;
          tap.input = &in;
          tap.output = &out;
          c.tap(tap);
        }
        return out;
      });
  Model<double> model(net);
  KroneckerFactors<double> f(model, head);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  f.update(x, y);
  CHECK_THROWS_WITH(f.update(x, y), Contains("differ from the 1 layers of the first update"));
  CHECK(f.updates() == 1);
}

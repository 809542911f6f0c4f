// EKFAC (George et al. 2018) in curvature/kfac.hpp: K-FAC's eigenbasis with the eigenvalues
// replaced by the second moments of the per-example gradients in that basis.
//
// The references are built here, in double: per-example gradients from
// curvature::per_example_gradients (one reverse sweep per example, at sampled or data labels), the
// dense Fisher / GGN blocks from MonteCarloFisherOperator / GgnOperator products on unit vectors,
// and the EKFAC matrix (U_A (x) U_G) diag(s) (U_A (x) U_G)^T assembled entry by entry. The
// eigenbases are taken from the object under test, after checking that they are orthonormal
// eigenbases of its factors A and G (an eigenbasis is not unique, the EKFAC matrix depends on it).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/curvature/per_example.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/image_layers.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

#include "support/dense.hpp"
#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::curvature::GgnOperator;
using amari::curvature::Kfac;
using amari::curvature::KfacApproximation;
using amari::curvature::KfacConv;
using amari::curvature::KfacFisher;
using amari::curvature::KfacOperator;
using amari::curvature::KfacOptions;
using amari::curvature::KroneckerFactors;
using amari::curvature::MonteCarloFisherOperator;
using amari::nn::Act;
using amari::nn::Gaussian;
using amari::nn::Head;
using amari::nn::Linear;
using amari::nn::Model;
using amari::nn::Sequential;
using amari::nn::SigmoidBernoulli;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::Dense;
using amari::test::dense_of;
using amari::test::normal_tensor;
using amari::test::Rng;
using Catch::Matchers::Contains;

constexpr Index kD = 3, kH = 4, kC = 3, kN = 6;
constexpr KfacApproximation kEkfac = KfacApproximation::ekfac;

// A dense row-major matrix.
struct Mat {
  Index r = 0, c = 0;
  std::vector<double> v;
  Mat(Index rows, Index cols) : r(rows), c(cols), v(static_cast<std::size_t>(rows * cols), 0.0) {}
  double& operator()(Index i, Index j) { return v[static_cast<std::size_t>(i * c + j)]; }
  double operator()(Index i, Index j) const { return v[static_cast<std::size_t>(i * c + j)]; }
};

Mat mat_of(const Tensor<double>& t) {
  Mat m(t.dim(0), t.dim(1));
  for (Index k = 0; k < t.size(); ++k) m.v[static_cast<std::size_t>(k)] = t[k];
  return m;
}

// max |a - b| / max |b|.
double rel_diff(const Mat& a, const Mat& b) {
  double d = 0, s = 0;
  for (std::size_t k = 0; k < a.v.size(); ++k) {
    d = std::max(d, std::fabs(a.v[k] - b.v[k]));
    s = std::max(s, std::fabs(b.v[k]));
  }
  return d / s;
}

// The diagonal block [offset, offset + len) of a dense operator matrix.
Mat block_of(const Dense& m, Index offset, Index len) {
  Mat b(len, len);
  for (Index i = 0; i < len; ++i)
    for (Index j = 0; j < len; ++j) b(i, j) = m(offset + i, offset + j);
  return b;
}

// (U_A (x) U_G) diag(vec(s)) (U_A (x) U_G)^T for row-major vec (index i * out + p).
Mat ekfac_matrix(const Mat& ua, const Mat& ug, const Mat& s) {
  const Index r = ua.r, o = ug.r, len = r * o;
  Mat u(len, len);  // U_A (x) U_G
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < r; ++j)
      for (Index p = 0; p < o; ++p)
        for (Index q = 0; q < o; ++q) u(i * o + p, j * o + q) = ua(i, j) * ug(p, q);
  Mat e(len, len);
  for (Index a = 0; a < len; ++a)
    for (Index b = 0; b < len; ++b) {
      double sum = 0;
      for (Index k = 0; k < len; ++k) sum += u(a, k) * s.v[static_cast<std::size_t>(k)] * u(b, k);
      e(a, b) = sum;
    }
  return e;
}

// U^T M U for a symmetric block M in the basis U_A (x) U_G: its diagonal as an (r, o) matrix.
Mat diagonal_in_basis(const Mat& m, const Mat& ua, const Mat& ug) {
  const Index r = ua.r, o = ug.r;
  Mat s(r, o);
  for (Index j = 0; j < r; ++j)
    for (Index q = 0; q < o; ++q) {
      double sum = 0;
      for (Index a = 0; a < r * o; ++a) {
        const double ua_ = ua(a / o, j) * ug(a % o, q);
        for (Index b = 0; b < r * o; ++b) sum += ua_ * m(a, b) * ua(b / o, j) * ug(b % o, q);
      }
      s(j, q) = sum;
    }
  return s;
}

// s = (1/N) sum_n (U_A^T g_n U_G)^2 for the per-example gradients g_n ((rows, out) blocks of the
// rows of `per_example` at `offset`), accumulated with weight `weight`.
void add_scalings(const Tensor<double>& per_example, Index offset, const Mat& ua, const Mat& ug,
                  double weight, Mat& s) {
  const Index n = per_example.dim(0), p = per_example.dim(1), r = ua.r, o = ug.r;
  for (Index e = 0; e < n; ++e) {
    const double* g = per_example.data() + e * p + offset;
    for (Index j = 0; j < r; ++j)
      for (Index q = 0; q < o; ++q) {
        double t = 0;
        for (Index i = 0; i < r; ++i)
          for (Index k = 0; k < o; ++k) t += ua(i, j) * g[i * o + k] * ug(k, q);
        s(j, q) += weight * t * t / static_cast<double>(n);
      }
  }
}

// U is orthonormal and U^T F U is diagonal: an eigenbasis of the symmetric factor F.
void check_eigenbasis(const Tensor<double>& factor, const Tensor<double>& vectors) {
  const Mat f = mat_of(factor), u = mat_of(vectors);
  const Index n = f.r;
  REQUIRE(u.r == n);
  double scale = 0;
  for (double x : f.v) scale = std::max(scale, std::fabs(x));
  double orth = 0, off = 0;
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      double uu = 0, ufu = 0;
      for (Index k = 0; k < n; ++k) {
        uu += u(k, i) * u(k, j);
        for (Index l = 0; l < n; ++l) ufu += u(k, i) * f(k, l) * u(l, j);
      }
      orth = std::max(orth, std::fabs(uu - (i == j ? 1.0 : 0.0)));
      if (i != j) off = std::max(off, std::fabs(ufu));
    }
  CHECK(orth < 1e-12);
  CHECK(off < 1e-12 * scale);
}

void randomize(Model<double>& model, Rng& rng, double scale) {
  Tensor<double>& theta = model.parameters();
  for (Index k = 0; k < theta.size(); ++k) theta[k] = rng.uniform(-scale, scale);
}

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

Model<double> make_mlp(Rng& rng) {
  Model<double> model(amari::nn::mlp<double>({kD, kH, kC}, Act::tanh));
  randomize(model, rng, 1.0);
  return model;
}

// The EKFAC block of layer l as the forward operator applies it (KfacOperator, no damping).
Mat operator_block(KroneckerFactors<double>& f, std::size_t l, const Dense& dense) {
  const auto& L = f.layers()[l];
  return block_of(dense, L.offset, L.rows() * L.out);
}

// The sampled labels of update k: the head's counter-based draw keyed by (seed, row, k).
Tensor<double> sampled_labels(const Model<double>& model, const Head<double>& head,
                              const Tensor<double>& x, std::uint64_t seed, std::uint64_t k) {
  return head.sample(model.forward(x), seed, k);
}

}  // namespace

TEST_CASE(
    "EKFAC: one example and one Linear layer, the block equals the dense MC Fisher block "
    "(sampled) and the dense GGN block (KFLR)",
    "[kfac][ekfac]") {
  for (const auto& head : all_heads()) {
    INFO(head->name());
    Rng rng(101);
    auto net = std::make_shared<Sequential<double>>();
    net->emplace<Linear<double>>(kD, kC);
    Model<double> model(net);
    randomize(model, rng, 1.0);
    const Tensor<double> x1 = normal_tensor<double>(Shape{1, kD}, rng);
    const Tensor<double> y1 = targets_for(*head, 1, kC, rng);
    const Index p = model.num_parameters();

    MonteCarloFisherOperator<double> mc(model, *head, x1, 1, 17);  // draws sample(z, 17, 0)
    KroneckerFactors<double> f(model, *head, {.seed = 17, .approximation = kEkfac});
    f.update(x1, y1);
    KfacOperator<double> op(f);
    CHECK(rel_diff(block_of(dense_of(op), 0, p), block_of(dense_of(mc), 0, p)) < 1e-12);

    GgnOperator<double> ggn(model, *head, x1);
    KroneckerFactors<double> fk(model, *head,
                                {.fisher = KfacFisher::kflr, .approximation = kEkfac});
    fk.update(x1, y1);
    KfacOperator<double> opk(fk);
    CHECK(rel_diff(block_of(dense_of(opk), 0, p), block_of(dense_of(ggn), 0, p)) < 1e-12);
  }
}

TEST_CASE(
    "EKFAC: each block of a 2-layer MLP is (U_A x U_G) diag(s) (U_A x U_G) transposed, U_A and "
    "U_G eigenbases of A and G, s the mean squared per-example gradients in that basis",
    "[kfac][ekfac]") {
  for (const auto& head : all_heads()) {
    for (KfacFisher fisher : {KfacFisher::sampled, KfacFisher::empirical, KfacFisher::kflr}) {
      INFO(head->name() << ", fisher " << static_cast<int>(fisher));
      Rng rng(102);
      const Model<double> model = make_mlp(rng);
      const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
      const Tensor<double> y = targets_for(*head, kN, kC, rng);
      KroneckerFactors<double> f(model, *head,
                                 {.fisher = fisher, .seed = 5, .approximation = kEkfac});
      f.update(x, y);
      REQUIRE(f.layers().size() == 2);
      CHECK_THAT(f.name(), Contains("EKFAC("));
      KfacOperator<double> op(f);
      const Dense dense = dense_of(op);
      // The references of s: per-example gradients at the sampled or the data labels, or (KFLR)
      // the diagonal of the dense GGN block in the eigenbasis, sum_c (u^T J_n^T b_{n,c})^2 =
      // u^T J_n^T H_L J_n u.
      Tensor<double> per_example;
      Dense ggn(0);
      if (fisher == KfacFisher::sampled) {
        per_example = amari::curvature::per_example_gradients(
            model, *head, x, sampled_labels(model, *head, x, 5, 0));
      } else if (fisher == KfacFisher::empirical) {
        per_example = amari::curvature::per_example_gradients(model, *head, x, y);
      } else {
        GgnOperator<double> g(model, *head, x);
        ggn = dense_of(g);
      }
      for (std::size_t l = 0; l < 2; ++l) {
        INFO("layer " << l);
        const auto& L = f.layers()[l];
        check_eigenbasis(f.factor_a(l), f.eigenvectors_a(l));
        check_eigenbasis(f.factor_g(l), f.eigenvectors_g(l));
        const Mat ua = mat_of(f.eigenvectors_a(l)), ug = mat_of(f.eigenvectors_g(l));
        Mat s(L.rows(), L.out);
        if (fisher == KfacFisher::kflr) {
          s = diagonal_in_basis(block_of(ggn, L.offset, L.rows() * L.out), ua, ug);
        } else {
          add_scalings(per_example, L.offset, ua, ug, 1.0, s);
        }
        CHECK(rel_diff(mat_of(f.scalings(l)), s) < 1e-10);
        CHECK(rel_diff(operator_block(f, l, dense), ekfac_matrix(ua, ug, s)) < 1e-10);
      }
    }
  }
}

TEST_CASE(
    "EKFAC scalings: a moving average over updates in a fixed eigenbasis, restarted from the "
    "batch when the eigenbasis is recomputed every inverse_update_every updates",
    "[kfac][ekfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(103);
  const Model<double> model = make_mlp(rng);
  KroneckerFactors<double> f(
      model, head, {.decay = 0.6, .inverse_update_every = 3, .seed = 8, .approximation = kEkfac});
  std::vector<Tensor<double>> xs;
  for (int b = 0; b < 4; ++b) xs.push_back(normal_tensor<double>(Shape{kN, kD}, rng));
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  for (std::uint64_t k = 0; k < 4; ++k) {
    INFO("update " << k);
    const Tensor<double> ua0 = k > 0 ? f.eigenvectors_a(0).clone() : Tensor<double>();
    f.update(xs[k], y);
    // Updates 0 and 3 compute new bases; 1 and 2 keep that of update 0.
    if (k == 1 || k == 2) CHECK(amari::test::max_abs_diff(f.eigenvectors_a(0), ua0) == 0.0);
    if (k == 3) CHECK(amari::test::max_abs_diff(f.eigenvectors_a(0), ua0) > 1e-6);
  }
  // The reference: s_k of every batch in the basis of the last refresh (update 3): only batch 3.
  // And for updates 0..2 in the basis of update 0: weights min(1 - 1/k, decay) on the old value.
  for (std::size_t l = 0; l < 2; ++l) {
    const auto& L = f.layers()[l];
    const Mat ua = mat_of(f.eigenvectors_a(l)), ug = mat_of(f.eigenvectors_g(l));
    Mat s(L.rows(), L.out);
    const Tensor<double> g3 = amari::curvature::per_example_gradients(
        model, head, xs[3], sampled_labels(model, head, xs[3], 8, 3));
    add_scalings(g3, L.offset, ua, ug, 1.0, s);
    CHECK(rel_diff(mat_of(f.scalings(l)), s) < 1e-10);
  }
  KroneckerFactors<double> f3(
      model, head, {.decay = 0.6, .inverse_update_every = 3, .seed = 8, .approximation = kEkfac});
  for (std::uint64_t k = 0; k < 3; ++k) f3.update(xs[k], y);
  for (std::size_t l = 0; l < 2; ++l) {
    const auto& L = f3.layers()[l];
    const Mat ua = mat_of(f3.eigenvectors_a(l)), ug = mat_of(f3.eigenvectors_g(l));
    // s = eps2 (eps1 s0 + (1 - eps1) s1) + (1 - eps2) s2, eps_k = min(1 - 1/(k + 1), 0.6).
    const double eps1 = 0.5, eps2 = 0.6;
    const double w[3] = {eps2 * eps1, eps2 * (1 - eps1), 1 - eps2};
    Mat s(L.rows(), L.out);
    for (std::uint64_t k = 0; k < 3; ++k) {
      const Tensor<double> gk = amari::curvature::per_example_gradients(
          model, head, xs[k], sampled_labels(model, head, xs[k], 8, k));
      add_scalings(gk, L.offset, ua, ug, w[k], s);
    }
    CHECK(rel_diff(mat_of(f3.scalings(l)), s) < 1e-10);
  }
}

TEST_CASE(
    "EKFAC conv blocks: s is the diagonal of the dense MC Fisher block in the eigenbasis, with "
    "the exact per-example gradient of the shared weight, expand and reduce",
    "[kfac][ekfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(104);
  const amari::Conv2dOptions geometry{.stride = {2, 1}, .padding = {1, 1}};
  auto net = std::make_shared<Sequential<double>>();
  net->emplace<amari::nn::Reshape<double>>(std::vector<Index>{5, 4, 2})
      .emplace<amari::nn::Conv2d<double>>(2, 3, 3, geometry)
      .emplace<amari::nn::Tanh<double>>()
      .emplace<amari::nn::Flatten<double>>()
      .emplace<Linear<double>>(3 * 4 * 3, kC);
  Model<double> model(net);
  randomize(model, rng, 0.7);
  const Tensor<double> x = normal_tensor<double>(Shape{4, 5 * 4 * 2}, rng);
  const Tensor<double> y = targets_for(head, 4, kC, rng);
  MonteCarloFisherOperator<double> mc(model, head, x, 1, 9);  // the labels of update 0
  const Dense fisher = dense_of(mc);
  for (KfacConv approx : {KfacConv::expand, KfacConv::reduce}) {
    INFO("reduce " << (approx == KfacConv::reduce));
    KroneckerFactors<double> f(model, head, {.seed = 9, .conv = approx, .approximation = kEkfac});
    f.update(x, y);
    REQUIRE(f.layers().size() == 2);
    KfacOperator<double> op(f);
    const Dense dense = dense_of(op);
    for (std::size_t l = 0; l < 2; ++l) {
      INFO("layer " << l);
      const auto& L = f.layers()[l];
      check_eigenbasis(f.factor_a(l), f.eigenvectors_a(l));
      const Mat ua = mat_of(f.eigenvectors_a(l)), ug = mat_of(f.eigenvectors_g(l));
      const Mat s = diagonal_in_basis(block_of(fisher, L.offset, L.rows() * L.out), ua, ug);
      CHECK(rel_diff(mat_of(f.scalings(l)), s) < 1e-10);
      CHECK(rel_diff(operator_block(f, l, dense), ekfac_matrix(ua, ug, s)) < 1e-10);
    }
  }
}

TEST_CASE(
    "EKFAC: precondition applies the inverse of U (diag(s) + lambda I) U transposed, the damped "
    "forward operator",
    "[kfac][ekfac]") {
  SoftmaxCrossEntropy<double> head;
  Rng rng(105);
  const Model<double> model = make_mlp(rng);
  const Tensor<double> x = normal_tensor<double>(Shape{kN, kD}, rng);
  const Tensor<double> y = targets_for(head, kN, kC, rng);
  KroneckerFactors<double> f(model, head, {.untapped_curvature = 0.5, .approximation = kEkfac});
  f.update(x, y);
  const double lambda = 0.03;
  f.update_inverses(lambda);
  CHECK(f.damping_used(0) == lambda);
  CHECK(f.pi(1) == 1.0);
  const Tensor<double> g = normal_tensor<double>(Shape{model.num_parameters()}, rng);
  Tensor<double> u(g.shape()), back(g.shape());
  f.precondition(g, u);
  KfacOperator<double> op(f, lambda);
  op.apply(u, back);
  CHECK(amari::test::max_abs_diff(back, g) <
        1e-12 * amari::test::max_abs_diff(g, Tensor<double>(g.shape())));
  Tensor<double> in_place = g.clone();
  f.precondition(in_place, in_place);
  CHECK(amari::test::max_abs_diff(in_place, u) == 0.0);
}

TEST_CASE("Kfac with EKFAC: 20 steps decrease the training loss of a small MLP", "[kfac][ekfac]") {
  for (const auto& head : all_heads()) {
    for (KfacFisher fisher : {KfacFisher::sampled, KfacFisher::kflr}) {
      INFO(head->name() << ", kflr " << (fisher == KfacFisher::kflr));
      Rng rng(106);
      const Index n = 64, d = 4, c = 3;
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
      Kfac<double> kfac(model, *head, {.fisher = fisher, .seed = 4, .approximation = kEkfac});
      double first = 0, last = 0;
      int decreases = 0;
      for (int t = 0; t < 20; ++t) {
        const auto r = kfac.step(x, y);
        if (t == 0) first = r.loss;
        last = r.loss_after;
        decreases += r.loss_after < r.loss;
      }
      INFO("loss " << first << " -> " << last);
      CHECK(last < 0.5 * first);
      CHECK(decreases >= 18);
    }
  }
}

// The Fisher identities of SEED-NOTES 1.1 and 2 on a tiny softmax MLP, by exact enumeration over
// the classes, and the two score-outer-product operators of fisher.hpp: the empirical Fisher (a
// different matrix from F) and the Monte-Carlo Fisher (an unbiased estimate converging at
// 1/sqrt(k)).
//
// The network is small enough (P = 31) that the test may form dense P x P matrices, column by
// column from products; the library never does. References are computed independently of the
// operators under test: scores s_theta = grad_theta log p_theta(y|x) by a tape VJP of the head's
// NLL on a batch of one example, probabilities p(y|x) = exp(log p), and plain loops for every
// matrix.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/hessian.hpp>
#include <amari/curvature/linearization.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

#include "support/random.hpp"
#include "support/dense.hpp"

namespace {

using amari::test::Dense;
using amari::test::frobenius;
using amari::test::rel_frobenius;
using amari::test::asymmetry;
using amari::test::dense_of;
using amari::test::concat;
using amari::Index;
using amari::Shape;
using amari::Tape;
using amari::Tensor;
using amari::Var;
using amari::curvature::EmpiricalFisherOperator;
using amari::curvature::GgnOperator;
using amari::curvature::HessianOperator;
using amari::curvature::LinearOperator;
using amari::curvature::ModelLinearization;
using amari::curvature::MonteCarloFisherOperator;
using amari::nn::Act;
using amari::nn::Head;
using amari::nn::Model;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::distance;
using amari::test::dot;
using amari::test::norm;
using amari::test::normal_tensor;
using amari::test::Rng;

constexpr Index kD = 3, kH = 4, kC = 3, kN = 5;  // P = 3*4 + 4 + 4*3 + 3 = 31

// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (Golub & Van Loan, sec. 8.5).
std::vector<double> symmetric_eigenvalues(Dense m) {
  const Index n = m.n;
  const double scale = frobenius(m);
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (Index p = 0; p < n; ++p)
      for (Index q = p + 1; q < n; ++q) off += m(p, q) * m(p, q);
    if (std::sqrt(off) <= 1e-15 * scale) break;
    for (Index p = 0; p < n; ++p) {
      for (Index q = p + 1; q < n; ++q) {
        if (m(p, q) == 0.0) continue;
        const double theta = (m(q, q) - m(p, p)) / (2 * m(p, q));
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (Index k = 0; k < n; ++k) {  // M <- M R
          const double mkp = m(k, p), mkq = m(k, q);
          m(k, p) = c * mkp - s * mkq;
          m(k, q) = s * mkp + c * mkq;
        }
        for (Index k = 0; k < n; ++k) {  // M <- R^T M
          const double mpk = m(p, k), mqk = m(q, k);
          m(p, k) = c * mpk - s * mqk;
          m(q, k) = s * mpk + c * mqk;
        }
      }
    }
  }
  std::vector<double> ev(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) ev[static_cast<std::size_t>(i)] = m(i, i);
  return ev;
}

// Example i of x (N, D) as a batch of one, (1, D).
Tensor<double> example(const Tensor<double>& x, Index i) {
  const Index d = x.dim(1);
  return x.view(i * d, Shape{1, d}).clone();
}

Tensor<double> one_hot_row(Index label) {
  Tensor<double> y(Shape{1, kC});
  y[label] = 1.0;
  return y;
}

// A 3-4-3 tanh MLP with every parameter (biases included) drawn uniformly in [-1.5, 1.5], so that
// the predicted probabilities are far from one-hot and from uniform.
Model<double> make_model(Rng& rng) {
  Model<double> model(amari::nn::mlp<double>({kD, kH, kC}, Act::tanh));
  Tensor<double>& theta = model.parameters();
  for (Index k = 0; k < theta.size(); ++k) theta[k] = rng.uniform(-1.5, 1.5);
  return model;
}

// log p_theta(y|x) for one example (x1 (1, D), y1 (1, C)) and its score s_theta = grad log p, by
// reverse mode through the model and the head's NLL (loss() of a batch of one is the NLL itself).
struct LogLikelihood {
  double value;
  Tensor<double> score;  // (P)
};
LogLikelihood log_likelihood(const Model<double>& model, const Head<double>& head,
                             const Tensor<double>& x1, const Tensor<double>& y1) {
  Tape<double> tape;
  const std::vector<Var<double>> params = model.variables(tape);
  const Var<double> z = model.forward(Var<double>(x1), std::span<const Var<double>>(params));
  const Var<double> nll = head.loss(z, y1);
  const Tensor<double> minus_one = Tensor<double>::full(nll.shape(), -1.0);
  auto g = tape.vjp(std::span<const Var<double>>(&nll, 1),
                    std::span<const Tensor<double>>(&minus_one, 1), params);
  return {-nll.value().item(), concat(g)};
}

// The model's own label distribution, enumerated: for each example i and class y, p(y|x_i) and
// s_theta(y|x_i). The probabilities sum to one per example (checked).
struct Enumeration {
  std::vector<std::vector<double>> p;               // [i][y]
  std::vector<std::vector<Tensor<double>>> scores;  // [i][y], each (P)
};
Enumeration enumerate_classes(const Model<double>& model, const Head<double>& head,
                              const Tensor<double>& x) {
  Enumeration e;
  for (Index i = 0; i < x.dim(0); ++i) {
    e.p.emplace_back();
    e.scores.emplace_back();
    double total = 0;
    for (Index y = 0; y < kC; ++y) {
      LogLikelihood ll = log_likelihood(model, head, example(x, i), one_hot_row(y));
      e.p.back().push_back(std::exp(ll.value));
      e.scores.back().push_back(std::move(ll.score));
      total += e.p.back().back();
    }
    REQUIRE(total == Approx(1.0).epsilon(1e-14));
  }
  return e;
}

// F = E_x E_{y ~ p_theta}[s s^T] (SEED-NOTES 1), the definition, by enumeration.
Dense fisher_by_enumeration(const Enumeration& e, Index p) {
  Dense f(p);
  const double n = static_cast<double>(e.p.size());
  for (std::size_t i = 0; i < e.p.size(); ++i)
    for (std::size_t y = 0; y < e.p[i].size(); ++y) f.add_outer(e.p[i][y] / n, e.scores[i][y]);
  return f;
}

std::vector<double> softmax_row(const Tensor<double>& z, Index i) {
  const Index c = z.dim(1);
  double m = -std::numeric_limits<double>::infinity();
  for (Index j = 0; j < c; ++j) m = std::max(m, z[i * c + j]);
  std::vector<double> p(static_cast<std::size_t>(c));
  double s = 0;
  for (Index j = 0; j < c; ++j) s += p[static_cast<std::size_t>(j)] = std::exp(z[i * c + j] - m);
  for (double& v : p) v /= s;
  return p;
}

struct Problem {
  Rng rng;
  Model<double> model;
  Tensor<double> x;
  explicit Problem(std::uint64_t seed)
      : rng(seed), model(make_model(rng)), x(normal_tensor<double>(Shape{kN, kD}, rng)) {}
};

}  // namespace

TEST_CASE("score has zero mean under the model: sum_y p(y|x) s_theta(y|x) = 0 for every x",
          "[fisher]") {
  // SEED-NOTES 1.1a by exact enumeration over the classes. s_theta comes from a tape VJP of log p;
  // the chain rule s_theta = J^T s_z (SEED-NOTES 2) is checked on the way with ModelLinearization.
  Problem pb(11);
  const SoftmaxCrossEntropy<double> head;
  ModelLinearization<double> lin(pb.model, pb.x);
  const Index p = pb.model.num_parameters();
  REQUIRE(p == 31);
  const Enumeration e = enumerate_classes(pb.model, head, pb.x);
  for (Index i = 0; i < kN; ++i) {
    CAPTURE(i);
    const std::vector<double> pz = softmax_row(lin.logits(), i);
    Tensor<double> weighted(Shape{p}), unweighted(Shape{p});
    double scale = 0;
    for (Index y = 0; y < kC; ++y) {
      CAPTURE(y);
      const Tensor<double>& s = e.scores[static_cast<std::size_t>(i)][static_cast<std::size_t>(y)];
      const double py = e.p[static_cast<std::size_t>(i)][static_cast<std::size_t>(y)];
      CHECK(py == Approx(pz[static_cast<std::size_t>(y)]).epsilon(1e-13));
      // J^T s_z with s_z = e_y - softmax(z_i) in row i of the cotangent, zero elsewhere.
      Tensor<double> b(Shape{kN, kC}), jts(Shape{p});
      for (Index c = 0; c < kC; ++c)
        b[i * kC + c] = (c == y ? 1.0 : 0.0) - pz[static_cast<std::size_t>(c)];
      lin.vjp(b, jts);
      CHECK(distance(jts, s) <= 1e-12 * norm(s));
      for (Index k = 0; k < p; ++k) {
        weighted[k] += py * s[k];
        unweighted[k] += s[k] / static_cast<double>(kC);
      }
      scale = std::max(scale, norm(s));
    }
    REQUIRE(scale > 0.1);
    CHECK(norm(weighted) <= 1e-13 * scale);
    // Control: with any other weights (here uniform) the mean is far from zero, so the check above
    // does measure the model's own distribution.
    CHECK(norm(unweighted) > 1e-2 * scale);
  }
}

TEST_CASE("information identity: E_x E_y(Hessian of the NLL) equals the Fisher E_x E_y(s s^T)",
          "[fisher]") {
  // SEED-NOTES 1.1b: F = -E_x E_y[grad^2 log p]. For each example x_i and class y the dense Hessian
  // of -log p(y|x_i) is built from P HessianOperator products on a batch of one with target e_y,
  // and averaged with weights p(y|x_i); F is built from the enumerated score outer products.
  Problem pb(12);
  const SoftmaxCrossEntropy<double> head;
  const Index p = pb.model.num_parameters();
  const Enumeration e = enumerate_classes(pb.model, head, pb.x);
  const Dense fisher = fisher_by_enumeration(e, p);

  Dense expected_hessian(p);
  double max_indefinite = 0;  // the per-(x, y) Hessians are indefinite; only their mean is PSD
  for (Index i = 0; i < kN; ++i) {
    for (Index y = 0; y < kC; ++y) {
      HessianOperator<double> h(pb.model, head, example(pb.x, i), one_hot_row(y));
      const Dense hy = dense_of(h);
      const double w = e.p[static_cast<std::size_t>(i)][static_cast<std::size_t>(y)] / kN;
      for (std::size_t k = 0; k < hy.a.size(); ++k) expected_hessian.a[k] += w * hy.a[k];
      const std::vector<double> ev = symmetric_eigenvalues(hy);
      max_indefinite = std::max(max_indefinite, -*std::min_element(ev.begin(), ev.end()));
    }
  }
  CHECK(rel_frobenius(expected_hessian, fisher) < 1e-10);
  // Control: single-label Hessians are not Fisher matrices (some are indefinite), so the identity
  // above holds only in expectation, which is what it states.
  CHECK(max_indefinite > 1e-3);
}

TEST_CASE("pullback: E_x(J^T F_R J) with J from JVP columns equals the enumerated Fisher",
          "[fisher]") {
  // SEED-NOTES 2: J_i (C x P) column j is the row i of ModelLinearization::jvp(e_j), and
  // F_R(z_i) = E_{y ~ softmax(z_i)}[s_z s_z^T] with s_z = e_y - p enumerated over the classes.
  Problem pb(13);
  const SoftmaxCrossEntropy<double> head;
  const Index p = pb.model.num_parameters();
  const Dense fisher = fisher_by_enumeration(enumerate_classes(pb.model, head, pb.x), p);

  ModelLinearization<double> lin(pb.model, pb.x);
  std::vector<double> jac(static_cast<std::size_t>(kN * kC * p));  // [(i, c), j]
  Tensor<double> e(Shape{p}), a(Shape{kN, kC});
  for (Index j = 0; j < p; ++j) {
    e.fill(0.0);
    e[j] = 1.0;
    lin.jvp(e, a);
    for (Index r = 0; r < kN * kC; ++r) jac[static_cast<std::size_t>(r * p + j)] = a[r];
  }
  Dense pullback(p);
  for (Index i = 0; i < kN; ++i) {
    const std::vector<double> pz = softmax_row(lin.logits(), i);
    std::vector<double> fr(static_cast<std::size_t>(kC * kC), 0.0);
    for (Index y = 0; y < kC; ++y)
      for (Index c = 0; c < kC; ++c)
        for (Index d = 0; d < kC; ++d) {
          const double sc = (c == y) - pz[static_cast<std::size_t>(c)];
          const double sd = (d == y) - pz[static_cast<std::size_t>(d)];
          fr[static_cast<std::size_t>(c * kC + d)] += pz[static_cast<std::size_t>(y)] * sc * sd;
        }
    for (Index c = 0; c < kC; ++c)
      for (Index d = 0; d < kC; ++d)
        for (Index j = 0; j < p; ++j)
          for (Index k = 0; k < p; ++k)
            pullback(j, k) += fr[static_cast<std::size_t>(c * kC + d)] *
                              jac[static_cast<std::size_t>((i * kC + c) * p + j)] *
                              jac[static_cast<std::size_t>((i * kC + d) * p + k)] / kN;
  }
  CHECK(rel_frobenius(pullback, fisher) < 1e-10);
}

TEST_CASE("empirical Fisher is the score outer product at the data labels, and differs from F",
          "[fisher]") {
  // SEED-NOTES 1: EF uses the data's labels instead of y ~ p_theta. With labels that disagree with
  // the model's most likely class the two matrices differ visibly.
  Problem pb(14);
  const SoftmaxCrossEntropy<double> head;
  const Index p = pb.model.num_parameters();
  const Dense fisher = fisher_by_enumeration(enumerate_classes(pb.model, head, pb.x), p);

  const std::vector<int> predicted = amari::nn::argmax_rows(pb.model.forward(pb.x));
  std::vector<int> labels;
  for (int c : predicted) labels.push_back((c + 1) % static_cast<int>(kC));
  EmpiricalFisherOperator<double> ef(pb.model, head, pb.x, amari::nn::one_hot<double>(labels, kC));
  const Dense empirical = dense_of(ef);

  Dense expected(p);
  for (Index i = 0; i < kN; ++i) {
    const LogLikelihood ll = log_likelihood(pb.model, head, example(pb.x, i),
                                            one_hot_row(labels[static_cast<std::size_t>(i)]));
    expected.add_outer(1.0 / kN, ll.score);
  }
  CHECK(rel_frobenius(empirical, expected) < 1e-10);
  const double difference = rel_frobenius(empirical, fisher);
  INFO("||EF - F||_F / ||F||_F = " << difference);
  CHECK(difference > 0.1);
}

TEST_CASE("Monte-Carlo Fisher product converges to F v at rate 1/sqrt(k)", "[fisher]") {
  // SEED-NOTES 4: with k labels drawn from the model per example the estimate is unbiased with
  // variance sigma^2 / k, where sigma^2 = (1/N^2) sum_i Var_{y ~ p(.|x_i)}[s (s . v)] is computed
  // exactly here by enumeration. rms(k) = sqrt(sigma^2 / k) / ||F v|| is the predicted relative
  // error; every measured error must stay within 4 rms(k), and the mean over 5 seeds must fall by
  // more than 5x from k = 10 to k = 1000 (sqrt(100) = 10 expected).
  Problem pb(15);
  const SoftmaxCrossEntropy<double> head;
  const Index p = pb.model.num_parameters();
  const Enumeration e = enumerate_classes(pb.model, head, pb.x);
  const Dense fisher = fisher_by_enumeration(e, p);
  const Tensor<double> v = normal_tensor<double>(Shape{p}, pb.rng);
  const Tensor<double> fv = fisher.times(v);

  double sigma2 = 0;
  for (std::size_t i = 0; i < e.p.size(); ++i) {
    Tensor<double> mean(Shape{p});
    for (std::size_t y = 0; y < e.p[i].size(); ++y) {
      const double sv = dot(e.scores[i][y], v);
      for (Index k = 0; k < p; ++k) mean[k] += e.p[i][y] * e.scores[i][y][k] * sv;
    }
    for (std::size_t y = 0; y < e.p[i].size(); ++y) {
      const double sv = dot(e.scores[i][y], v);
      double d2 = 0;
      for (Index k = 0; k < p; ++k) d2 += std::pow(e.scores[i][y][k] * sv - mean[k], 2);
      sigma2 += e.p[i][y] * d2 / (kN * kN);
    }
  }

  const std::vector<int> ks = {10, 100, 1000};
  const std::vector<std::uint64_t> seeds = {101, 102, 103, 104, 105};
  std::vector<double> mean_error;
  for (int k : ks) {
    const double rms = std::sqrt(sigma2 / k) / norm(fv);
    double total = 0;
    for (std::uint64_t seed : seeds) {
      MonteCarloFisherOperator<double> mc(pb.model, head, pb.x, k, seed);
      Tensor<double> out(Shape{p});
      mc.apply(v, out);
      const double err = distance(out, fv) / norm(fv);
      CAPTURE(k, seed, err, rms);
      CHECK(err < 4 * rms);
      total += err;
    }
    mean_error.push_back(total / static_cast<double>(seeds.size()));
    INFO("k = " << k << ": mean relative error " << mean_error.back() << ", predicted rms " << rms);
    // The spread matches the predicted variance (a wrong sampling distribution would not).
    CHECK(mean_error.back() > 0.2 * rms);
    CHECK(mean_error.back() < 2.0 * rms);
  }
  WARN("MC Fisher mean relative error over 5 seeds: k=10 "
       << mean_error[0] << ", k=100 " << mean_error[1] << ", k=1000 " << mean_error[2]);
  CHECK(mean_error[1] < mean_error[0]);
  CHECK(mean_error[2] < mean_error[1]);
  CHECK(mean_error[2] < mean_error[0] / 5);
}

TEST_CASE("Monte-Carlo Fisher is deterministic for a seed and its matrix is symmetric PSD",
          "[fisher]") {
  // fisher.hpp: the samples are drawn once per linearization from (seed, example, sample), so all
  // the products of a CG solve apply one fixed matrix (1/(N k)) sum J^T s s^T J.
  Problem pb(16);
  const SoftmaxCrossEntropy<double> head;
  const Index p = pb.model.num_parameters();
  const Tensor<double> v = normal_tensor<double>(Shape{p}, pb.rng);

  MonteCarloFisherOperator<double> a(pb.model, head, pb.x, 10, 7), b(pb.model, head, pb.x, 10, 7);
  MonteCarloFisherOperator<double> other(pb.model, head, pb.x, 10, 8);
  Tensor<double> av(Shape{p}), av2(Shape{p}), bv(Shape{p}), ov(Shape{p});
  a.apply(v, av);
  a.apply(v, av2);
  b.apply(v, bv);
  other.apply(v, ov);
  CHECK(av.to_vector() == av2.to_vector());
  CHECK(av.to_vector() == bv.to_vector());
  CHECK(distance(av, ov) > 1e-3 * norm(av));  // another seed, other samples

  const Dense m = dense_of(a);
  CHECK(asymmetry(m) < 1e-12);
  const std::vector<double> ev = symmetric_eigenvalues(m);
  double trace = 0, sum = 0;
  for (Index i = 0; i < p; ++i) trace += m(i, i);
  for (double x : ev) sum += x;
  REQUIRE(sum == Approx(trace).epsilon(1e-10));  // the eigen solver itself
  const double largest = *std::max_element(ev.begin(), ev.end());
  REQUIRE(largest > 0);
  CHECK(*std::min_element(ev.begin(), ev.end()) >= -1e-12 * largest);
}

// K-FAC's low-rank factors (KfacOptions::low_rank_inverses): a factor A built from r <= rows / 2
// statistics rows is inverted in the Woodbury form from those rows. Checked against the dense
// path of the same statistics (itself checked against the dense Kronecker solve in
// kfac_test.cpp) and against A itself: (A + delta I) times the inverse is the identity.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::curvature::KfacOptions;
using amari::curvature::KroneckerFactors;
using amari::nn::Linear;
using amari::nn::Model;
using amari::nn::Sequential;
using amari::nn::SoftmaxCrossEntropy;
using amari::test::normal_tensor;
using amari::test::Rng;

constexpr Index kIn = 12, kHidden = 5, kClasses = 3, kBatch = 8;

// Linear(12 -> 5), tanh, Linear(5 -> 3): A of the first layer is 13 x 13, of the second 6 x 6.
template <class T>
Model<T> wide_first_layer() {
  auto net = std::make_shared<Sequential<T>>();
  net->template emplace<Linear<T>>(kIn, kHidden);
  net->template emplace<amari::nn::Tanh<T>>();
  net->template emplace<Linear<T>>(kHidden, kClasses);
  return Model<T>(net, 3);
}

template <class T>
Tensor<T> labels(Index n, Rng& rng) {
  Tensor<T> y(Shape{n, kClasses});
  for (Index i = 0; i < n; ++i) y[i * kClasses + static_cast<Index>(rng.uniform() * kClasses) % kClasses] = T(1);
  return y;
}

template <class T>
double relative_difference(const Tensor<T>& a, const Tensor<T>& b) {
  double diff = 0, scale = 0;
  for (Index i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

// max |(A + delta I) X - I| for the (d, d) factor A and the inverse X, in double.
template <class T>
double identity_error(const Tensor<T>& a, double delta, const Tensor<T>& x) {
  const Index d = a.dim(0);
  double err = 0;
  for (Index i = 0; i < d; ++i) {
    for (Index j = 0; j < d; ++j) {
      double s = 0;
      for (Index k = 0; k < d; ++k) {
        const double aik = static_cast<double>(a[i * d + k]) + (i == k ? delta : 0.0);
        s += aik * static_cast<double>(x[k * d + j]);
      }
      err = std::max(err, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  }
  return err;
}

template <class T>
void check_against_dense(double tolerance) {
  Rng rng(17);
  Model<T> model = wide_first_layer<T>();
  SoftmaxCrossEntropy<T> head;
  // Two statistics rows per update; decay 0.6 makes the old weights min(1 - 1/k, 0.6) products.
  const KfacOptions low{.decay = 0.6, .seed = 4, .statistics_batch = 2};
  KfacOptions dense_options = low;
  dense_options.low_rank_inverses = false;
  KroneckerFactors<T> f(model, head, low), dense(model, head, dense_options);
  const double lambda = 0.05;
  Tensor<T> refreshed_a[2];  // the factors A of the last refresh, which the inverses belong to
  for (int k = 1; k <= 5; ++k) {
    INFO("update " << k);
    const Tensor<T> x = normal_tensor<T>(Shape{kBatch, kIn}, rng);
    const Tensor<T> y = labels<T>(kBatch, rng);
    f.update(x, y);
    dense.update(x, y);
    if (k == 4) {
      // 8 rows would exceed 13 / 2: they are dropped, but the Woodbury inverse of the last refresh
      // (6 rows) stays in use until the next one.
      CHECK(f.inverse_a_rank(0) == 6);
    } else {
      f.update_inverses(lambda);
      dense.update_inverses(lambda);
      for (std::size_t l = 0; l < 2; ++l) refreshed_a[l] = f.factor_a(l).clone();
    }
    // Layer 0 (rows 13): 2, 4, 6 rows, then dense from the refresh after update 5 on; layer 1
    // (rows 6): 2 rows at the first update only.
    CHECK(f.inverse_a_rank(0) == (k <= 4 ? 2 * std::min(k, 3) : 0));
    CHECK(f.inverse_a_rank(1) == (k == 1 ? 2 : 0));
    CHECK(dense.inverse_a_rank(0) == 0);
    for (std::size_t l = 0; l < 2; ++l) {
      INFO("layer " << l);
      CHECK(f.pi(l) == dense.pi(l));
      const double delta = f.pi(l) * std::sqrt(lambda);
      CHECK(identity_error(refreshed_a[l], delta, f.inverse_a(l)) < tolerance);
      CHECK(relative_difference(f.inverse_a(l), dense.inverse_a(l)) < tolerance);
    }
    const Tensor<T> g = normal_tensor<T>(Shape{model.num_parameters()}, rng);
    Tensor<T> u(g.shape()), want(g.shape());
    f.precondition(g, u);
    dense.precondition(g, want);
    CHECK(relative_difference(u, want) < tolerance);
    Tensor<T> in_place = g.clone();
    f.precondition(in_place, in_place);
    CHECK(relative_difference(in_place, u) == 0.0);
  }
}

}  // namespace

TEST_CASE("K-FAC low-rank factors: the Woodbury inverse equals the dense one, rows dropped at rows / 2",
          "[kfac]") {
  SECTION("double") { check_against_dense<double>(1e-12); }
  SECTION("float") { check_against_dense<float>(1e-4); }
}

TEST_CASE("K-FAC low-rank factors: a wrong row weight would show (the decay enters the weights)",
          "[kfac]") {
  // The same statistics with another decay give another A; the Woodbury inverse must follow A,
  // not the plain mean of the rows: with decay 0.6 and three updates the two differ.
  Rng rng(5);
  Model<double> model = wide_first_layer<double>();
  SoftmaxCrossEntropy<double> head;
  KroneckerFactors<double> f(model, head, {.decay = 0.6, .seed = 1, .statistics_batch = 2});
  KroneckerFactors<double> plain_mean(model, head, {.decay = 0.99, .seed = 1, .statistics_batch = 2});
  for (int k = 0; k < 3; ++k) {
    const Tensor<double> x = normal_tensor<double>(Shape{kBatch, kIn}, rng);
    const Tensor<double> y = labels<double>(kBatch, rng);
    f.update(x, y);
    plain_mean.update(x, y);
  }
  f.update_inverses(0.05);
  plain_mean.update_inverses(0.05);
  REQUIRE(f.inverse_a_rank(0) == 6);
  const double delta = f.pi(0) * std::sqrt(0.05);
  CHECK(identity_error(f.factor_a(0), delta, f.inverse_a(0)) < 1e-12);
  // The other decay's inverse is not an inverse of this A.
  CHECK(identity_error(f.factor_a(0), delta, plain_mean.inverse_a(0)) > 1e-3);
}

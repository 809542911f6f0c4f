// Operators over a data set (curvature/dataset_operator.hpp): for every curvature kind, the
// batch-by-batch operator equals the operator of the whole data set as one batch, for any batch
// split, including the Monte-Carlo Fisher, whose labels are keyed by the example's row.
#include <amari/amari.hpp>

#include <catch2/catch.hpp>

#include "support/dense.hpp"
#include "support/matchers.hpp"
#include "support/random.hpp"

namespace {

using namespace amari;
using amari::test::Rng;
namespace curv = amari::curvature;

struct Problem {
  nn::Model<double> model{nn::mlp<double>({4, 5, 3}, nn::Act::tanh), 2};
  nn::SoftmaxCrossEntropy<double> head;
  Tensor<double> x, y;
  Problem() {
    Rng rng(3);
    x = amari::test::normal_tensor<double>(Shape{11, 4}, rng);
    y = nn::one_hot<double>({0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 0}, 3);
  }
};

}  // namespace

TEST_CASE("DatasetOperator: equals the whole-set operator for every batch split and every curvature kind",
          "[curvature][dataset]") {
  Problem p;
  for (auto kind : {curv::Curvature::ggn, curv::Curvature::mc_fisher, curv::Curvature::empirical_fisher,
                    curv::Curvature::hessian}) {
    // The reference: one batch of all 11 examples (MC labels keyed 0..10, the default).
    auto whole = curv::make_curvature(kind, p.model, p.head, p.x, p.y, /*samples=*/2, /*seed=*/7);
    const amari::test::Dense reference = amari::test::dense_of(*whole);
    for (Index batch : {Index{1}, Index{3}, Index{4}, Index{11}, Index{20}}) {
      for (auto storage : {curv::DatasetOperator<double>::Storage::keep, curv::DatasetOperator<double>::Storage::recompute}) {
        INFO(curv::to_string(kind) << ", batch " << batch);
        curv::DatasetOperator<double> op(kind, p.model, p.head, p.x, p.y, batch, storage, 2, 7);
        CHECK(op.num_batches() == (11 + batch - 1) / batch);
        const amari::test::Dense d = amari::test::dense_of(op);
        CHECK(amari::test::rel_frobenius(d, reference) <= 1e-12);
      }
    }
  }
}

TEST_CASE("Monte-Carlo Fisher: with example ids, a batch's operator is the weighted mean of its halves'",
          "[curvature][dataset][fisher]") {
  Problem p;
  const Index n = 11, first = 5;
  curv::MonteCarloFisherOperator<double> whole(p.model, p.head, p.x, 1, 9);
  std::vector<Index> ids_a(first), ids_b(n - first);
  for (Index i = 0; i < n; ++i) (i < first ? ids_a[static_cast<std::size_t>(i)] : ids_b[static_cast<std::size_t>(i - first)]) = i;
  curv::MonteCarloFisherOperator<double> a(p.model, p.head, p.x.view(0, Shape{first, 4}).clone(), 1, 9, ids_a);
  curv::MonteCarloFisherOperator<double> b(p.model, p.head, p.x.view(first * 4, Shape{n - first, 4}).clone(), 1, 9, ids_b);
  const auto dw = amari::test::dense_of(whole), da = amari::test::dense_of(a), db = amari::test::dense_of(b);
  amari::test::Dense mean = da;
  for (std::size_t k = 0; k < mean.a.size(); ++k) mean.a[k] = (first * da.a[k] + (n - first) * db.a[k]) / n;
  CHECK(amari::test::rel_frobenius(mean, dw) <= 1e-12);
  // Without ids the second half would reuse keys 0..5, and the split would change the matrix.
  curv::MonteCarloFisherOperator<double> b_positional(p.model, p.head, p.x.view(first * 4, Shape{n - first, 4}).clone(), 1, 9);
  amari::test::Dense wrong = da;
  const auto dbp = amari::test::dense_of(b_positional);
  for (std::size_t k = 0; k < wrong.a.size(); ++k) wrong.a[k] = (first * da.a[k] + (n - first) * dbp.a[k]) / n;
  CHECK(amari::test::rel_frobenius(wrong, dw) > 1e-3);
  CHECK_THROWS_AS(curv::MonteCarloFisherOperator<double>(p.model, p.head, p.x, 1, 9, ids_a), ShapeError);
}

TEST_CASE("DatasetOperator: bad arguments are typed errors naming the operator", "[curvature][dataset][errors]") {
  Problem p;
  using Op = curv::DatasetOperator<double>;
  CHECK_THROWS_MATCHES(Op(curv::Curvature::ggn, p.model, p.head, p.x, p.y.view(0, Shape{10, 3}), 4), ShapeError,
                       amari::test::MessageContains({"DatasetOperator", "(11, 4)", "(10, 3)"}));
  CHECK_THROWS_MATCHES(Op(curv::Curvature::ggn, p.model, p.head, p.x, p.y, 0), ValueError,
                       amari::test::MessageContains({"DatasetOperator", "batch_size"}));
}

// The data-parallel curvature code on thread ranks (nn/thread_ranks.hpp): the same code paths the
// MPI tests run under mpirun (tests/mpi), here in the ordinary test run. Every curvature product
// over k ranks equals the one-process product on the union, and natural-gradient steps on k ranks
// equal the one-process steps. (Catch's assertions are not thread-safe: the ranks record, the
// checks run after run_thread_ranks returns.)
#include <amari/curvature/distributed_operator.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/nn/nn.hpp>

#include <catch2/catch.hpp>

#include <cmath>

#include "support/random.hpp"

namespace {

using namespace amari;
namespace curv = amari::curvature;

struct Problem {
  nn::Model<double> model{nn::mlp<double>({4, 5, 3}, nn::Act::tanh), 2};
  nn::SoftmaxCrossEntropy<double> head;
  Tensor<double> x, y, v;
  static constexpr Index n = 11;
  Problem() {
    amari::test::Rng rng(3);
    x = amari::test::normal_tensor<double>(Shape{n, 4}, rng);
    y = nn::one_hot<double>({0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 0}, 3);
    v = amari::test::normal_tensor<double>(Shape{model.num_parameters()}, rng);
  }
  // Rank r's rows [n r / k, n (r + 1) / k), as copies.
  Tensor<double> rows(const Tensor<double>& t, int r, int k) const {
    const Index first = n * r / k, last = n * (r + 1) / k, d = t.dim(1);
    return t.view(first * d, Shape{last - first, d}).clone();
  }
};

double relative_difference(const Tensor<double>& a, const Tensor<double>& b) {
  double diff = 0, norm = 0;
  for (Index i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    norm = std::max(norm, std::abs(b[i]));
  }
  return diff / norm;
}

}  // namespace

TEST_CASE(
    "thread ranks: every curvature product over k ranks equals the one-process product on the "
    "union",
    "[curvature][thread_ranks]") {
  const Problem p;
  for (auto kind : {curv::Curvature::ggn, curv::Curvature::mc_fisher,
                    curv::Curvature::empirical_fisher, curv::Curvature::hessian}) {
    CAPTURE(curv::to_string(kind));
    nn::SingleProcess one;
    auto single = curv::make_distributed_curvature(kind, p.model, p.head, p.x, p.y, one,
                                                   nn::shard_of(one, p.n), 2, 7);
    Tensor<double> expected = p.model.zeros_like_parameters();
    single->apply(p.v, expected);
    for (int k : {2, 3}) {
      CAPTURE(k);
      std::vector<Tensor<double>> out;
      for (int r = 0; r < k; ++r) out.push_back(p.model.zeros_like_parameters());
      nn::run_thread_ranks(k, [&](nn::Communicator& comm) {
        const int r = comm.rank();
        const Tensor<double> x = p.rows(p.x, r, k), y = p.rows(p.y, r, k);
        auto op = curv::make_distributed_curvature(kind, p.model, p.head, x, y, comm,
                                                   nn::shard_of(comm, x.dim(0)), 2, 7);
        op->apply(p.v, out[static_cast<std::size_t>(r)]);
      });
      CHECK(relative_difference(out[0], expected) <= 1e-12);
      for (int r = 1; r < k; ++r) {
        for (Index i = 0; i < expected.size(); ++i)
          REQUIRE(out[static_cast<std::size_t>(r)][i] == out[0][i]);
      }
    }
  }
}

TEST_CASE(
    "thread ranks: natural-gradient steps on k ranks equal the one-process steps on the union",
    "[curvature][thread_ranks]") {
  const Problem p;
  curv::NaturalGradientOptions o;
  o.initial_damping = 0.5;
  o.line_search = true;
  o.cg = {.max_iterations = 8, .relative_tolerance = 1e-6};
  const int steps = 3;

  nn::Model<double> reference = p.model;
  curv::NaturalGradient<double> single(reference, p.head, o);
  std::vector<curv::CgStepReport> expected;
  for (int s = 0; s < steps; ++s) expected.push_back(single.step(p.x, p.y));

  for (int k : {2, 3}) {
    CAPTURE(k);
    std::vector<nn::Model<double>> models(static_cast<std::size_t>(k), p.model);
    std::vector<std::vector<curv::CgStepReport>> reports(static_cast<std::size_t>(k));
    nn::run_thread_ranks(k, [&](nn::Communicator& comm) {
      const int r = comm.rank();
      const Tensor<double> x = p.rows(p.x, r, k), y = p.rows(p.y, r, k);
      curv::NaturalGradient<double> ng(models[static_cast<std::size_t>(r)], p.head, o, comm);
      for (int s = 0; s < steps; ++s) reports[static_cast<std::size_t>(r)].push_back(ng.step(x, y));
    });
    for (int r = 0; r < k; ++r) {
      CAPTURE(r);
      for (int s = 0; s < steps; ++s) {
        const auto& a = reports[static_cast<std::size_t>(r)][static_cast<std::size_t>(s)];
        const auto& b = expected[static_cast<std::size_t>(s)];
        CHECK(a.cg_iterations == b.cg_iterations);
        CHECK(a.step_scale == b.step_scale);
        CHECK(a.lambda == b.lambda);
        CHECK(std::abs(a.loss_after - b.loss_after) <= 1e-12 * std::abs(b.loss_after));
      }
      CHECK(relative_difference(models[static_cast<std::size_t>(r)].parameters(),
                                reference.parameters()) <= 1e-12);
      for (Index i = 0; i < reference.num_parameters(); ++i) {
        REQUIRE(models[static_cast<std::size_t>(r)].parameters()[i] == models[0].parameters()[i]);
      }
    }
  }
}

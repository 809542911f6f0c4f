// Data-parallel training of a model with dropout: its masks are keyed by the example's index in
// the union of the shards (nn::RandomKey, Model::first_example), so on k ranks, each holding an
// unequal shard, the gradient and the steps of natural gradient, Hessian-free, K-FAC and EKFAC
// equal one process's on the union (1e-12 relative in double), on every rank bitwise alike.
#include <catch2/catch.hpp>

#include <amari/curvature/kfac.hpp>

#include "shards.hpp"

namespace {

using namespace amari;
using namespace amari::test::mpi;
namespace curv = amari::curvature;

/// Problem's data through a network with two dropout layers, one of them on a (N, 2, 4) tensor:
/// Linear 4 -> 8, tanh, Dropout(0.3), Reshape (2, 4), Dropout(0.5), Flatten, Linear 8 -> 3.
nn::Model<double> model_with_dropout() {
  auto net = std::make_shared<nn::Sequential<double>>();
  net->emplace<nn::Linear<double>>(4, 8);
  net->emplace<nn::Tanh<double>>();
  net->emplace<nn::Dropout<double>>(0.3);
  net->emplace<nn::Reshape<double>>(std::vector<Index>{2, 4});
  net->emplace<nn::Dropout<double>>(0.5);
  net->emplace<nn::Flatten<double>>();
  net->emplace<nn::Linear<double>>(8, 3);
  return nn::Model<double>(net, 4);
}

bool same_tensor_on_every_rank(nn::Communicator& comm, const Tensor<double>& t) {
  return same_on_every_rank(comm, t.data(), static_cast<std::size_t>(t.size()));
}

}  // namespace

TEST_CASE(
    "mpi: with dropout, the reduced loss and gradient equal the single-process ones on the union",
    "[mpi][dropout]") {
  mpi::Communicator comm;
  for (const bool first_empty : {false, true}) {
    INFO("rank 0 holds no example: " << first_empty);
    Problem p;
    nn::Model<double> model = model_with_dropout(), reference = model;
    const Local l = local_part(p, comm, first_empty);
    const nn::Shard shard = nn::shard_of(comm, l.count);
    Tensor<double> g = model.zeros_like_parameters(), g_ref = model.zeros_like_parameters();
    for (int step = 0; step < 3; ++step) {  // three steps: three sets of masks
      INFO("step " << step);
      const double loss = nn::loss_and_gradient(model, p.head, l.x, l.y, g, comm, shard);
      const double loss_ref = nn::loss_and_gradient(reference, p.head, p.x, p.y, g_ref);
      CHECK(model.first_example() == l.first);
      CHECK(reference.first_example() == 0);
      CHECK(std::abs(loss - loss_ref) <= 1e-12 * std::abs(loss_ref));
      CHECK(relative_difference(g, g_ref) <= 1e-12);
      CHECK(same_tensor_on_every_rank(comm, g));
    }
    // The masks matter: without dropout (eval mode) the gradient is another one.
    Tensor<double> g_eval = model.zeros_like_parameters();
    reference.eval();
    nn::gradient_at(reference, p.head, p.x, p.y, g_eval);
    CHECK(relative_difference(g_eval, g_ref) > 1e-2);
  }
}

TEST_CASE(
    "mpi: with dropout, natural-gradient and Hessian-free steps equal the single-process steps on "
    "the union",
    "[mpi][dropout][optim]") {
  mpi::Communicator comm;
  Problem p;
  const Local l = local_part(p, comm);
  auto check = [&](const curv::CgStepReport& a, const curv::CgStepReport& b, double lambda_a,
                   double lambda_b, const nn::Model<double>& model,
                   const nn::Model<double>& reference) {
    CHECK(a.cg_iterations == b.cg_iterations);
    CHECK(a.cg_status == b.cg_status);
    CHECK(a.step_scale == b.step_scale);
    CHECK(lambda_a == lambda_b);
    CHECK(std::abs(a.loss - b.loss) <= 1e-12 * std::abs(b.loss));
    CHECK(std::abs(a.loss_after - b.loss_after) <= 1e-12 * std::abs(b.loss_after));
    CHECK(relative_difference(model.parameters(), reference.parameters()) <= 1e-12);
    CHECK(same_tensor_on_every_rank(comm, model.parameters()));
  };
  SECTION("natural gradient (GGN, line search, curvature on the whole batch)") {
    nn::Model<double> model = model_with_dropout(), reference = model;
    curv::NaturalGradientOptions o;
    o.initial_damping = 0.5;
    o.line_search = true;
    o.cg = {.max_iterations = 8, .relative_tolerance = 1e-6};
    curv::NaturalGradient<double> distributed(model, p.head, o, comm);
    curv::NaturalGradient<double> single(reference, p.head, o);
    for (int s = 0; s < 3; ++s) {
      INFO("step " << s);
      const auto a = distributed.step(l.x, l.y);
      const auto b = single.step(p.x, p.y);
      check(a, b, distributed.lambda(), single.lambda(), model, reference);
    }
  }
  SECTION("Hessian-free (Gauss-Newton, preconditioned, curvature on the whole batch)") {
    nn::Model<double> model = model_with_dropout(), reference = model;
    curv::HessianFreeOptions o;
    o.initial_damping = 0.3;
    o.preconditioner = true;
    o.cg.max_iterations = 12;
    curv::HessianFree<double> distributed(model, p.head, o, comm);
    curv::HessianFree<double> single(reference, p.head, o);
    for (int s = 0; s < 3; ++s) {
      INFO("step " << s);
      const auto a = distributed.step(l.x, l.y);
      const auto b = single.step(p.x, p.y);
      CHECK(a.backtrack_iterate == b.backtrack_iterate);
      check(a, b, distributed.lambda(), single.lambda(), model, reference);
    }
  }
}

TEST_CASE("mpi: with dropout, K-FAC and EKFAC steps equal the single-process steps on the union",
          "[mpi][dropout][kfac]") {
  mpi::Communicator comm;
  Problem p;
  const Local l = local_part(p, comm);
  for (const auto approximation : {curv::KfacApproximation::kfac, curv::KfacApproximation::ekfac}) {
    INFO((approximation == curv::KfacApproximation::kfac ? "K-FAC" : "EKFAC"));
    nn::Model<double> model = model_with_dropout(), reference = model;
    const curv::KfacOptions o{.learning_rate = 0.2,
                              .damping = 1e-2,
                              .inverse_update_every = 2,
                              .seed = 5,
                              .momentum = 0.5,
                              .approximation = approximation};
    curv::Kfac<double> distributed(model, p.head, o, comm);
    curv::Kfac<double> single(reference, p.head, o);
    for (int s = 0; s < 3; ++s) {
      INFO("step " << s);
      const auto a = distributed.step(l.x, l.y);
      const auto b = single.step(p.x, p.y);
      CHECK(model.first_example() == l.first);
      CHECK(std::abs(a.loss - b.loss) <= 1e-12 * std::abs(b.loss));
      CHECK(std::abs(a.loss_after - b.loss_after) <= 1e-12 * std::abs(b.loss_after));
      CHECK(relative_difference(model.parameters(), reference.parameters()) <= 1e-12);
      CHECK(same_tensor_on_every_rank(comm, model.parameters()));
      for (std::size_t layer = 0; layer < distributed.factors().layers().size(); ++layer) {
        CHECK(relative_difference(distributed.factors().factor_a(layer),
                                  single.factors().factor_a(layer)) <= 1e-12);
        CHECK(relative_difference(distributed.factors().factor_g(layer),
                                  single.factors().factor_g(layer)) <= 1e-12);
      }
    }
  }
}

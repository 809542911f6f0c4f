// Data-parallel optimizers: natural gradient, Hessian-free and Adam on k ranks, each rank holding
// an unequal shard of the batch, take the steps of one process on the union (ordered with the
// spread curvature subset first, shards.hpp): the same parameters
// (1e-12 relative), the same damping trajectory, the same CG iteration counts and the same
// accept/reject decisions, on every rank.
#include <catch2/catch.hpp>

#include "shards.hpp"

namespace {

using namespace amari;
using namespace amari::test::mpi;
namespace curv = amari::curvature;

// Steps both optimizers `steps` times and compares everything a step decides.
// union_x, union_y: the single-process batch, ordered as the curvature subset is spread
// (shards.hpp).
template <class Opt>
void check_same_steps(Opt& distributed, Opt& single, nn::Model<double>& model,
                      nn::Model<double>& reference, const Local& l, const Tensor<double>& union_x,
                      const Tensor<double>& union_y, nn::Communicator& comm, int steps) {
  for (int s = 0; s < steps; ++s) {
    INFO("step " << s);
    const auto a = distributed.step(l.x, l.y);
    const auto b = single.step(union_x, union_y);
    CHECK(a.cg_iterations == b.cg_iterations);
    CHECK(a.cg_status == b.cg_status);
    CHECK(a.step_scale == b.step_scale);
    if constexpr (requires { a.backtrack_iterate; }) CHECK(a.backtrack_iterate == b.backtrack_iterate);
    CHECK(distributed.lambda() == single.lambda());
    CHECK(std::abs(a.loss - b.loss) <= 1e-12 * std::abs(b.loss));
    CHECK(std::abs(a.loss_after - b.loss_after) <= 1e-12 * std::abs(b.loss_after));
    CHECK(relative_difference(model.parameters(), reference.parameters()) <= 1e-12);
    CHECK(same_on_every_rank(comm, model.parameters().data(),
                             static_cast<std::size_t>(model.num_parameters())));
    if (comm.size() ==
        1) {  // one rank: the data-parallel path computes exactly the single-process step
      CHECK(relative_difference(model.parameters(), reference.parameters()) == 0);
      CHECK(a.loss_after == b.loss_after);
    }
  }
}

}  // namespace

TEST_CASE("mpi: natural gradient steps equal the single-process steps on the union",
          "[mpi][optim]") {
  mpi::Communicator comm;
  for (auto kind : {curv::Curvature::ggn, curv::Curvature::mc_fisher}) {
    INFO(curv::to_string(kind));
    Problem p;
    nn::Model<double> reference = p.model;
    const Local l = local_part(p, comm);
    curv::NaturalGradientOptions o;
    o.curvature = kind;
    o.initial_damping = 0.5;
    o.line_search = true;
    o.curvature_batch = 6;  // spread over the ranks: each computes curvature on its share
    o.mc_samples = 2;
    o.cg = {.max_iterations = 8, .relative_tolerance = 1e-6};
    curv::NaturalGradient<double> distributed(p.model, p.head, o, comm);
    curv::NaturalGradient<double> single(reference, p.head, o);
    check_same_steps(distributed, single, p.model, reference, l, spread_first(p.x, comm.size(), 6),
                     spread_first(p.y, comm.size(), 6), comm, 3);
  }
}

TEST_CASE("mpi: Hessian-free steps equal the single-process steps on the union", "[mpi][optim]") {
  mpi::Communicator comm;
  Problem p;
  nn::Model<double> reference = p.model;
  const Local l = local_part(p, comm);
  curv::HessianFreeOptions o;
  o.initial_damping = 0.3;
  o.curvature_batch = 7;
  o.preconditioner = true;
  o.preconditioner_examples = 7;  // the same spread subset as the curvature's
  o.cg.max_iterations = 12;
  curv::HessianFree<double> distributed(p.model, p.head, o, comm);
  curv::HessianFree<double> single(reference, p.head, o);
  check_same_steps(distributed, single, p.model, reference, l, spread_first(p.x, comm.size(), 7),
                   spread_first(p.y, comm.size(), 7), comm, 3);
}

TEST_CASE("mpi: Adam on the reduced gradient takes the single-process steps", "[mpi][optim]") {
  mpi::Communicator comm;
  Problem p;
  nn::Model<double> reference = p.model;
  const Local l = local_part(p, comm);
  nn::synchronize_model(comm, p.model);
  const nn::Shard shard = nn::shard_of(comm, l.count);
  nn::Adam<double> adam({.learning_rate = 0.05}), adam_ref({.learning_rate = 0.05});
  Tensor<double> g = p.model.zeros_like_parameters(), g_ref = p.model.zeros_like_parameters();
  for (int s = 0; s < 3; ++s) {
    nn::loss_and_gradient(p.model, p.head, l.x, l.y, g, comm, shard);
    adam.step(p.model.parameters(), g);
    nn::loss_and_gradient(reference, p.head, p.x, p.y, g_ref);
    adam_ref.step(reference.parameters(), g_ref);
    CHECK(relative_difference(p.model.parameters(), reference.parameters()) <= 1e-12);
    CHECK(same_on_every_rank(comm, p.model.parameters().data(),
                             static_cast<std::size_t>(p.model.num_parameters())));
  }
}

TEST_CASE("mpi: the data-parallel constructor gives every rank rank 0's parameters",
          "[mpi][optim]") {
  mpi::Communicator comm;
  Problem p;
  nn::Model<double> rank0 = p.model;
  p.model.initialize(100 + static_cast<std::uint64_t>(comm.rank()));  // different on every rank
  curv::NaturalGradient<double> ng(p.model, p.head, {}, comm);
  rank0.initialize(100);
  CHECK(relative_difference(p.model.parameters(), rank0.parameters()) == 0);
}

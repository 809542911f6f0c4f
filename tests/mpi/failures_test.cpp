// Failures of a data-parallel job are errors, never hangs: ranks that disagree on the model or on
// the options all raise a ValueError naming what differs, and a rank that throws ends the job with
// a non-zero status (the hidden [.abort] case, run by expect_abort.cmake with a CTest TIMEOUT).
#include <catch2/catch.hpp>

#include <stdexcept>

#include "shards.hpp"

namespace {

using namespace amari;
using namespace amari::test::mpi;
namespace curv = amari::curvature;

}  // namespace

TEST_CASE("mpi: a rank with a different model makes every rank raise a ValueError",
          "[mpi][failure]") {
  mpi::Communicator comm;
  const int odd = comm.size() - 1;  // with one rank: that rank's model is the only one, no mismatch
  const Index hidden = comm.size() > 1 && comm.rank() == odd ? 6 : 5;
  nn::Model<double> model(nn::mlp<double>({4, hidden, 3}, nn::Act::tanh), 2);
  nn::SoftmaxCrossEntropy<double> head;
  if (comm.size() == 1) {
    CHECK_NOTHROW(curv::NaturalGradient<double>(model, head, {}, comm));
  } else {
    CHECK_THROWS_WITH(curv::NaturalGradient<double>(model, head, {}, comm),
                      Catch::Contains("disagree on model structure") &&
                          Catch::Contains("rank(s) " + std::to_string(odd)));
  }
}

TEST_CASE("mpi: ranks with different optimizer options all raise a ValueError", "[mpi][failure]") {
  mpi::Communicator comm;
  Problem p;
  curv::HessianFreeOptions o;
  if (comm.rank() == comm.size() - 1) o.initial_damping = 2.0;  // only differs when k > 1
  if (comm.size() == 1) {
    CHECK_NOTHROW(curv::HessianFree<double>(p.model, p.head, o, comm));
  } else {
    CHECK_THROWS_WITH(curv::HessianFree<double>(p.model, p.head, o, comm),
                      Catch::Contains("disagree on HessianFree options"));
  }
}

TEST_CASE("mpi: a rank that throws ends the whole job", "[.abort]") {
  mpi::Communicator comm;
  mpi::run_or_abort([&] {
    if (comm.rank() == comm.size() - 1)
      throw std::runtime_error("deliberate failure in the last rank");
    std::vector<double> v(4, 1.0);
    comm.allreduce_sum(std::span<double>(v));  // the last rank never joins: without abort, a hang
    return 0;
  });
  SUCCEED("not reached with one rank: its only rank throws");
}

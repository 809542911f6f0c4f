// Data-parallel cost (docs/scaling.md): time per CG iteration and per optimizer step at k ranks,
// the share spent in communication, and the bytes each rank received against the formula (the
// exit status is 1 if a row's bytes differ from it).
//
// "comm" is the time inside MPI calls, which includes waiting for a slower rank (imbalance, or a
// rank descheduled on a shared machine); the "allreduce_sum of P floats" row is the transfer alone.
//
// A plain timed program, not Google Benchmark: every rank must run exactly the same collectives,
// which Google Benchmark's adaptive iteration counts do not guarantee. Each measurement is the
// median over --reps repetitions of the slowest rank's time (a step is as slow as its slowest
// rank).
//
//   OMP_NUM_THREADS=1 mpirun -np 2 build/mpi/bench/mpi_scaling [--reps 7] [--batch 1000]
//
// The data are random (normal inputs, uniform labels): costs do not depend on the values.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <amari/curvature/distributed_operator.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/mpi/mpi.hpp>
#include <amari/nn/nn.hpp>

#include "../../examples/cnn_models.hpp"

namespace {

using namespace amari;
namespace curv = amari::curvature;

struct Measurement {
  double seconds = 0;       // median over repetitions, slowest rank
  double comm_seconds = 0;  // median over repetitions, of the slowest rank's communication time
  double bytes = 0;         // received by one rank per repetition
  double collectives = 0;   // per repetition
};

// Runs `body` reps times after one warm-up; times each run on every rank and keeps the slowest.
Measurement measure(mpi::Communicator& comm, int reps, const std::function<void()>& body) {
  body();  // warm-up: allocations, first-touch
  std::vector<double> total, comm_time;
  double bytes = 0, collectives = 0;
  for (int r = 0; r < reps; ++r) {
    const double c0 = comm.seconds_communicating();
    const auto b0 = comm.bytes_received(), n0 = comm.collectives();
    const auto t0 = std::chrono::steady_clock::now();
    body();
    std::vector<double> t = {
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
        comm.seconds_communicating() - c0};
    bytes = static_cast<double>(comm.bytes_received() - b0);
    collectives = static_cast<double>(comm.collectives() - n0);
    // The slowest rank's times, taken with a max through the deterministic sum of one-hot slots.
    std::vector<double> slots(2 * static_cast<std::size_t>(comm.size()), 0.0);
    slots[2 * static_cast<std::size_t>(comm.rank())] = t[0];
    slots[2 * static_cast<std::size_t>(comm.rank()) + 1] = t[1];
    comm.allreduce_sum(std::span<double>(slots));
    double tmax = 0, cmax = 0;
    for (int q = 0; q < comm.size(); ++q) {
      tmax = std::max(tmax, slots[2 * static_cast<std::size_t>(q)]);
      cmax = std::max(cmax, slots[2 * static_cast<std::size_t>(q) + 1]);
    }
    total.push_back(tmax);
    comm_time.push_back(cmax);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return {median(total), median(comm_time), bytes, collectives};
}

struct Net {
  std::string name;
  nn::Model<float> model;
};

// Returns the number of rows whose bytes differ from the formula (on rank 0; 0 elsewhere).
int run(mpi::Communicator& comm, Net& net, Index batch, Index curvature_batch, int reps,
        int cg_iterations) {
  nn::SoftmaxCrossEntropy<float> head;
  const int k = comm.size(), r = comm.rank();
  nn::Model<float>& model = net.model;
  const Index p = model.num_parameters();
  // The same global batch on every rank; each keeps rows [r N / k, (r + 1) N / k).
  std::vector<int> labels(static_cast<std::size_t>(batch));
  Tensor<float> x(Shape{batch, 784});
  std::uint64_t s = 12345;
  for (Index i = 0; i < x.size(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  for (auto& l : labels) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    l = static_cast<int>((s >> 33) % 10);
  }
  const Tensor<float> y = nn::one_hot<float>(labels, 10);
  const Index first = batch * r / k, last = batch * (r + 1) / k;
  const Tensor<float> xs = x.view(first * 784, Shape{last - first, 784}).clone();
  const Tensor<float> ys = y.view(first * 10, Shape{last - first, 10}).clone();
  const nn::Shard shard = nn::shard_of(comm, last - first);

  // One CG iteration = one damped curvature product + O(P) vector work: time the product.
  const nn::Shard cs = shard.spread(curvature_batch);
  const Tensor<float> cx = xs.view(0, Shape{std::max<Index>(cs.local, 1), 784});
  const Tensor<float> cy = ys.view(0, Shape{std::max<Index>(cs.local, 1), 10});
  auto ggn = curv::make_distributed_curvature(curv::Curvature::ggn, model, head, cx, cy, comm, cs);
  Tensor<float> v = model.zeros_like_parameters(), out = model.zeros_like_parameters();
  v.fill(0.01f);
  const Measurement product = measure(comm, reps, [&] { ggn->apply(v, out); });
  // The transfer alone (no computation to wait for): what a reduction costs on this machine.
  const Measurement reduce_only = measure(comm, reps, [&] {
    comm.allreduce_sum(std::span<float>(out.data(), static_cast<std::size_t>(out.size())));
  });

  Tensor<float> g = model.zeros_like_parameters();
  const Measurement gradient =
      measure(comm, reps, [&] { nn::loss_and_gradient(model, head, xs, ys, g, comm, shard); });

  const Tensor<float> theta0 = model.gather();
  curv::NaturalGradientOptions ng_options;
  ng_options.curvature_batch = curvature_batch;
  ng_options.adapt_damping = false;  // the same work in every repetition
  ng_options.cg = {
      .max_iterations = cg_iterations, .relative_tolerance = 0, .progress_stopping = false};
  curv::NaturalGradient<float> ng(model, head, ng_options, comm);
  const Measurement ng_step = measure(comm, reps, [&] {
    model.scatter(theta0);
    ng.step(xs, ys);
  });
  curv::HessianFreeOptions hf_options;
  hf_options.curvature_batch = curvature_batch;
  hf_options.line_search = false;
  hf_options.backtracking = false;
  hf_options.warm_start_decay = 0;
  hf_options.cg = {.max_iterations = cg_iterations,
                   .relative_tolerance = 0,
                   .progress_stopping = false,
                   .keep_iterates = true};
  curv::HessianFree<float> hf(model, head, hf_options, comm);
  const Measurement hf_step = measure(comm, reps, [&] {
    model.scatter(theta0);
    hf.step(xs, ys);
  });
  // K-FAC with the statistics of the curvature minibatch: a step without an inverse refresh (the
  // first step of the warm-up refreshes, the timed ones do not) and a step with one (every step).
  curv::KfacOptions kfac_options;
  kfac_options.statistics_batch = curvature_batch;
  kfac_options.inverse_update_every = 1 << 30;
  curv::Kfac<float> kfac(model, head, kfac_options, comm);
  const Measurement kfac_step = measure(comm, reps, [&] {
    model.scatter(theta0);
    kfac.step(xs, ys);
  });
  kfac_options.inverse_update_every = 1;
  curv::Kfac<float> kfac_refresh(model, head, kfac_options, comm);
  const Measurement kfac_refresh_step = measure(comm, reps, [&] {
    model.scatter(theta0);
    kfac_refresh.step(xs, ys);
  });
  model.scatter(theta0);

  if (r != 0) return 0;
  std::printf(
      "\n%s: P = %lld parameters, batch %lld (curvature %lld), %d rank(s), %d CG iterations per "
      "step\n",
      net.name.c_str(), static_cast<long long>(p), static_cast<long long>(batch),
      static_cast<long long>(curvature_batch), k, cg_iterations);
  std::printf("%-28s %12s %12s %10s %14s %14s %6s\n", "operation", "time [ms]", "comm [ms]",
              "comm %", "bytes/rank", "formula", "colls");
  // Bytes each rank receives (docs/scaling.md): mpi::allreduce_bytes_received for an allreduce_sum
  // ((k - 1) n b below k = 3), (k - 1) 8 for shard_of's allgather.
  const double km1 = k - 1;
  const double fp =
      static_cast<double>(mpi::allreduce_bytes_received(static_cast<std::size_t>(p), 4, k, r));
  const double f1 = static_cast<double>(mpi::allreduce_bytes_received(1, 8, k, r));
  int mismatches = 0;
  auto row = [&](const char* what, const Measurement& m, double formula) {
    const bool differs = m.bytes != formula;
    mismatches += differs ? 1 : 0;
    std::printf("%-28s %12.3f %12.3f %9.1f%% %14.0f %14.0f %6.0f%s\n", what, 1e3 * m.seconds,
                1e3 * m.comm_seconds, 100.0 * m.comm_seconds / m.seconds, m.bytes, formula,
                m.collectives, differs ? "  <- bytes differ from the formula" : "");
  };
  row("allreduce_sum of P floats", reduce_only, fp);
  row("GGN product (CG iteration)", product, fp);
  row("loss + gradient (Adam step)", gradient, fp + f1);
  // NG without line search: shard_of, gradient + loss, m products, one loss at the proposal.
  row("natural gradient step", ng_step, km1 * 8 + fp + f1 + cg_iterations * fp + f1);
  // HF without backtracking or line search: the same (one loss at the chosen iterate).
  row("Hessian-free step", hf_step, km1 * 8 + fp + f1 + cg_iterations * fp + f1);
  // K-FAC (docs/scaling.md's K-FAC rows): row counts, loss, gradient, the factor statistics
  // (F = sum_l (rows_l (rows_l + 1) + out_l (out_l + 1)) / 2 floats: the upper triangles of A_l and
  // G_l), the loss after the step; a refresh adds the failure flags and the inverses of the layers
  // other ranks own.
  double statistics = 0, refresh = km1 * 8;
  const auto& layers = kfac.factors().layers();
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const double rows = static_cast<double>(layers[l].rows()),
                 outs = static_cast<double>(layers[l].out);
    statistics += (rows * (rows + 1) + outs * (outs + 1)) / 2;
    if (static_cast<int>(l % static_cast<std::size_t>(k)) != r)
      refresh += (rows * rows + outs * outs) * 4 + 16;
  }
  const double fstat = static_cast<double>(
      mpi::allreduce_bytes_received(static_cast<std::size_t>(statistics), 4, k, r));
  const double kfac_formula = km1 * 8 + f1 + fp + fstat + f1;
  row("K-FAC step", kfac_step, kfac_formula);
  row("K-FAC step + inverse refresh", kfac_refresh_step, kfac_formula + refresh);
  return mismatches;
}

}  // namespace

int main(int argc, char** argv) {
  mpi::Session session(argc, argv);
  return mpi::run_or_abort([&] {
    int reps = 7, cg = 10;
    Index batch = 1000, curvature_batch = 250;
    bool quick = false, cnn = true;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&] { return i + 1 < argc ? std::atol(argv[++i]) : 0L; };
      if (a == "--reps")
        reps = static_cast<int>(next());
      else if (a == "--batch")
        batch = next();
      else if (a == "--curvature-batch")
        curvature_batch = next();
      else if (a == "--cg")
        cg = static_cast<int>(next());
      else if (a == "--no-cnn")
        cnn = false;
      else if (a == "--quick")
        quick = true;
      else
        throw ValueError("mpi_scaling: unknown option " + a +
                         " (--reps R --batch N --curvature-batch M --cg I --no-cnn --quick)");
    }
    if (quick) {  // a smoke run for CI: tiny sizes, one repetition
      reps = 1;
      batch = 64;
      curvature_batch = 32;
      cg = 2;
    }
    mpi::Communicator comm;
    std::vector<Net> nets;
    nets.push_back({"mnist MLP 784-256-256-10 tanh",
                    nn::Model<float>(nn::mlp<float>({784, 256, 256, 10}, nn::Act::tanh), 1)});
    if (cnn)
      nets.push_back(
          {"CNN (examples/cnn_models.hpp)", nn::Model<float>(example::small_cnn<float>(), 1)});
    int mismatches = 0;
    for (Net& net : nets) mismatches += run(comm, net, batch, curvature_batch, reps, cg);
    if (mismatches > 0) {
      std::printf("\n%d row(s) received other bytes than docs/scaling.md's formula\n", mismatches);
    }
    return mismatches == 0 ? 0 : 1;
  });
}

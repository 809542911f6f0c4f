// Data-parallel runs of the examples: `--distributed` under mpirun (docs/scaling.md). Each rank
// reads the whole data set and draws the same batches; it keeps its consecutive share of every
// batch's rows, and the optimizers reduce losses, gradients and curvature products over the ranks,
// so every rank takes the same steps. Only rank 0 prints and writes logs.
//
// Built with AMARI_MPI, the examples that use this (natural_gradient, train_cnn) define
// AMARI_EXAMPLE_MPI and link amari::mpi (examples/CMakeLists.txt); without it, --distributed is
// refused with a clear message.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include <amari/amari.hpp>
#if AMARI_EXAMPLE_MPI
#include <amari/mpi/mpi.hpp>
#endif

namespace example {

/// One process, or the ranks of an MPI job when the command line has `--distributed`.
class Parallel {
 public:
  /// Removes `--distributed` from argv (the other options are left to example::Options). With it,
  /// starts MPI; on ranks other than 0 also removes --log-csv/--log-json and their values and sends
  /// stdout to /dev/null. Without MPI support, `--distributed` prints an error and exits with 2.
  Parallel(int& argc, char**& argv) {
    int out = 1;
    for (int i = 1; i < argc; ++i) {
      if (std::strcmp(argv[i], "--distributed") == 0) {
        distributed_ = true;
      } else {
        argv[out++] = argv[i];
      }
    }
    argc = out;
    argv[argc] = nullptr;
    if (!distributed_) return;
#if AMARI_EXAMPLE_MPI
    session_ = std::make_unique<amari::mpi::Session>(argc, argv);
    comm_ = std::make_unique<amari::mpi::Communicator>();
    if (comm_->rank() != 0) {
      out = 1;
      for (int i = 1; i < argc; ++i) {
        const bool log =
            std::strcmp(argv[i], "--log-csv") == 0 || std::strcmp(argv[i], "--log-json") == 0;
        if (log && i + 1 < argc) {
          ++i;  // its value too
        } else {
          argv[out++] = argv[i];
        }
      }
      argc = out;
      argv[argc] = nullptr;
      if (!std::freopen("/dev/null", "w", stdout))
        std::fprintf(stderr, "cannot silence rank %d\n", comm_->rank());
    }
#else
    std::fprintf(
        stderr,
        "--distributed needs amari built with the MPI component: configure with -DAMARI_MPI=ON "
        "(Debian: apt-get install openmpi-bin libopenmpi-dev) and run under mpirun\n");
    std::exit(2);
#endif
  }

  /// Whether this run is data-parallel.
  bool distributed() const {
    return distributed_;
  }
  /// The ranks (a SingleProcess when not distributed: the data-parallel code paths then compute
  /// exactly what the single-process ones do).
  amari::nn::Communicator& comm() {
    if (comm_) return *comm_;
    return single_;
  }
  int rank() const {
    return comm_ ? comm_->rank() : 0;
  }
  int size() const {
    return comm_ ? comm_->size() : 1;
  }

  /// This rank's consecutive share of a batch's rows: [r N / k, (r + 1) N / k). A view, no copy.
  template <amari::Real T>
  amari::Tensor<T> rows(const amari::Tensor<T>& batch) const {
    const amari::Index n = batch.dim(0), k = size(), r = rank();
    const amari::Index first = n * r / k, last = n * (r + 1) / k, d = batch.size() / n;
    return batch.view(first * d, amari::Shape{last - first, d});
  }

  /// The mean loss and gradient over the whole batch (this rank computes on rows(x)); every rank
  /// holds the same result. One collective to size the shards, two to reduce.
  template <amari::Real T>
  T loss_and_gradient(amari::nn::Model<T>& model, const amari::nn::Head<T>& head,
                      const amari::Tensor<T>& x, const amari::Tensor<T>& y,
                      amari::Tensor<T>& gradient) {
    if (!distributed_) return amari::nn::loss_and_gradient(model, head, x, y, gradient);
    const amari::Tensor<T> xs = rows(x), ys = rows(y);
    const amari::nn::Shard shard = amari::nn::shard_of(comm(), xs.dim(0));
    return amari::nn::loss_and_gradient(model, head, xs, ys, gradient, comm(), shard);
  }

  /// Ends the whole job after an error on this rank (the others may wait in a collective): with
  /// MPI, MPI_Abort with status 1; otherwise nothing (the caller returns its status).
  void abort_job([[maybe_unused]] const char* what) {
#if AMARI_EXAMPLE_MPI
    if (distributed_) amari::mpi::abort_job(what);
#endif
  }

 private:
  bool distributed_ = false;
  amari::nn::SingleProcess single_;
#if AMARI_EXAMPLE_MPI
  std::unique_ptr<amari::mpi::Session> session_;
  std::unique_ptr<amari::mpi::Communicator> comm_;
#else
  std::unique_ptr<amari::nn::Communicator> comm_;  // always null
#endif
};

}  // namespace example

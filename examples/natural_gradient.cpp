// The headline job: the 784-256-256-10 tanh MLP on Fashion-MNIST trained three ways, then the cost
// of the derivatives and curvature products that made it possible.
//
//  - Adam (first order, the baseline);
//  - natural gradient: each step solves (F + lambda I) d = -g by conjugate gradient on the exact
//    Fisher (= GGN for the softmax head), matrix-free, with Levenberg-Marquardt damping;
//  - Hessian-free (Martens 2010): GGN on a curvature minibatch, CG warm-started from the previous
//    solution, CG backtracking, Armijo line search, LM damping;
//  - K-FAC (Martens and Grosse 2015): Kronecker-factored Fisher blocks per layer from sampled
//    labels (the true Fisher), inverted every few steps, KL-clipped steps.
// Prints per-epoch progress (and every --log-every steps the second-order diagnostics: lambda,
// rho, CG iterations), a summary table, and the cost table of curvature::measure_costs.
// --log-csv FILE / --log-json FILE record every step of every optimizer (examples/training_log.hpp).
// --distributed, under `mpirun -np k` (built with -DAMARI_MPI=ON): data-parallel Adam, natural
// gradient, Hessian-free and K-FAC, each rank holding 1/k of every batch
// (examples/distributed_support.hpp, docs/scaling.md).
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

#include "distributed_support.hpp"
#include "example_support.hpp"

namespace {

using namespace amari;

struct Result {
  std::string optimizer;
  long epochs = 0;
  double seconds = 0;
  double train_loss = 0;
  double test_accuracy = 0;
};

struct Setup {
  const example::FashionMnist& data;
  const example::Options& opt;
  std::uint64_t seed;
  example::TrainingLog& log;                            // --log-csv / --log-json
  std::optional<curvature::CgStepReport>& last_report;  // set by NG and HF steps for the log
};

// Runs `epochs` epochs, calling step(batch inputs, one-hot targets) -> loss for every minibatch.
template <class Step>
Result train(const Setup& s, const std::string& name, nn::Model<float>& model, long batch, Step step) {
  nn::SoftmaxCrossEntropy<float> head;
  Result r{name};
  const long epochs = s.opt.integer("epochs"), log_every = s.opt.integer("log-every");
  example::Progress progress("[" + name + "]");
  example::TrainingClock clock;  // training time for the log, test evaluation excluded
  long total_steps = 0;
  for (long epoch = 1; epoch <= epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0;
    long steps = 0;
    clock.resume();
    progress.start(epoch, static_cast<long>(s.data.train.size()) / batch);
    for (const auto& b :
         nn::Batches<float>(s.data.train, batch, s.seed, static_cast<std::uint64_t>(epoch), nn::LastBatch::drop)) {
      if (log_every > 0 && steps % log_every == 0) progress.finish();  // the step prints a line
      s.last_report.reset();
      const double loss = step(b.inputs, nn::one_hot<float>(b.labels, 10), steps);
      loss_sum += loss;
      ++steps, ++total_steps;
      example::LogRecord rec{.optimizer = name, .epoch = epoch, .step = total_steps, .seconds = clock.seconds(),
                             .loss = loss};
      if (s.last_report) {
        rec.lambda = s.last_report->lambda, rec.rho = s.last_report->rho;
        rec.cg_iterations = s.last_report->cg_iterations;
      }
      s.log.write(rec);
      progress.update(steps, loss);
    }
    clock.pause();
    progress.finish();
    const auto eval = nn::evaluate(model, head, s.data.test.inputs, s.data.test.labels, 10);
    s.log.write({.record = "epoch", .optimizer = name, .epoch = epoch, .step = total_steps, .seconds = clock.seconds(),
                 .loss = loss_sum / static_cast<double>(steps), .test_loss = eval.loss, .test_accuracy = eval.accuracy});
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.seconds += sec;
    r.epochs = epoch;
    r.train_loss = loss_sum / static_cast<double>(steps);
    r.test_accuracy = eval.accuracy;
    std::printf("[%s] epoch %ld  train loss %.4f  test loss %.4f  test accuracy %.4f  %.1f s\n", name.c_str(), epoch,
                r.train_loss, eval.loss, eval.accuracy, sec);
    std::fflush(stdout);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  // --distributed (under mpirun): each rank takes its share of every batch; only rank 0 prints.
  example::Parallel parallel(argc, argv);
  const example::Options opt(
      argc, argv,
      example::with_log_options(
      {{"epochs", "5"}, {"seed", "1"}, {"data", nn::kFashionMnistDir}, {"train-subset", "0"},
       {"optimizers", "adam,ng,hf,kfac"}, {"kfac-lr", "0.1"}, {"adam-batch", "128"}, {"adam-lr", "0.001"},
       {"batch", "1000"}, {"curvature-batch", "250"}, {"damping", "1"}, {"cg-iterations", "20"},
       {"hf-cg-iterations", "50"}, {"log-every", "20"}, {"cost-rounds", "10"}}),
      "natural_gradient: Adam vs natural gradient vs Hessian-free vs K-FAC on Fashion-MNIST (784-256-256-10 tanh MLP)",
      {{"optimizers", "comma-separated subset of adam,ng,hf,kfac"},
       {"adam-lr", "Adam learning rate"},
       {"kfac-lr", "K-FAC learning rate"},
       {"batch", "minibatch size of ng, hf and kfac"},
       {"adam-batch", "minibatch size of Adam"},
       {"curvature-batch", "examples of each batch used for the curvature (ng, hf)"},
       {"damping", "initial Levenberg-Marquardt damping lambda (ng, hf)"},
       {"cg-iterations", "CG iterations per natural-gradient step (at most)"},
       {"hf-cg-iterations", "CG iterations per Hessian-free step (at most)"},
       {"log-every", "print the second-order diagnostics every N steps (0: never)"},
       {"cost-rounds", "rounds of the cost table measured at the end"}});
  try {
    const auto data = example::load_fashion_mnist(opt.str("data"), opt.integer("train-subset"));
    example::TrainingLog log = example::open_training_log(opt);
    std::optional<curvature::CgStepReport> last_report;
    const Setup setup{data, opt, static_cast<std::uint64_t>(opt.integer("seed")), log, last_report};
    const std::string which = opt.str("optimizers");
    const long log_every = opt.integer("log-every");
    std::vector<Result> results;
    std::printf("Fashion-MNIST: %lld training, %lld test examples; %ld epochs per optimizer\n",
                static_cast<long long>(data.train.size()), static_cast<long long>(data.test.size()),
                opt.integer("epochs"));
    auto fresh_model = [&] { return nn::Model<float>(nn::mlp<float>({784, 256, 256, 10}, nn::Act::tanh), setup.seed); };
    nn::SoftmaxCrossEntropy<float> head;

    if (which.find("adam") != std::string::npos) {
      nn::Model<float> model = fresh_model();
      nn::synchronize_model(parallel.comm(), model);  // every rank starts from rank 0's parameters
      nn::Adam<float> adam({.learning_rate = opt.real("adam-lr")});
      Tensor<float> grad = model.zeros_like_parameters();
      results.push_back(train(setup, "adam", model, opt.integer("adam-batch"),
                              [&](const Tensor<float>& x, const Tensor<float>& y, long) {
                                const float loss =
                                    parallel.loss_and_gradient(model, head, x, y, grad);
                                adam.step(model.parameters(), grad);
                                return static_cast<double>(loss);
                              }));
    }
    auto report = [&](const char* name, long step, const auto& r) {  // each optimizer prints its own report
      last_report = r;
      if (log_every > 0 && step % log_every == 0) std::printf("[%s]   step %4ld  %s\n", name, step, r.str().c_str());
    };
    if (which.find("ng") != std::string::npos) {
      nn::Model<float> model = fresh_model();
      curvature::NaturalGradientOptions o;
      o.curvature = curvature::Curvature::ggn;  // the exact Fisher of the softmax head
      o.initial_damping = opt.real("damping");
      o.curvature_batch = opt.integer("curvature-batch");
      o.cg.max_iterations = static_cast<int>(opt.integer("cg-iterations"));
      o.line_search = true;
      curvature::NaturalGradient<float> ng(model, head, o, parallel.comm());
      results.push_back(train(setup, "natural gradient", model, opt.integer("batch"),
                              [&](const Tensor<float>& x, const Tensor<float>& y, long step) {
                                const auto r = ng.step(parallel.rows(x), parallel.rows(y));
                                report("ng", step, r);
                                return r.loss;
                              }));
    }
    if (which.find("hf") != std::string::npos) {
      nn::Model<float> model = fresh_model();
      curvature::HessianFreeOptions o;
      o.initial_damping = opt.real("damping");
      o.curvature_batch = opt.integer("curvature-batch");
      o.cg.max_iterations = static_cast<int>(opt.integer("hf-cg-iterations"));
      curvature::HessianFree<float> hf(model, head, o, parallel.comm());
      results.push_back(train(setup, "hessian-free", model, opt.integer("batch"),
                              [&](const Tensor<float>& x, const Tensor<float>& y, long step) {
                                const auto r = hf.step(parallel.rows(x), parallel.rows(y));
                                report("hf", step, r);
                                return r.loss;
                              }));
    }
    if (which.find("kfac") != std::string::npos) {
      nn::Model<float> model = fresh_model();
      curvature::KfacOptions o;
      o.learning_rate = opt.real("kfac-lr");
      o.seed = setup.seed;
      o.evaluate_loss_after = false;
      // Data-parallel: collective construction (options checked, rank 0's parameters), then every
      // step reduces the loss, gradient and factor statistics of the ranks' rows.
      auto kfac = parallel.distributed() ? std::make_unique<curvature::Kfac<float>>(model, head, o, parallel.comm())
                                         : std::make_unique<curvature::Kfac<float>>(model, head, o);
      results.push_back(train(setup, "k-fac", model, opt.integer("batch"),
                              [&](const Tensor<float>& x, const Tensor<float>& y, long step) {
                                const auto r = kfac->step(parallel.rows(x), parallel.rows(y));
                                if (log_every > 0 && step % log_every == 0)
                                  std::printf("[kfac] step %4ld  %s\n", step, r.str().c_str());
                                return r.loss;
                              }));
    }

    std::printf("\n%-18s %7s %10s %17s %20s\n", "optimizer", "epochs", "seconds", "final train loss",
                "final test accuracy");
    for (const auto& r : results)
      std::printf("%-18s %7ld %10.1f %17.4f %20.4f\n", r.optimizer.c_str(), r.epochs, r.seconds, r.train_loss,
                  r.test_accuracy);

    // What the derivatives cost on this model, on a minibatch of 128 test images.
    nn::Model<float> model = fresh_model();
    const Index n = 128;
    const Tensor<float> x = data.test.inputs.view(0, Shape{n, 784});
    const std::vector<int> labels(data.test.labels.begin(), data.test.labels.begin() + n);
    const auto costs = curvature::measure_costs(model, head, x, nn::one_hot<float>(labels, 10),
                                                static_cast<int>(opt.integer("cost-rounds")));
    std::printf("\nCost of one evaluation on a batch of 128, relative to the forward pass f:\n%s", costs.table().c_str());
  } catch (const amari::Error& e) {
    std::fprintf(stderr, "natural_gradient: %s\n", e.what());
    parallel.abort_job(e.what());  // distributed: end every rank, not only this one
    return 1;
  }
  return 0;
}

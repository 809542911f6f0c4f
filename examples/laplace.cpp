// Laplace approximations of the 784-256-256-10 tanh MLP on Fashion-MNIST: train it towards the
// MAP of the mean NLL plus (wd/2)|theta|^2 (Adam with L2 weight decay wd, i.e. a Gaussian prior of
// precision N wd: 30 for the full training set and the default wd = 5e-4), then build four Laplace approximations around the trained parameters (curvature/laplace*.hpp), fit
// each one's prior precision by its log marginal likelihood, and compare the probit predictive
// with the MAP predictive on the test set and on a shifted test set (the test images rotated).
//
//  - last-layer: the exact GGN of the last Linear layer (2570 parameters), dense;
//  - diagonal:   diag(GGN) on --curvature-subset training examples, exact (diag_ggn.hpp) or, with
//                --diagonal hutchinson, Hutchinson's estimate (trace_estimators.hpp) with its
//                negative entries raised to 0;
//  - kfac:       the GGN's Kronecker factors (K-FAC with KFLR errors), on the same subset;
//  - low-rank:   the top --rank eigenpairs of the GGN by Lanczos on the same subset, plus the
//                diagonal above minus the eigenpairs' diagonal (raised to 0).
// Curvatures estimated on a subset are estimates of the mean over the training set, which is what
// the Laplace approximation takes (posterior precision delta I + N C, N the training set size).
//
// Prints the training progress, each approximation's fitted prior precision and log evidence with
// timings, and a table of accuracy, NLL, ECE (15 bins) and Brier score per method and test set;
// --csv FILE writes the table as CSV (method,test_set,accuracy,nll,ece,brier). --quick 1 runs a
// small configuration for CI (a training subset, one epoch, test subsets).
// --predictive glm|nn|both chooses the predictive of each approximation: glm (the default) is the
// linearized predictive with the probit approximation (rows laplace-<form>); nn is the sampling
// predictive, the network itself at --nn-samples posterior weight samples (Laplace::predict_sampled,
// rows laplace-<form>-nn; each costs that many forward passes over the test set); both gives both.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <string>
#include <vector>

#include <amari/curvature/diag_ggn.hpp>
#include <amari/curvature/laplace.hpp>
#include <amari/curvature/laplace_last_layer.hpp>
#include <amari/curvature/laplace_structures.hpp>
#include <amari/nn/metrics.hpp>

#include "example_support.hpp"

namespace {

using namespace amari;
using example::Clock;
using example::normalize_flags;
using example::seconds_since;

// 28 x 28 images (N, 784) in [0, 1] rotated by `degrees` about their centre, bilinear, zero
// outside.
Tensor<float> rotate_images(const Tensor<float>& images, double degrees) {
  const Index n = images.dim(0), side = 28;
  const double a = degrees * std::numbers::pi / 180.0, c = std::cos(a), s = std::sin(a);
  const double mid = (side - 1) / 2.0;
  Tensor<float> out(images.shape());
  for (Index i = 0; i < n; ++i) {
    const float* src = images.data() + i * side * side;
    float* dst = out.data() + i * side * side;
    for (Index r = 0; r < side; ++r) {
      for (Index q = 0; q < side; ++q) {
        // The source point that lands on (r, q): rotate back by -a.
        const double x = c * (q - mid) + s * (r - mid) + mid, y = -s * (q - mid) + c * (r - mid) + mid;
        const double x0 = std::floor(x), y0 = std::floor(y);
        double v = 0;
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx) {
            const Index xi = static_cast<Index>(x0) + dx, yi = static_cast<Index>(y0) + dy;
            if (xi < 0 || yi < 0 || xi >= side || yi >= side) continue;
            const double w = (dx ? x - x0 : 1 - (x - x0)) * (dy ? y - y0 : 1 - (y - y0));
            v += w * src[yi * side + xi];
          }
        }
        dst[r * side + q] = static_cast<float>(v);
      }
    }
  }
  return out;
}

Tensor<float> first_rows(const Tensor<float>& x, Index n) {
  return x.view(0, Shape{n, x.dim(1)}).clone();
}

struct Row {
  std::string method, test_set;
  nn::ClassifierMetrics m;
};

struct TestSet {
  std::string name;
  Tensor<float> inputs;
  std::vector<int> labels;
};

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args = normalize_flags(argc, argv);
  std::vector<char*> cargs;
  for (const std::string& a : args) cargs.push_back(const_cast<char*>(a.c_str()));
  const example::Options opt(
      static_cast<int>(cargs.size()), cargs.data(),
      {{"epochs", "20"}, {"seed", "1"}, {"data-dir", nn::kFashionMnistDir}, {"train-subset", "0"},
       {"test-subset", "0"}, {"curvature-subset", "5000"}, {"batch", "128"}, {"lr", "0.001"},
       {"weight-decay", "5e-4"}, {"rotation", "30"}, {"probes", "30"}, {"rank", "20"},
       {"quick", "0"}, {"csv", ""}, {"diagonal", "exact"}, {"predictive", "glm"}, {"nn-samples", "30"}},
      "laplace: MAP vs Laplace approximations (last layer, diagonal, K-FAC, low rank) of the\n"
      "784-256-256-10 tanh MLP on Fashion-MNIST, on the test set and on a rotated test set");
  const bool quick = opt.integer("quick") != 0;
  const long epochs = quick ? 1 : opt.integer("epochs");
  const long train_subset = quick ? 10000 : opt.integer("train-subset");
  const Index test_subset = quick ? 2000 : opt.integer("test-subset");
  const Index curvature_subset = quick ? 1000 : opt.integer("curvature-subset");
  const int probes = quick ? 10 : static_cast<int>(opt.integer("probes"));
  const int rank = quick ? 8 : static_cast<int>(opt.integer("rank"));
  const auto seed = static_cast<std::uint64_t>(opt.integer("seed"));
  const std::string predictive = opt.str("predictive");
  const int nn_samples = static_cast<int>(opt.integer("nn-samples"));
  try {
    if (predictive != "glm" && predictive != "nn" && predictive != "both") {
      throw ValueError("laplace: --predictive must be glm, nn or both, got '" + predictive + "'");
    }
    const auto t_start = Clock::now();
    // Data: the rotation acts on the raw [0, 1] images, then the training set's standardization.
    nn::Dataset<float> train = nn::load_fashion_mnist<float>(nn::Split::train, opt.str("data-dir"));
    nn::Dataset<float> test = nn::load_fashion_mnist<float>(nn::Split::test, opt.str("data-dir"));
    if (train_subset > 0 && train_subset < train.size()) train = nn::take(train, train_subset);
    if (test_subset > 0 && test_subset < test.size()) test = nn::take(test, test_subset);
    const auto standardize = nn::Standardizer<float>::fit(train);
    const std::vector<TestSet> tests = {
        {"clean", standardize.apply(test.inputs), test.labels},
        {"shifted", standardize.apply(rotate_images(test.inputs, opt.real("rotation"))), test.labels}};
    train = standardize.apply(train);
    const Tensor<float> targets = nn::one_hot<float>(train.labels, 10);
    std::printf("Fashion-MNIST: %lld training, %lld test examples; shifted test set: rotated by %g "
                "degrees\n",
                static_cast<long long>(train.size()), static_cast<long long>(test.size()),
                opt.real("rotation"));

    // MAP: Adam on the mean NLL plus the L2 penalty (wd/2)|theta|^2.
    nn::Model<float> model(nn::mlp<float>({784, 256, 256, 10}, nn::Act::tanh), seed);
    nn::SoftmaxCrossEntropy<float> head;
    nn::Adam<float> adam({.learning_rate = opt.real("lr"), .weight_decay = opt.real("weight-decay")});
    Tensor<float> grad = model.zeros_like_parameters();
    for (long epoch = 1; epoch <= epochs; ++epoch) {
      const auto t0 = Clock::now();
      double loss = 0;
      long steps = 0;
      for (const auto& b : nn::Batches<float>(train, opt.integer("batch"), seed,
                                              static_cast<std::uint64_t>(epoch), nn::LastBatch::drop)) {
        loss +=
            nn::loss_and_gradient(model, head, b.inputs, nn::one_hot<float>(b.labels, 10), grad);
        adam.step(model.parameters(), grad);
        ++steps;
      }
      std::printf("[map] epoch %ld  train loss %.4f  %.1f s\n", epoch, loss / static_cast<double>(steps),
                  seconds_since(t0));
      std::fflush(stdout);
    }
    model.eval();

    std::vector<Row> rows;
    const int width = predictive == "glm" ? 20 : 22;  // room for "laplace-last-layer-nn"
    auto evaluate = [&](const std::string& method, auto&& predict) {
      for (const TestSet& t : tests) {
        const auto t0 = Clock::now();
        const Tensor<double> p = predict(t.inputs);
        rows.push_back({method, t.name, nn::classifier_metrics(p, t.labels)});
        std::printf("  %-*s %-8s predictive %.1f s\n", width, method.c_str(), t.name.c_str(), seconds_since(t0));
        std::fflush(stdout);
      }
    };
    evaluate("map", [&](const Tensor<float>& x) {
      const Tensor<float> pf = head.predict(model.forward(x));
      Tensor<double> p = Tensor<double>::uninitialized(pf.shape());
      for (Index i = 0; i < p.size(); ++i) p[i] = pf[i];
      return p;
    });

    // The curvature subset and its GGN over the whole subset (mean convention).
    const Index ns = std::min<Index>(curvature_subset, train.size());
    const Tensor<float> xs = first_rows(train.inputs, ns), ys = first_rows(targets, ns);
    curvature::DatasetOperator<float> ggn(curvature::Curvature::ggn, model, head, xs, ys, 500);
    const curvature::LaplaceOptions lo{.prior_precision = 1.0, .batch_size = 500};

    auto run = [&](const std::string& method, curvature::Laplace<float>& la, double build_seconds) {
      const auto t0 = Clock::now();
      const curvature::PriorFit fit = la.fit_prior_precision();
      std::printf("[%s] %s: built in %.1f s; prior precision %.4g (log evidence %.6g, %d evaluations, "
                  "%.1f s%s)\n",
                  method.c_str(), la.name().c_str(), build_seconds, fit.prior_precision,
                  fit.log_marginal_likelihood, fit.evaluations, seconds_since(t0),
                  fit.at_boundary ? ", AT THE EDGE of the search range" : "");
      std::fflush(stdout);
      if (predictive != "nn") evaluate(method, [&](const Tensor<float>& x) { return la.predict_probit(x); });
      if (predictive != "glm") {
        evaluate(method + "-nn", [&](const Tensor<float>& x) {
          return la.predict_sampled(x, {.batch_size = 1000, .samples = nn_samples, .seed = seed});
        });
      }
    };

    {
      const auto t0 = Clock::now();
      curvature::LastLayerLaplace<float> la(model, head, train.inputs, targets, lo);
      run("laplace-last-layer", la, seconds_since(t0));
    }
    // diag(GGN) on the subset: exact (diag_ggn.hpp), or Hutchinson's estimate (Bekas et al. 2007),
    // whose noise can make entries < 0 (raised to 0).
    auto t0 = Clock::now();
    Tensor<float> diag(Shape{model.num_parameters()});
    if (opt.str("diagonal") == "exact") {
      diag = curvature::diagonal_ggn_over_dataset(model, head, xs, 500);
      std::printf("exact diagonal of the GGN on %lld examples, %.1f s\n", static_cast<long long>(ns),
                  seconds_since(t0));
    } else if (opt.str("diagonal") == "hutchinson") {
      const curvature::DiagonalEstimate est =
          curvature::diagonal_estimate(ggn, {.probes = probes, .seed = seed});
      Index negative = 0;
      for (Index i = 0; i < diag.size(); ++i) {
        const double v = est.values[static_cast<std::size_t>(i)];
        negative += v < 0;
        diag[i] = static_cast<float>(std::max(v, 0.0));
      }
      std::printf("Hutchinson diagonal of the GGN: %d probes on %lld examples, %lld of %lld entries "
                  "raised from below 0, %.1f s\n",
                  probes, static_cast<long long>(ns), static_cast<long long>(negative),
                  static_cast<long long>(diag.size()), seconds_since(t0));
    } else {
      throw ValueError("laplace: --diagonal must be exact or hutchinson, got '" + opt.str("diagonal") + "'");
    }
    const double diag_seconds = seconds_since(t0);
    {
      t0 = Clock::now();
      curvature::DiagonalLaplace<float> la(model, head, train.inputs, targets, diag, lo);
      run("laplace-diagonal", la, diag_seconds + seconds_since(t0));
    }
    {
      t0 = Clock::now();
      // decay close to 1: the moving averages are the means over the (equal) batches.
      curvature::KroneckerFactors<float> factors(
          model, head, {.decay = 0.999999, .fisher = curvature::KfacFisher::kflr, .untapped_curvature = 0});
      for (Index b = 0; b < ns; b += 500) {
        const Index count = std::min<Index>(500, ns - b);
        factors.update(xs.view(b * 784, Shape{count, 784}), ys.view(b * 10, Shape{count, 10}));
      }
      const double factor_seconds = seconds_since(t0);
      curvature::KfacLaplace<float> la(model, head, train.inputs, targets, factors, lo);
      std::printf("K-FAC factors (KFLR) on %lld examples %.1f s, eigendecompositions and log "
                  "likelihood %.1f s\n",
                  static_cast<long long>(ns), factor_seconds, seconds_since(t0) - factor_seconds);
      run("laplace-kfac", la, seconds_since(t0));
    }
    {
      t0 = Clock::now();
      const curvature::LanczosResult<float> eig =
          curvature::lanczos(ggn, rank, {.max_iterations = 3 * rank + 20, .tolerance = 1e-4, .seed = seed});
      // The diagonal the top eigenpairs leave out: diag(GGN) - diag(U L U^T), raised to 0.
      Tensor<float> rest = diag.clone();
      for (std::size_t m = 0; m < eig.largest.eigenvalues.size(); ++m) {
        const Tensor<float>& u = eig.largest.eigenvectors[m];
        const double l = eig.largest.eigenvalues[m];
        for (Index i = 0; i < rest.size(); ++i) rest[i] -= static_cast<float>(l * u[i] * u[i]);
      }
      for (Index i = 0; i < rest.size(); ++i) rest[i] = std::max(rest[i], 0.0f);
      std::printf("Lanczos: top %zu eigenvalues of the GGN from %d products (%s), largest %.4g\n",
                  eig.largest.eigenvalues.size(), eig.products, curvature::to_string(eig.status),
                  eig.largest.eigenvalues.empty() ? 0.0 : eig.largest.eigenvalues[0]);
      curvature::LowRankLaplace<float> la(model, head, train.inputs, targets, eig.largest, &rest, lo);
      run("laplace-low-rank", la, seconds_since(t0));
    }

    std::printf("\n%-*s %-8s %9s %8s %8s %8s\n", width, "method", "test set", "accuracy", "NLL", "ECE", "Brier");
    for (const Row& r : rows) {
      std::printf("%-*s %-8s %9.4f %8.4f %8.4f %8.4f\n", width, r.method.c_str(), r.test_set.c_str(),
                  r.m.accuracy, r.m.nll, r.m.ece, r.m.brier);
    }
    if (!opt.str("csv").empty()) {
      std::FILE* f = std::fopen(opt.str("csv").c_str(), "w");
      if (!f) throw IoError("laplace: cannot open '" + opt.str("csv") + "' for writing");
      std::fprintf(f, "method,test_set,accuracy,nll,ece,brier\n");
      for (const Row& r : rows) {
        std::fprintf(f, "%s,%s,%.6f,%.6f,%.6f,%.6f\n", r.method.c_str(), r.test_set.c_str(),
                     r.m.accuracy, r.m.nll, r.m.ece, r.m.brier);
      }
      if (std::fclose(f) != 0) throw IoError("laplace: writing '" + opt.str("csv") + "' failed");
      std::printf("wrote %s\n", opt.str("csv").c_str());
    }
    std::printf("total %.1f s\n", seconds_since(t_start));
  } catch (const amari::Error& e) {
    std::fprintf(stderr, "laplace: %s\n", e.what());
    return 1;
  }
  return 0;
}

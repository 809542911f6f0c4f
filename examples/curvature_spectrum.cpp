// The spectra of four curvature matrices, side by side (SEED-NOTES 1 and 3 made visible).
//
// Part 1, the Fashion-MNIST MLP (784-256-256-10 tanh, softmax cross-entropy, like train_mlp), at
// initialization and after a short Adam training, on --curvature-batch training examples:
//  - the top --top-k eigenvalues of the GGN (= the Fisher for this head), the empirical Fisher
//    (scores at the data labels) and the Hessian of the loss, by Lanczos (curvature/lanczos.hpp),
//    printed as one table with the largest Lanczos residual of each column;
//  - their traces by Hutch++ (curvature/trace_estimators.hpp) with standard errors;
//  - their spectral densities by stochastic Lanczos quadrature (curvature/spectral_density.hpp),
//    written to --out-dir as spectral_density.dat (and, when gnuplot is on the PATH, plotted to
//    spectral_density.png).
// Part 2, a small heteroscedastic regression (1-32-2 tanh MLP, nn::GaussianLearnedVariance head,
// double): the top and bottom eigenvalues of the closed-form Fisher J^T F_R J and of the GGN
// J^T H_L J (dense Lanczos, every direction), on the training data and on the same inputs with
// targets moved 4 predicted standard deviations away. The logits are not the natural parameter
// here, so the two differ and the GGN has negative eigenvalues where residuals are large.
//
// spectral_density.dat: one block per (matrix, stage), blocks separated by two blank lines
// (gnuplot's `index`), each starting with a comment line "# <matrix> <stage>"; the columns are
//   lambda   density
// the SLQ density broadened by a Gaussian of width sigma = (largest - smallest node) / 200, on 400
// points; it integrates to 1 over lambda.
//
// --quick 1: a small configuration for CI (a training subset of 2000 images, 128 curvature
// examples, 20 Lanczos steps, 12 products per trace, one SLQ probe of 16 steps).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <amari/curvature/closed_form_fisher.hpp>
#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/hessian.hpp>
#include <amari/curvature/lanczos.hpp>
#include <amari/curvature/spectral_density.hpp>
#include <amari/curvature/trace_estimators.hpp>
#include <amari/nn/gaussian_variance_head.hpp>

#include "example_support.hpp"

namespace {

using namespace amari;
using example::Clock;
using example::normalize_flags;
using example::seconds_since;

struct Settings {
  long epochs, batch, train_subset, curvature_batch, top_k, lanczos_steps, trace_products,
      slq_probes, slq_steps;
  double lr;
  std::uint64_t seed;
  std::string data, out_dir;
};

// What one matrix at one stage gave.
struct Spectrum {
  std::string matrix, stage;
  std::vector<double> top;
  double max_residual =
      0;  // largest Lanczos residual estimate among the top-k, relative to lambda_1
  curvature::StochasticEstimate trace;
  curvature::SpectralDensity density;
};

Spectrum analyze(curvature::LinearOperator<float>& op, const std::string& matrix,
                 const std::string& stage, const Settings& s) {
  Spectrum out{matrix, stage, {}, 0, {}, {}};
  curvature::LanczosOptions lo;
  lo.max_iterations = static_cast<int>(s.lanczos_steps);
  lo.seed = s.seed;
  const auto lz = curvature::lanczos(op, static_cast<int>(s.top_k), lo);
  out.top = lz.largest.eigenvalues;
  for (double r : lz.largest.residual_estimates)
    out.max_residual = std::max(out.max_residual, r / std::max(std::fabs(out.top.front()), 1e-30));
  out.trace = curvature::hutch_plus_plus_trace(
      op, {.probes = static_cast<int>(s.trace_products), .seed = s.seed + 1});
  out.density = curvature::spectral_density(op, {.probes = static_cast<int>(s.slq_probes),
                                                 .steps = static_cast<int>(s.slq_steps),
                                                 .seed = s.seed + 2});
  return out;
}

// The three matrices of the MLP at its current parameters on one curvature batch.
void analyze_all(const nn::Model<float>& model, const nn::Head<float>& head, const Tensor<float>& x,
                 const Tensor<float>& y, const std::string& stage, const Settings& s,
                 std::vector<Spectrum>& out) {
  const auto t0 = Clock::now();
  curvature::GgnOperator<float> ggn(model, head, x);
  out.push_back(analyze(ggn, "GGN", stage, s));
  curvature::EmpiricalFisherOperator<float> ef(model, head, x, y);
  out.push_back(analyze(ef, "EF", stage, s));
  curvature::HessianOperator<float> hessian(model, head, x, y);
  out.push_back(analyze(hessian, "Hessian", stage, s));
  std::printf("  %s: three spectra in %.1f s\n", stage.c_str(), seconds_since(t0));
}

void print_table(const std::vector<Spectrum>& sp, const Settings& s) {
  std::printf("\ntop-%ld eigenvalues (Lanczos, at most %ld steps, %ld curvature examples)\n",
              s.top_k, s.lanczos_steps, s.curvature_batch);
  std::printf("%3s |", "k");
  for (const auto& x : sp) std::printf(" %11s", (x.matrix).c_str());
  std::printf("\n%3s |", "");
  for (const auto& x : sp) std::printf(" %11s", x.stage.c_str());
  std::printf("\n");
  for (long k = 0; k < s.top_k; ++k) {
    std::printf("%3ld |", k + 1);
    for (const auto& x : sp) {
      if (k < static_cast<long>(x.top.size())) {
        std::printf(" %11.4g", x.top[static_cast<std::size_t>(k)]);
      } else {
        std::printf(" %11s", "-");
      }
    }
    std::printf("\n");
  }
  std::printf("res |");
  for (const auto& x : sp) std::printf(" %11.1e", x.max_residual);
  std::printf("   (largest residual / lambda_1)\n");
  std::printf("\ntraces (Hutch++, %ld products; +- one standard error of the Hutchinson part)\n",
              s.trace_products);
  for (const auto& x : sp) {
    std::printf("  %-8s %-9s %12.5g +- %-10.3g (sketch part %.5g)\n", x.matrix.c_str(),
                x.stage.c_str(), x.trace.value, x.trace.standard_error, x.trace.low_rank_part);
  }
}

// spectral_density.dat (and .png with gnuplot); returns false when nothing was written.
bool write_densities(const std::vector<Spectrum>& sp, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const std::string path = (fs::path(dir) / "spectral_density.dat").string();
  std::ofstream f(path);
  if (!f) {
    std::fprintf(stderr, "curvature_spectrum: cannot write %s\n", path.c_str());
    return false;
  }
  f << "# SLQ spectral densities written by examples/curvature_spectrum; one block per matrix\n"
       "# and stage (blocks separated by two blank lines); columns: lambda density (Gaussian\n"
       "# broadening, see the comment line of each block for sigma).\n";
  for (std::size_t b = 0; b < sp.size(); ++b) {
    const auto& d = sp[b].density;
    if (d.nodes.empty()) continue;
    const auto [lo, hi] = std::minmax_element(d.nodes.begin(), d.nodes.end());
    const double sigma = std::max((*hi - *lo) / 200.0, 1e-12);
    const auto curve = curvature::broadened_density(d, sigma, 400);
    if (b > 0) f << "\n\n";
    f << "# " << sp[b].matrix << " " << sp[b].stage << " sigma=" << sigma << "\n";
    for (std::size_t i = 0; i < curve.t.size(); ++i)
      f << curve.t[i] << " " << curve.density[i] << "\n";
  }
  f.close();
  std::printf("\nspectral densities written to %s\n", path.c_str());
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
    std::printf(
        "(gnuplot not found: no PNG; plot the file with any tool, columns lambda density)\n");
    return true;
  }
  const std::string script = (fs::path(dir) / "spectral_density.gp").string();
  const std::string png = (fs::path(dir) / "spectral_density.png").string();
  std::ofstream g(script);
  g << "set terminal pngcairo size 1500,900 noenhanced\n"
    << "set output '" << png << "'\n"
    << "set multiplot layout 2,3 title 'SLQ spectral densities of the Fashion-MNIST MLP'\n"
    << "set logscale y\nset format y '%.0e'\nset yrange [1e-6:*]\n"
    << "set xlabel 'eigenvalue'\nset ylabel 'density'\nunset key\n";
  for (std::size_t b = 0; b < sp.size(); ++b) {
    g << "set title '" << sp[b].matrix << ", " << sp[b].stage << "'\n"
      << "plot '" << path << "' index " << b
      << " using 1:($2 > 1e-6 ? $2 : 1e-6) with lines lw 2\n";
  }
  g << "unset multiplot\n";
  g.close();
  if (std::system(("gnuplot '" + script + "'").c_str()) == 0) {
    std::printf("plotted to %s\n", png.c_str());
  } else {
    std::printf("(gnuplot failed on %s: no PNG)\n", script.c_str());
  }
  return true;
}

// ---- part 2: the learned-variance head
// ------------------------------------------------------------

struct Extremes {
  std::vector<double> top, bottom;
};

Extremes extremes(curvature::LinearOperator<double>& op, int k) {
  curvature::LanczosOptions lo;
  lo.which = curvature::SpectrumEnd::both;
  lo.max_iterations = static_cast<int>(op.size());  // P = 130: the whole Krylov space
  const auto r = curvature::lanczos(op, k, lo);
  return {r.largest.eigenvalues, r.smallest.eigenvalues};
}

void regression_section(std::uint64_t seed, bool quick) {
  std::printf("\n-- learned-variance Gaussian head: Fisher J^T F_R J vs GGN J^T H_L J --\n");
  // y = sin(x) + (0.05 + 0.25 |x|) eps on x in [-3, 3]: the noise grows with |x|.
  const Index n = 256;
  nn::Rng rng(seed, 99);
  Tensor<double> x(Shape{n, 1}), y(Shape{n, 1});
  for (Index i = 0; i < n; ++i) {
    x[i] = -3.0 + 6.0 * rng.uniform();
    y[i] = std::sin(x[i]) + (0.05 + 0.25 * std::fabs(x[i])) * rng.normal();
  }
  nn::Model<double> model(nn::mlp<double>({1, 32, 2}, nn::Act::tanh), seed);
  nn::GaussianLearnedVariance<double> head;
  nn::Adam<double> adam({.learning_rate = 0.01});
  Tensor<double> grad = model.zeros_like_parameters();
  const int steps = quick ? 300 : 2000;
  double loss = 0;
  for (int t = 0; t < steps; ++t) {
    loss = nn::loss_and_gradient(model, head, x, y, grad);
    adam.step(model.parameters(), grad);
  }
  std::printf(
      "1-32-2 tanh MLP (P = %lld), %lld points, %d full-batch Adam steps: mean NLL %.4f "
      "(+ (1/2) log 2 pi left out)\n",
      static_cast<long long>(model.num_parameters()), static_cast<long long>(n), steps, loss);
  // The same inputs with targets 4 predicted standard deviations above the predicted mean.
  const Tensor<double> z = model.forward(x);
  Tensor<double> y_far(Shape{n, 1});
  for (Index i = 0; i < n; ++i) y_far[i] = z[i * 2] + 4.0 * std::exp(0.5 * z[i * 2 + 1]);

  curvature::ClosedFormFisherOperator<double> fisher(model, head, x);
  curvature::GgnOperator<double> ggn_data(model, head, x, y), ggn_far(model, head, x, y_far);
  const int k = 3;
  const Extremes f = extremes(fisher, k), gd = extremes(ggn_data, k), gf = extremes(ggn_far, k);
  std::printf("%-34s %11s %11s %11s | %11s %11s\n", "matrix (targets)", "lambda_1", "lambda_2",
              "lambda_3", "lambda_min", "2nd min");
  auto row = [&](const char* label, const Extremes& e) {
    std::printf("%-34s %11.4g %11.4g %11.4g | %11.4g %11.4g\n", label, e.top.at(0), e.top.at(1),
                e.top.at(2), e.bottom.at(0), e.bottom.at(1));
  };
  row("Fisher (needs no targets)", f);
  row("GGN (training targets)", gd);
  row("GGN (targets 4 sd off)", gf);
  std::printf(
      "The Fisher is positive semi-definite; the GGN takes H_L at the targets, whose 2 x 2\n"
      "block per output [[w, r w], [r w, r^2 w / 2]] has determinant -r^2 w^2 / 2: negative\n"
      "eigenvalues grow with the residuals r.\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args = normalize_flags(argc, argv);
  std::vector<char*> argp;
  for (auto& a : args) argp.push_back(a.data());
  const example::Options opt(
      static_cast<int>(argp.size()), argp.data(),
      {{"quick", "0"},
       {"epochs", "1"},
       {"batch", "128"},
       {"lr", "0.001"},
       {"seed", "1"},
       {"data", nn::kFashionMnistDir},
       {"train-subset", "0"},
       {"curvature-batch", "1000"},
       {"top-k", "10"},
       {"lanczos-steps", "80"},
       {"trace-products", "60"},
       {"slq-probes", "3"},
       {"slq-steps", "50"},
       {"out-dir", ""}},
      "curvature_spectrum: top eigenvalues, traces and spectral densities of the GGN, the\n"
      "empirical Fisher and the Hessian of the Fashion-MNIST MLP at initialization and after\n"
      "training; then Fisher vs GGN for a learned-variance Gaussian head. Densities go to\n"
      "--out-dir DIR/spectral_density.dat (columns lambda density, one block per matrix and\n"
      "stage) and, with gnuplot installed, to DIR/spectral_density.png.",
      {{"quick", "1: the small CI configuration (overrides the sizes below)"},
       {"curvature-batch", "training examples the curvature matrices average over"},
       {"top-k", "eigenvalues reported per matrix"},
       {"lanczos-steps", "upper bound on Lanczos steps (operator products) for the top-k"},
       {"trace-products", "operator products of each Hutch++ trace estimate"},
       {"slq-probes", "random probes of stochastic Lanczos quadrature"},
       {"slq-steps", "Lanczos steps per SLQ probe"},
       {"out-dir", "directory for spectral_density.dat/.png (empty: not written)"}});
  const bool quick = opt.integer("quick") != 0;
  Settings s{opt.integer("epochs"),
             opt.integer("batch"),
             opt.integer("train-subset"),
             opt.integer("curvature-batch"),
             opt.integer("top-k"),
             opt.integer("lanczos-steps"),
             opt.integer("trace-products"),
             opt.integer("slq-probes"),
             opt.integer("slq-steps"),
             opt.real("lr"),
             static_cast<std::uint64_t>(opt.integer("seed")),
             opt.str("data"),
             opt.str("out-dir")};
  if (quick) {
    s.epochs = 1;
    s.train_subset = 2000;
    s.curvature_batch = 128;
    s.lanczos_steps = 20;
    s.trace_products = 12;
    s.slq_probes = 1;
    s.slq_steps = 16;
  }
  try {
    const auto start = Clock::now();
    const auto data = example::load_fashion_mnist(s.data, s.train_subset);
    nn::Model<float> model(nn::mlp<float>({784, 256, 256, 10}, nn::Act::tanh), s.seed);
    nn::SoftmaxCrossEntropy<float> head;
    const Index nc = std::min<Index>(static_cast<Index>(s.curvature_batch), data.train.size());
    const nn::Dataset<float> curv = nn::take(data.train, nc);
    const Tensor<float> y_curv = nn::one_hot<float>(curv.labels, 10);
    std::printf("784-256-256-10 tanh MLP, P = %lld; curvature on the first %lld training images\n",
                static_cast<long long>(model.num_parameters()), static_cast<long long>(nc));

    std::vector<Spectrum> spectra;
    analyze_all(model, head, curv.inputs, y_curv, "init", s, spectra);

    nn::Adam<float> adam({.learning_rate = s.lr});
    Tensor<float> grad = model.zeros_like_parameters();
    const auto t_train = Clock::now();
    for (long epoch = 1; epoch <= s.epochs; ++epoch) {
      for (const auto& b :
           nn::Batches<float>(data.train, s.batch, s.seed, static_cast<std::uint64_t>(epoch),
                              nn::LastBatch::drop)) {
        nn::loss_and_gradient(model, head, b.inputs, nn::one_hot<float>(b.labels, 10), grad);
        adam.step(model.parameters(), grad);
      }
    }
    const auto eval = nn::evaluate(model, head, data.test.inputs, data.test.labels, 10);
    std::printf(
        "  trained %ld epoch(s) of Adam (lr %g, batch %ld) on %lld images in %.1f s: "
        "test accuracy %.4f\n",
        s.epochs, s.lr, s.batch, static_cast<long long>(data.train.size()), seconds_since(t_train),
        eval.accuracy);
    analyze_all(model, head, curv.inputs, y_curv, "trained", s, spectra);

    // Columns: the three matrices at init, then after training.
    print_table(spectra, s);
    if (!s.out_dir.empty()) {
      write_densities(spectra, s.out_dir);
    } else {
      std::printf("\n(no --out-dir: spectral densities not written)\n");
    }
    regression_section(s.seed, quick);
    std::printf("\ntotal %.1f s\n", seconds_since(start));
  } catch (const amari::Error& e) {
    std::fprintf(stderr, "curvature_spectrum: %s\n", e.what());
    return 1;
  }
  return 0;
}

// What do a JVP, a VJP and a Fisher-vector product cost, relative to the forward pass?
//
// Measures, for the three tanh MLP configurations of the benchmarks (small 64-64-64-10 batch 32,
// mnist 784-256-256-10 batch 128, wide 1024-1024-1024-10 batch 256), the median time of each
// computation over interleaved rounds, and prints it with its ratio to the forward pass.
// Set the thread count with OMP_NUM_THREADS. Usage: cost_ratios [rounds] [float|double]
// (or --rounds N --type float|double; --help lists them).
#include <cstdio>
#include <cstdlib>
#include <string>

#include <amari/amari.hpp>

#include "example_support.hpp"

namespace {

template <amari::Real T>
void run(int rounds) {
  struct Config {
    const char* name;
    std::vector<amari::Index> sizes;
    amari::Index batch;
  };
  const Config configs[] = {{"small", {64, 64, 64, 10}, 32},
                            {"mnist", {784, 256, 256, 10}, 128},
                            {"wide", {1024, 1024, 1024, 10}, 256}};
  for (const auto& c : configs) {
    amari::nn::Model<T> model(amari::nn::mlp<T>(c.sizes, amari::nn::Act::tanh), 1);
    amari::nn::SoftmaxCrossEntropy<T> head;
    amari::nn::Rng rng(3);
    auto x = amari::Tensor<T>::uninitialized(amari::Shape{c.batch, c.sizes.front()});
    for (amari::Index i = 0; i < x.size(); ++i) x[i] = static_cast<T>(rng.normal());
    std::vector<int> labels(static_cast<std::size_t>(c.batch));
    for (auto& l : labels) l = static_cast<int>(rng.below(static_cast<std::uint64_t>(c.sizes.back())));
    const auto y = amari::nn::one_hot<T>(labels, c.sizes.back());
    const auto report = amari::curvature::measure_costs(model, head, x, y, rounds);
    std::printf("\n%s: MLP", c.name);
    for (auto s : c.sizes) std::printf(" %lld", static_cast<long long>(s));
    std::printf(", batch %lld, %s, %lld parameters\n", static_cast<long long>(c.batch),
                sizeof(T) == 4 ? "float" : "double", static_cast<long long>(model.num_parameters()));
    std::printf("%s", report.table().c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const example::Options opt(argc, argv, {{"rounds", "20"}, {"type", "float"}},
                             "cost_ratios: time of f, JVP, VJP and the curvature products of three tanh MLPs,\n"
                             "relative to the forward pass f (threads: OMP_NUM_THREADS)\n"
                             "usage: cost_ratios [rounds] [float|double]",
                             {{"rounds", "interleaved rounds per configuration (the median is shown)"},
                              {"type", "float or double"}},
                             {"rounds", "type"});
  const int rounds = static_cast<int>(opt.integer("rounds"));
  const std::string type = opt.str("type");
  try {
    if (type != "float" && type != "double") throw amari::ValueError("the type must be float or double, got " + type);
    if (type == "double") {
      run<double>(rounds);
    } else {
      run<float>(rounds);
    }
  } catch (const amari::Error& e) {
    std::fprintf(stderr, "cost_ratios: %s\n", e.what());
    return 1;
  }
  return 0;
}

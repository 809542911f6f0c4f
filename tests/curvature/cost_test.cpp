// measure_costs: the report is complete and well formed. Speed itself is measured in bench/ and
// never asserted here.
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include <omp.h>

#include <catch2/catch.hpp>

#include <amari/curvature/cost.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::curvature::CostReport;
using amari::curvature::measure_costs;

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

template <class T>
CostReport tiny_report(int rounds) {
  amari::test::Rng rng(3);
  amari::nn::Model<T> model(amari::nn::mlp<T>({3, 5, 4}), 1);
  const Tensor<T> x = amari::test::normal_tensor<T>(Shape{6, 3}, rng);
  std::vector<int> labels;
  for (int i = 0; i < 6; ++i) labels.push_back(i % 4);
  const Tensor<T> y = amari::nn::one_hot<T>(labels, 4);
  amari::nn::SoftmaxCrossEntropy<T> head;
  return measure_costs(model, head, x, y, rounds);
}

}  // namespace

TEST_CASE("cost: every measured time is positive and finite, rounds and threads are recorded",
          "[cost]") {
  const CostReport r = tiny_report<double>(3);
  CHECK(r.rounds == 3);
  CHECK(r.threads == omp_get_max_threads());
  CHECK(r.threads >= 1);
  const std::vector<std::pair<const char*, double>> fields = {
      {"forward", r.forward_us},
      {"jvp", r.jvp_us},
      {"vjp", r.vjp_us},
      {"ggn", r.ggn_us},
      {"ggn_linearized", r.ggn_linearized_us},
      {"mc_fisher", r.mc_fisher_us},
      {"ef", r.ef_us},
      {"hvp", r.hvp_us}};
  for (const auto& [name, us] : fields) {
    INFO(name << " = " << us);
    CHECK(std::isfinite(us));
    CHECK(us > 0.0);
  }
  const CostReport f = tiny_report<float>(1);
  CHECK(f.rounds == 1);
  CHECK(f.hvp_us > 0.0);
  CHECK(f.forward_us > 0.0);
}

TEST_CASE("cost: table() has a header and 8 rows, f's ratio is 1.00 and the rest are ratios to f",
          "[cost]") {
  const CostReport r = tiny_report<double>(2);
  const std::vector<std::string> lines = lines_of(r.table());
  REQUIRE(lines.size() == 9);
  CHECK(lines[0].find("2 rounds") != std::string::npos);
  CHECK(lines[1].find("forward (f)") == 0);
  CHECK(lines[1].find("1.00") != std::string::npos);
  const std::vector<std::string> names = {
      "forward (f)",       "JVP (dual forward)", "VJP (gradient)",     "GGN v, with forward",
      "GGN v, linearized", "MC-Fisher v (k=1)",  "empirical Fisher v", "Hessian v"};
  const std::vector<double> us = {r.forward_us,        r.jvp_us,       r.vjp_us, r.ggn_us,
                                  r.ggn_linearized_us, r.mc_fisher_us, r.ef_us,  r.hvp_us};
  for (std::size_t k = 0; k < 8; ++k) {
    INFO(lines[k + 1]);
    CHECK(lines[k + 1].find(names[k]) == 0);
    // The last column is the ratio to f, printed with two decimals.
    std::istringstream in(lines[k + 1].substr(names[k].size()));
    double time = 0, ratio = 0;
    in >> time >> ratio;
    CHECK(time == Approx(us[k]).margin(0.051));
    CHECK(ratio == Approx(us[k] / r.forward_us).margin(0.0051));
  }
}

TEST_CASE("cost: fewer than one round is a ValueError", "[cost]") {
  CHECK_THROWS_AS(tiny_report<double>(0), amari::ValueError);
  CHECK_THROWS_AS(tiny_report<float>(-3), amari::ValueError);
  CHECK_THROWS_WITH(tiny_report<double>(0), Catch::Matchers::Contains("rounds"));
}

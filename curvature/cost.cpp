#include <amari/curvature/cost.hpp>

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/hessian.hpp>
#include <amari/nn/random.hpp>
#include <amari/nn/training.hpp>

namespace amari::curvature {

std::string CostReport::table() const {
  const struct {
    const char* what;
    double us;
  } rows[] = {{"forward (f)", forward_us},
              {"JVP (dual forward)", jvp_us},
              {"VJP (gradient)", vjp_us},
              {"GGN v, with forward", ggn_us},
              {"GGN v, linearized", ggn_linearized_us},
              {"MC-Fisher v (k=1)", mc_fisher_us},
              {"empirical Fisher v", ef_us},
              {"Hessian v", hvp_us}};
  std::string s;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-22s %12s %8s   (median of %d rounds, %d thread%s)\n", "computation", "time [us]",
                "x f", rounds, threads, threads == 1 ? "" : "s");
  s += buf;
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%-22s %12.1f %8.2f\n", r.what, r.us, r.us / forward_us);
    s += buf;
  }
  return s;
}

template <Real T>
CostReport measure_costs(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                         const Tensor<T>& targets, int rounds) {
  if (rounds < 1) throw ValueError("measure_costs: rounds must be >= 1, got " + std::to_string(rounds));
  const Index p = model.num_parameters();
  nn::Rng rng(7);
  Tensor<T> v = Tensor<T>::uninitialized(Shape{p});
  for (Index i = 0; i < p; ++i) v[i] = static_cast<T>(rng.normal());
  Tensor<T> out = Tensor<T>::uninitialized(Shape{p}), grad = model.zeros_like_parameters();
  volatile double sink = 0;
  GgnOperator<T> linearized(model, head, inputs);  // for "one more product at the same theta"

  std::vector<std::function<void()>> work = {
      [&] { sink = sink + static_cast<double>(head.loss(model.forward(inputs), targets).item()); },
      [&] {
        sink = sink + static_cast<double>(
                          head.loss(model.forward_jvp(inputs, v), targets).tangent().item());
      },
      [&] {
        sink = sink + static_cast<double>(nn::gradient_at(model, head, inputs, targets, grad));
      },
      [&] {
        GgnOperator<T> g(model, head, inputs);
        g.apply(v, out);
      },
      [&] { linearized.apply(v, out); },
      [&] {
        MonteCarloFisherOperator<T> f(model, head, inputs, 1, 0);
        f.apply(v, out);
      },
      [&] {
        EmpiricalFisherOperator<T> f(model, head, inputs, targets);
        f.apply(v, out);
      },
      [&] {
        HessianOperator<T> h(model, head, inputs, targets);
        h.apply(v, out);
      },
  };
  using clock = std::chrono::steady_clock;
  std::vector<std::vector<double>> times(work.size());
  for (int r = -1; r < rounds; ++r) {  // round -1 warms caches and buffers
    for (std::size_t k = 0; k < work.size(); ++k) {
      const auto t0 = clock::now();
      work[k]();
      const double us = std::chrono::duration<double, std::micro>(clock::now() - t0).count();
      if (r >= 0) times[k].push_back(us);
    }
  }
  auto median = [](std::vector<double> t) {
    std::sort(t.begin(), t.end());
    const std::size_t n = t.size();
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  };
  CostReport c;
  c.threads = omp_get_max_threads();
  c.rounds = rounds;
  c.forward_us = median(times[0]);
  c.jvp_us = median(times[1]);
  c.vjp_us = median(times[2]);
  c.ggn_us = median(times[3]);
  c.ggn_linearized_us = median(times[4]);
  c.mc_fisher_us = median(times[5]);
  c.ef_us = median(times[6]);
  c.hvp_us = median(times[7]);
  return c;
}

template CostReport measure_costs<float>(const nn::Model<float>&, const nn::Head<float>&, const Tensor<float>&,
                                         const Tensor<float>&, int);
template CostReport measure_costs<double>(const nn::Model<double>&, const nn::Head<double>&, const Tensor<double>&,
                                          const Tensor<double>&, int);

}  // namespace amari::curvature

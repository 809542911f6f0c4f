#include <amari/curvature/per_example.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <amari/nn/recorded_model.hpp>

namespace amari::curvature {

template <Real T>
Tensor<T> per_example_gradients(const nn::Model<T>& model, const nn::Head<T>& head,
                                const Tensor<T>& inputs, const Tensor<T>& targets) {
  if (!inputs.defined() || inputs.rank() < 1 || !targets.defined() || targets.rank() != 2 ||
      inputs.dim(0) != targets.dim(0)) {
    throw ShapeError(
        "per_example_gradients: inputs (N, ...) and targets (N, C) must share N, got " +
        (inputs.defined() ? inputs.shape().str() : std::string("undefined")) + " and " +
        (targets.defined() ? targets.shape().str() : std::string("undefined")));
  }
  const Index N = inputs.dim(0), P = model.num_parameters();
  // One recording of the batch, as nn::gradient_at: model.mode(), current masks, state untouched.
  nn::RecordedModel<T> record(model, inputs);
  const Tensor<T>& z = record.logits();
  // grad_{z_n} l_n = mu(z_n) - T(y_n) = -score_n, per example (no 1/N), for every head.
  Tensor<T> logit_grad = Tensor<T>::uninitialized(z.shape());
  head.score(z, targets, logit_grad);
  const Index C = z.shape()[1];

  Tensor<T> out(Shape{N, P});
  Tensor<T> cotangent(z.shape());  // zero except row n during sweep n
  for (Index n = 0; n < N; ++n) {
    for (Index c = 0; c < C; ++c) cotangent[n * C + c] = -logit_grad[n * C + c];
    Tensor<T> row = out.view(n * P, Shape{P});
    record.vjp(cotangent, row);  // the sweep writes row n in place
    for (Index c = 0; c < C; ++c) cotangent[n * C + c] = T(0);
  }
  return out;
}

template <Real T>
Tensor<T> per_example_gradient_norms(const nn::Model<T>& model, const nn::Head<T>& head,
                                     const Tensor<T>& inputs, const Tensor<T>& targets) {
  const Tensor<T> g = per_example_gradients(model, head, inputs, targets);
  const Index N = g.dim(0), P = g.dim(1);
  Tensor<T> norms(Shape{N});
  for (Index n = 0; n < N; ++n) {
    double s = 0;
    for (Index j = 0; j < P; ++j) {
      const double v = static_cast<double>(g[n * P + j]);
      s += v * v;
    }
    norms[n] = static_cast<T>(std::sqrt(s));
  }
  return norms;
}

template <Real T>
GradientNoise<T> gradient_noise(const Tensor<T>& per_example) {
  if (!per_example.defined() || per_example.rank() != 2) {
    throw ShapeError(
        "gradient_noise: per-example gradients must have shape (N, P), got " +
        (per_example.defined() ? per_example.shape().str() : std::string("undefined")));
  }
  const Index N = per_example.dim(0), P = per_example.dim(1);
  if (N < 2) {
    throw ValueError("gradient_noise: needs at least 2 examples for a variance, got " +
                     std::to_string(N));
  }
  std::vector<double> mean(static_cast<std::size_t>(P), 0.0), m2(static_cast<std::size_t>(P), 0.0);
  for (Index n = 0; n < N; ++n) {
    const T* row = per_example.data() + n * P;
    for (Index j = 0; j < P; ++j) mean[static_cast<std::size_t>(j)] += static_cast<double>(row[j]);
  }
  for (auto& m : mean) m /= static_cast<double>(N);
  // Two passes (mean, then squared deviations): no cancellation when |G| >> the spread.
  for (Index n = 0; n < N; ++n) {
    const T* row = per_example.data() + n * P;
    for (Index j = 0; j < P; ++j) {
      const double d = static_cast<double>(row[j]) - mean[static_cast<std::size_t>(j)];
      m2[static_cast<std::size_t>(j)] += d * d;
    }
  }
  GradientNoise<T> r;
  r.mean = Tensor<T>::uninitialized(Shape{P});
  r.variance = Tensor<T>::uninitialized(Shape{P});
  for (Index j = 0; j < P; ++j) {
    const auto k = static_cast<std::size_t>(j);
    const double var = m2[k] / static_cast<double>(N - 1);
    r.mean[j] = static_cast<T>(mean[k]);
    r.variance[j] = static_cast<T>(var);
    r.trace_covariance += var;
    r.mean_norm_squared += mean[k] * mean[k];
  }
  r.noise_scale = r.mean_norm_squared > 0 ? r.trace_covariance / r.mean_norm_squared
                                          : std::numeric_limits<double>::infinity();
  return r;
}

template Tensor<float> per_example_gradients<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                    const Tensor<float>&, const Tensor<float>&);
template Tensor<double> per_example_gradients<double>(const nn::Model<double>&,
                                                      const nn::Head<double>&,
                                                      const Tensor<double>&, const Tensor<double>&);
template Tensor<float> per_example_gradient_norms<float>(const nn::Model<float>&,
                                                         const nn::Head<float>&,
                                                         const Tensor<float>&,
                                                         const Tensor<float>&);
template Tensor<double> per_example_gradient_norms<double>(const nn::Model<double>&,
                                                           const nn::Head<double>&,
                                                           const Tensor<double>&,
                                                           const Tensor<double>&);
template GradientNoise<float> gradient_noise<float>(const Tensor<float>&);
template GradientNoise<double> gradient_noise<double>(const Tensor<double>&);

}  // namespace amari::curvature

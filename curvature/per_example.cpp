#include <amari/curvature/per_example.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <amari/autodiff/kernels/blocks.hpp>
#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/detail/per_example_record.hpp>
#include <amari/curvature/diag_ggn.hpp>
#include <amari/curvature/kfac.hpp>

namespace amari::curvature {

namespace {

void check_batch(const char* op, const Shape& x, bool x_defined, const Shape& y, bool y_defined) {
  if (!x_defined || x.rank() < 1 || !y_defined || y.rank() != 2 || x[0] != y[0]) {
    throw ShapeError(std::string(op) + ": inputs (N, ...) and targets (N, C) must share N, got " +
                     (x_defined ? x.str() : std::string("undefined")) + " and " +
                     (y_defined ? y.str() : std::string("undefined")));
  }
}

// grad_{z_n} l_n, the head's residual (mu(z_n) - T(y_n) for the exponential families), per
// example (no 1/N): the logit cotangent of all N per-example losses at once.
template <Real T>
Tensor<T> per_example_logit_gradients(const nn::Head<T>& head, const Tensor<T>& z, const Tensor<T>& targets) {
  Tensor<T> g = Tensor<T>::uninitialized(z.shape());
  head.residual(z, targets, g);
  return g;
}

// Example e's gradient block (rows x out, the layer's [W; b] in flat order) of a tapped Conv2d
// layer with errors d: sum_t [a_{e,t}, 1]^T delta_{e,t} over the output positions t, one GEMM.
template <Real T>
void conv_example_block(const detail::TappedLayer<T>& layer, const Tensor<T>& d, Index e, std::vector<T>& patch, T* dst) {
  const KfacLayer& L = layer.layer;
  const Index n = d.dim(0), positions = d.size() / (n * L.out);
  layer_input_rows(L, layer.input, d.shape(), e, e + 1, patch);
  kernels::gemm<T>(kernels::Trans::yes, kernels::Trans::no, L.rows(), L.out, positions, T(1), patch.data(), L.rows(),
                   d.data() + e * positions * L.out, L.out, T(0), dst, L.out);
}

// What the tapped layers' blocks of every example are made of, from one reverse sweep to the
// tapped outputs (detail/per_example_record.hpp): each layer's errors, and a Linear layer's
// augmented input rows [a_e, 1] (a Conv2d layer's patches are formed per example).
template <Real T>
struct TappedFactors {
  std::vector<Tensor<T>> deltas;
  std::vector<std::vector<T>> linear_rows;  // per layer; empty for Conv2d
};

template <Real T>
TappedFactors<T> tapped_factors(detail::PerExampleRecord<T>& record, const Tensor<T>& logit_grad) {
  TappedFactors<T> f;
  const std::vector<detail::TappedLayer<T>>& layers = record.layers();
  if (layers.empty()) return f;
  record.tapped_errors(logit_grad, f.deltas);
  f.linear_rows.resize(layers.size());
  const Index n = logit_grad.dim(0);
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const KfacLayer& L = layers[l].layer;
    if (L.kind == KfacLayerKind::linear) {
      layer_input_rows(L, layers[l].input, f.deltas[l].shape(), 0, n, f.linear_rows[l]);
    }
  }
  return f;
}

// Writes examples [e0, e1)'s gradient blocks of every tapped layer into rows 0, 1, ... of `dst`
// (row stride P): for Linear the outer product [a_e, 1]^T delta_e, for Conv2d conv_example_block.
template <Real T>
void tapped_rows(const detail::PerExampleRecord<T>& record, const TappedFactors<T>& f, Index e0,
                 Index e1, T* dst, Index P) {
  const std::vector<detail::TappedLayer<T>>& layers = record.layers();
  std::vector<T> patch;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const KfacLayer& L = layers[l].layer;
    const Tensor<T>& d = f.deltas[l];
    const Index rows = L.rows(), width = L.out;
    if (L.kind != KfacLayerKind::linear) {
      for (Index e = e0; e < e1; ++e) {
        conv_example_block(layers[l], d, e, patch, dst + (e - e0) * P + L.offset);
      }
      continue;
    }
    // The outer products are independent: parallel over examples, bitwise the same at any
    // thread count. Memory-bound: (e1 - e0) * rows * out stores.
    kernels::parallel_for(e1 - e0, (e1 - e0) * rows * width, [&](Index k) {
      const Index e = e0 + k;
      const T* a = f.linear_rows[l].data() + e * rows;
      const T* de = d.data() + e * width;
      T* block = dst + k * P + L.offset;
      for (Index r = 0; r < rows; ++r) {
        const T ar = a[r];
        T* row = block + r * width;
        for (Index o = 0; o < width; ++o) row[o] = ar * de[o];
      }
    });
  }
}

// Adds every example's squared gradient norm over the tapped layers to squares (N), layer by
// layer. Linear: ||[a_e, 1]^T delta_e||^2 = ||[a_e, 1]||^2 ||delta_e||^2 (Goodfellow 2015,
// "Efficient per-example gradient computations"), O(rows + out) per example; Conv2d: the block
// of conv_example_block, squared.
template <Real T>
void tapped_squared_norms(detail::PerExampleRecord<T>& record, const Tensor<T>& logit_grad,
                          std::vector<double>& squares) {
  const std::vector<detail::TappedLayer<T>>& layers = record.layers();
  if (layers.empty()) return;
  std::vector<Tensor<T>> deltas;
  record.tapped_errors(logit_grad, deltas);
  const Index n = logit_grad.dim(0);
  std::vector<T> patch, block;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const KfacLayer& L = layers[l].layer;
    const Tensor<T>& d = deltas[l];
    const Index rows = L.rows(), width = L.out;
    if (L.kind == KfacLayerKind::linear) layer_input_rows(L, layers[l].input, d.shape(), 0, n, patch);
    block.resize(static_cast<std::size_t>(rows * width));
    for (Index e = 0; e < n; ++e) {
      double s = 0;
      if (L.kind == KfacLayerKind::linear) {
        double sa = 0, sd = 0;
        for (Index r = 0; r < rows; ++r) sa += static_cast<double>(patch[static_cast<std::size_t>(e * rows + r)]) *
                                               static_cast<double>(patch[static_cast<std::size_t>(e * rows + r)]);
        for (Index o = 0; o < width; ++o) sd += static_cast<double>(d[e * width + o]) * static_cast<double>(d[e * width + o]);
        s = sa * sd;
      } else {
        conv_example_block(layers[l], d, e, patch, block.data());
        for (const T v : block) s += static_cast<double>(v) * static_cast<double>(v);
      }
      squares[static_cast<std::size_t>(e)] += s;
    }
  }
}

// Calls visit(n, grads) with example n's gradients of the untapped parameters (one tensor per
// entry of record.untapped()), for n in [e0, e1) (default: every example), from one reverse sweep
// of the batch record per example with the cotangent in row n only.
template <Real T, class Visit>
void swept_gradients(detail::PerExampleRecord<T>& record, const Tensor<T>& logit_grad, const Visit& visit,
                     Index e0 = 0, Index e1 = -1) {
  if (record.untapped().empty()) return;
  const Index c = logit_grad.dim(1);
  if (e1 < 0) e1 = logit_grad.dim(0);
  nn::RecordedModel<T>& batch = record.batch();
  std::vector<Var<T>> inputs;
  std::vector<Tensor<T>> grads;
  for (std::size_t p : record.untapped()) {
    inputs.push_back(batch.parameter_variables()[p]);
    grads.push_back(Tensor<T>::uninitialized(batch.parameter_variables()[p].shape()));
  }
  Tensor<T> cotangent(logit_grad.shape());  // zero except row e during sweep e
  const std::span<const Var<T>> zs(&batch.logits_variable(), 1);
  for (Index e = e0; e < e1; ++e) {
    std::copy(logit_grad.data() + e * c, logit_grad.data() + (e + 1) * c, cotangent.data() + e * c);
    batch.tape().vjp_into(zs, std::span<const Tensor<T>>(&cotangent, 1), inputs, grads);
    std::fill(cotangent.data() + e * c, cotangent.data() + (e + 1) * c, T(0));
    visit(e, grads);
  }
}

// Rows [e0, e1) of the per-example gradients into rows 0, 1, ... of dst (row stride P): every
// entry is written, each parameter being in a tapped layer or swept.
template <Real T>
void example_rows(const nn::Model<T>& model, detail::PerExampleRecord<T>& record,
                  const TappedFactors<T>& f, const Tensor<T>& logit_grad, Index e0, Index e1,
                  T* dst) {
  const Index P = model.num_parameters();
  tapped_rows(record, f, e0, e1, dst, P);
  swept_gradients(
      record, logit_grad,
      [&](Index e, const std::vector<Tensor<T>>& grads) {
        for (std::size_t k = 0; k < grads.size(); ++k) {
          const nn::ParamInfo& info = model.layout()[record.untapped()[k]];
          std::copy(grads[k].begin(), grads[k].end(), dst + (e - e0) * P + info.offset);
        }
      },
      e0, e1);
}

}  // namespace

template <Real T>
void for_each_per_example_gradient(
    const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
    const Tensor<T>& targets, Index chunk,
    const std::function<void(Index first, const Tensor<T>& rows)>& visit) {
  constexpr const char* op = "for_each_per_example_gradient";
  check_batch(op, inputs.shape(), inputs.defined(), targets.shape(), targets.defined());
  if (chunk < 1) {
    throw ValueError(std::string(op) + ": chunk must be at least 1 example, got " +
                     std::to_string(chunk));
  }
  if (!visit) throw ValueError(std::string(op) + ": no function to call");
  const Index n = inputs.dim(0), P = model.num_parameters();
  detail::PerExampleRecord<T> record(op, model, inputs);
  const Tensor<T> logit_grad = per_example_logit_gradients(head, record.batch().logits(), targets);
  const TappedFactors<T> f = tapped_factors(record, logit_grad);
  const Index k = std::min(chunk, n);
  Tensor<T> rows = Tensor<T>::uninitialized(Shape{k, P});
  for (Index e0 = 0; e0 < n; e0 += k) {
    const Index e1 = std::min(n, e0 + k);
    // The last chunk may be shorter: a view of its first rows (no copy).
    Tensor<T> part = e1 - e0 == k ? rows : rows.view(0, Shape{e1 - e0, P});
    example_rows(model, record, f, logit_grad, e0, e1, part.data());
    visit(e0, part);
  }
}

template <Real T>
void per_example_gradients(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                           const Tensor<T>& targets, Tensor<T>& out) {
  check_batch("per_example_gradients", inputs.shape(), inputs.defined(), targets.shape(), targets.defined());
  const Index N = inputs.dim(0), P = model.num_parameters();
  if (!out.defined() || out.shape() != Shape{N, P}) {
    throw ShapeError("per_example_gradients: the output must be (N, P) = " + Shape{N, P}.str() + ", got " +
                     (out.defined() ? out.shape().str() : std::string("undefined")));
  }
  if (out.overlaps(inputs) || out.overlaps(targets) || out.overlaps(model.parameters())) {
    throw ValueError("per_example_gradients: the output " + out.shape().str() +
                     " shares elements with the inputs, the targets or the model's parameters");
  }
  detail::PerExampleRecord<T> record("per_example_gradients", model, inputs);
  const Tensor<T> logit_grad = per_example_logit_gradients(head, record.batch().logits(), targets);
  // Nothing is written before the record, the logit gradients and the errors exist, so a throw
  // leaves `out` as it was.
  const TappedFactors<T> f = tapped_factors(record, logit_grad);
  example_rows(model, record, f, logit_grad, 0, N, out.data());
}

template <Real T>
Tensor<T> per_example_gradients(const nn::Model<T>& model, const nn::Head<T>& head,
                                const Tensor<T>& inputs, const Tensor<T>& targets) {
  check_batch("per_example_gradients", inputs.shape(), inputs.defined(), targets.shape(), targets.defined());
  Tensor<T> out = Tensor<T>::uninitialized(Shape{inputs.dim(0), model.num_parameters()});
  per_example_gradients(model, head, inputs, targets, out);
  return out;
}

namespace {

// Squared norms of every example's gradient (N), in double, in a fixed order: tapped layers in
// execution order, then the swept parameters. No N x P matrix.
template <Real T>
std::vector<double> squared_norms(detail::PerExampleRecord<T>& record, const Tensor<T>& logit_grad) {
  std::vector<double> squares(static_cast<std::size_t>(logit_grad.dim(0)), 0.0);
  tapped_squared_norms(record, logit_grad, squares);
  swept_gradients(record, logit_grad, [&](Index e, const std::vector<Tensor<T>>& grads) {
    for (const Tensor<T>& g : grads) {
      for (const T v : g) squares[static_cast<std::size_t>(e)] += static_cast<double>(v) * static_cast<double>(v);
    }
  });
  return squares;
}

// J^T b for logit cotangents b (N, C), all parameters, into a new (P) vector: one reverse sweep.
template <Real T>
Tensor<T> swept_sum(const nn::Model<T>& model, detail::PerExampleRecord<T>& record, const Tensor<T>& b) {
  Tensor<T> out = Tensor<T>::uninitialized(Shape{model.num_parameters()});
  record.batch().vjp(b, out);
  return out;
}

template <Real T>
Tensor<T> norms_of(const std::vector<double>& squares) {
  Tensor<T> norms(Shape{static_cast<Index>(squares.size())});
  for (std::size_t e = 0; e < squares.size(); ++e) norms[static_cast<Index>(e)] = static_cast<T>(std::sqrt(squares[e]));
  return norms;
}

}  // namespace

template <Real T>
Tensor<T> per_example_gradient_gram(const nn::Model<T>& model, const nn::Head<T>& head,
                                    const Tensor<T>& inputs, const Tensor<T>& targets) {
  constexpr const char* op = "per_example_gradient_gram";
  check_batch(op, inputs.shape(), inputs.defined(), targets.shape(), targets.defined());
  using kernels::Trans;
  detail::PerExampleRecord<T> record(op, model, inputs);
  const Tensor<T> logit_grad = per_example_logit_gradients(head, record.batch().logits(), targets);
  const TappedFactors<T> f = tapped_factors(record, logit_grad);
  const Index n = inputs.dim(0);
  const auto nn2 = static_cast<std::size_t>(n * n);
  std::vector<double> gram(nn2, 0.0);
  std::vector<T> left(nn2), right(nn2);
  // gram += X X^T for the (n, width) rows of x: the examples' dot products over one block.
  const auto add_dots = [&](const T* x, Index width) {
    kernels::gemm<T>(Trans::no, Trans::yes, n, n, width, T(1), x, width, x, width, T(0), left.data(), n);
    for (std::size_t k = 0; k < nn2; ++k) gram[k] += static_cast<double>(left[k]);
  };
  const std::vector<detail::TappedLayer<T>>& layers = record.layers();
  std::vector<T> blocks, patch;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const KfacLayer& L = layers[l].layer;
    const Tensor<T>& d = f.deltas[l];
    if (L.kind == KfacLayerKind::linear) {
      // <[a_n, 1]^T delta_n, [a_m, 1]^T delta_m> = <[a_n, 1], [a_m, 1]> <delta_n, delta_m>: the
      // Hadamard product of the inputs' and the errors' Gram matrices (BackPACK's BatchDotGrad).
      kernels::gemm<T>(Trans::no, Trans::yes, n, n, L.rows(), T(1), f.linear_rows[l].data(), L.rows(),
                       f.linear_rows[l].data(), L.rows(), T(0), left.data(), n);
      kernels::gemm<T>(Trans::no, Trans::yes, n, n, L.out, T(1), d.data(), L.out, d.data(), L.out, T(0),
                       right.data(), n);
      for (std::size_t k = 0; k < nn2; ++k) {
        gram[k] += static_cast<double>(left[k]) * static_cast<double>(right[k]);
      }
      continue;
    }
    // Conv2d: the shared weight's per-example blocks, all N of them, then their dot products.
    const Index size = L.rows() * L.out;
    blocks.resize(static_cast<std::size_t>(n * size));
    for (Index e = 0; e < n; ++e) conv_example_block(layers[l], d, e, patch, blocks.data() + e * size);
    add_dots(blocks.data(), size);
  }
  // Untapped parameters: example n's gradient of them from its own sweep, then the dot products.
  Index width = 0;
  for (std::size_t p : record.untapped()) width += model.layout()[p].shape.numel();
  if (width > 0) {
    std::vector<T> rows(static_cast<std::size_t>(n * width));
    swept_gradients(record, logit_grad, [&](Index e, const std::vector<Tensor<T>>& grads) {
      T* dst = rows.data() + e * width;
      for (const Tensor<T>& g : grads) dst = std::copy(g.begin(), g.end(), dst);
    });
    add_dots(rows.data(), width);
  }
  Tensor<T> out = Tensor<T>::uninitialized(Shape{n, n});
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < n; ++j) {  // exactly symmetric: the mean of the two triangles
      const auto ij = static_cast<std::size_t>(i * n + j), ji = static_cast<std::size_t>(j * n + i);
      out[i * n + j] = static_cast<T>(0.5 * (gram[ij] + gram[ji]));
    }
  }
  return out;
}

template <Real T>
Tensor<T> per_example_gradient_norms(const nn::Model<T>& model, const nn::Head<T>& head,
                                     const Tensor<T>& inputs, const Tensor<T>& targets) {
  check_batch("per_example_gradient_norms", inputs.shape(), inputs.defined(), targets.shape(), targets.defined());
  detail::PerExampleRecord<T> record("per_example_gradient_norms", model, inputs);
  const Tensor<T> logit_grad = per_example_logit_gradients(head, record.batch().logits(), targets);
  return norms_of<T>(squared_norms(record, logit_grad));
}

template <Real T>
Tensor<T> clipped_mean_gradient(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                                const Tensor<T>& targets, double max_norm, Tensor<T>& gradient) {
  constexpr const char* op = "clipped_mean_gradient";
  check_batch(op, inputs.shape(), inputs.defined(), targets.shape(), targets.defined());
  if (!(max_norm > 0) || !std::isfinite(max_norm)) {
    throw ValueError(std::string(op) + ": max_norm must be positive and finite, got " + std::to_string(max_norm));
  }
  const Index P = model.num_parameters();
  if (!gradient.defined() || gradient.shape() != Shape{P}) {
    throw ShapeError(std::string(op) + ": the gradient must be (P) = " + Shape{P}.str() + ", got " +
                     (gradient.defined() ? gradient.shape().str() : std::string("undefined")));
  }
  if (gradient.overlaps(inputs) || gradient.overlaps(targets) || gradient.overlaps(model.parameters())) {
    throw ValueError(std::string(op) + ": the gradient shares elements with the inputs, the targets or the model's "
                     "parameters");
  }
  detail::PerExampleRecord<T> record(op, model, inputs);
  Tensor<T> logit_grad = per_example_logit_gradients(head, record.batch().logits(), targets);
  const std::vector<double> squares = squared_norms(record, logit_grad);
  // g_n = J^T b_n with b_n = logit_grad in row n only, so sum_n c_n g_n = J^T (c o b): one reverse
  // sweep of the whole batch with row n of the cotangent scaled by c_n / N.
  const Index n = inputs.dim(0), c = logit_grad.dim(1);
  for (Index e = 0; e < n; ++e) {
    const double norm = std::sqrt(squares[static_cast<std::size_t>(e)]);
    const double clip = norm > max_norm ? max_norm / norm : 1.0;
    const T scale = static_cast<T>(clip / static_cast<double>(n));
    for (Index k = 0; k < c; ++k) logit_grad[e * c + k] *= scale;
  }
  const Tensor<T> result = swept_sum(model, record, logit_grad);  // `gradient` changes only on success
  std::copy(result.begin(), result.end(), gradient.data());
  return norms_of<T>(squares);
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

template void per_example_gradients<float>(const nn::Model<float>&, const nn::Head<float>&, const Tensor<float>&,
                                           const Tensor<float>&, Tensor<float>&);
template void per_example_gradients<double>(const nn::Model<double>&, const nn::Head<double>&,
                                            const Tensor<double>&, const Tensor<double>&, Tensor<double>&);
template <Real T>
GradientNoise<T> gradient_noise(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                                const Tensor<T>& targets) {
  constexpr const char* op = "gradient_noise";
  check_batch(op, inputs.shape(), inputs.defined(), targets.shape(), targets.defined());
  const Index n = inputs.dim(0);
  if (n < 2) throw ValueError(std::string(op) + ": needs at least 2 examples for a variance, got " + std::to_string(n));
  detail::PerExampleRecord<T> record(op, model, inputs);
  Tensor<T> logit_grad = per_example_logit_gradients(head, record.batch().logits(), targets);
  for (T& v : logit_grad) v /= static_cast<T>(n);  // the mean's cotangent
  GradientNoise<T> r;
  r.mean = swept_sum(model, record, logit_grad);
  // Per coordinate sum_n (g_nj - G_j)^2 = sum_n g_nj^2 - N G_j^2 = N (diag(EF)_j - G_j^2), with
  // diag(EF) = (1/N) sum_n g_n o g_n the empirical Fisher's diagonal (diag_ggn.hpp).
  const Tensor<T> ef = diagonal_empirical_fisher(model, head, inputs, targets);
  const double scale = static_cast<double>(n) / static_cast<double>(n - 1);
  const Index P = r.mean.size();
  r.variance = Tensor<T>::uninitialized(Shape{P});
  double sum_ef = 0;
  for (Index j = 0; j < P; ++j) {
    const double m = static_cast<double>(r.mean[j]), e = static_cast<double>(ef[j]);
    r.mean_norm_squared += m * m;
    sum_ef += e;
    r.variance[j] = static_cast<T>(std::max(0.0, scale * (e - m * m)));
  }
  r.trace_covariance = std::max(0.0, scale * (sum_ef - r.mean_norm_squared));
  r.noise_scale = r.mean_norm_squared > 0 ? r.trace_covariance / r.mean_norm_squared
                                          : std::numeric_limits<double>::infinity();
  return r;
}

template Tensor<float> per_example_gradients<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                    const Tensor<float>&, const Tensor<float>&);
template Tensor<float> per_example_gradient_gram<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                        const Tensor<float>&, const Tensor<float>&);
template Tensor<double> per_example_gradient_gram<double>(const nn::Model<double>&,
                                                          const nn::Head<double>&,
                                                          const Tensor<double>&, const Tensor<double>&);
template void for_each_per_example_gradient<float>(
    const nn::Model<float>&, const nn::Head<float>&, const Tensor<float>&, const Tensor<float>&, Index,
    const std::function<void(Index, const Tensor<float>&)>&);
template void for_each_per_example_gradient<double>(
    const nn::Model<double>&, const nn::Head<double>&, const Tensor<double>&, const Tensor<double>&,
    Index, const std::function<void(Index, const Tensor<double>&)>&);
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
template GradientNoise<float> gradient_noise<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                    const Tensor<float>&, const Tensor<float>&);
template GradientNoise<double> gradient_noise<double>(const nn::Model<double>&, const nn::Head<double>&,
                                                      const Tensor<double>&, const Tensor<double>&);
template Tensor<float> clipped_mean_gradient<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                   const Tensor<float>&, const Tensor<float>&, double, Tensor<float>&);
template Tensor<double> clipped_mean_gradient<double>(const nn::Model<double>&, const nn::Head<double>&,
                                                     const Tensor<double>&, const Tensor<double>&, double,
                                                     Tensor<double>&);
template GradientNoise<float> gradient_noise<float>(const Tensor<float>&);
template GradientNoise<double> gradient_noise<double>(const Tensor<double>&);

}  // namespace amari::curvature

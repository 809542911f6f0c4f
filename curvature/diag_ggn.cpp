#include <amari/curvature/diag_ggn.hpp>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/detail/logit_factor.hpp>
#include <amari/curvature/detail/per_example_record.hpp>
#include <amari/curvature/detail/sampled_scores.hpp>
#include <amari/curvature/kfac.hpp>
#include <amari/nn/recorded_model.hpp>

namespace amari::curvature {

namespace {

using kernels::Trans;

void check_inputs(const char* op, const Shape& x, bool defined) {
  if (!defined || x.rank() < 1 || x[0] < 1 || x.numel() == 0) {
    throw ShapeError(std::string(op) + ": inputs " +
                     (defined ? x.str() : std::string("undefined")) +
                     " must be (N, ...) with N >= 1 and no empty dimension");
  }
}

// The logit-space columns whose back-propagated squares are summed: the C columns of B_i
// (exact) or the S sampled-label scores (Monte Carlo), each (N, C), row i for example i.
template <Real T>
using Columns = std::vector<Tensor<T>>;

// The squares of the per-example products J_n^T col_n of the tapped layers, summed over the
// examples and columns, scaled by `weight`, written into out's blocks (see the file comment).
template <Real T>
void tapped_squares(nn::RecordedModel<T>& batch, const Columns<T>& columns,
                    const std::vector<detail::TappedLayer<T>>& layers, double weight,
                    Tensor<T>& out) {
  if (layers.empty()) return;
  const Index n = batch.batch_size();
  std::vector<Var<T>> outs;
  std::vector<Tensor<T>> deltas;
  std::vector<Tensor<T>> squares(layers.size());  // Linear: sum_c Delta_c o Delta_c, (N, out)
  std::vector<Tensor<T>> blocks(layers.size());   // Conv2d: the (rows, out) sum of squares
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const KfacLayer& L = layers[l].layer;
    outs.push_back(layers[l].output);
    deltas.push_back(Tensor<T>::uninitialized(layers[l].output.shape()));
    if (L.kind == KfacLayerKind::linear) {
      squares[l] = Tensor<T>(Shape{n, L.out});
    } else {
      blocks[l] = Tensor<T>(Shape{L.rows(), L.out});
    }
  }
  std::vector<T> patch, gradient;
  const std::span<const Var<T>> zs(&batch.logits_variable(), 1);
  for (const Tensor<T>& col : columns) {
    // delta_{n,c} at every tapped output, all examples at once: one sweep of the batch record.
    batch.tape().vjp_into(zs, std::span<const Tensor<T>>(&col, 1), outs, deltas);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const KfacLayer& L = layers[l].layer;
      const Tensor<T>& d = deltas[l];
      if (L.kind == KfacLayerKind::linear) {
        T* sq = squares[l].data();
        for (Index k = 0; k < n * L.out; ++k) sq[k] += d[k] * d[k];
        continue;
      }
      // The per-example gradient sum_t a_{n,t} delta_{n,t}^T of the shared weight, squared.
      const Index rows = L.rows(), positions = d.size() / (n * L.out);
      gradient.resize(static_cast<std::size_t>(rows * L.out));
      T* block = blocks[l].data();
      for (Index e = 0; e < n; ++e) {
        layer_input_rows(L, layers[l].input, d.shape(), e, e + 1, patch);
        kernels::gemm<T>(Trans::yes, Trans::no, rows, L.out, positions, T(1), patch.data(), rows,
                         d.data() + e * positions * L.out, L.out, T(0), gradient.data(), L.out);
        for (Index k = 0; k < rows * L.out; ++k) {
          block[k] += gradient[static_cast<std::size_t>(k)] * gradient[static_cast<std::size_t>(k)];
        }
      }
    }
  }
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const KfacLayer& L = layers[l].layer;
    T* dst = out.data() + L.offset;
    if (L.kind == KfacLayerKind::linear) {
      // (a_n^2)(delta_n^2)^T summed over n: (A o A)^T (sum_c Delta_c o Delta_c), one GEMM.
      layer_input_rows(L, layers[l].input, deltas[l].shape(), 0, n, patch);
      for (T& v : patch) v *= v;
      kernels::gemm<T>(Trans::yes, Trans::no, L.rows(), L.out, n, static_cast<T>(weight),
                       patch.data(), L.rows(), squares[l].data(), L.out, T(0), dst, L.out);
    } else {
      const T* block = blocks[l].data();
      for (Index k = 0; k < L.rows() * L.out; ++k) dst[k] = static_cast<T>(weight) * block[k];
    }
  }
}

// The squares for the parameters `params` (indices into Model::layout()) from per-example sweeps:
// cotangent col_n in row n only, one sweep of the batch record per example and column.
template <Real T>
void per_example_squares(nn::RecordedModel<T>& batch, const Columns<T>& columns,
                         const std::vector<std::size_t>& params, double weight, Tensor<T>& out) {
  if (params.empty()) return;
  const Index n = batch.batch_size(), c = batch.num_outputs();
  const std::vector<Var<T>>& variables = batch.parameter_variables();
  std::vector<Var<T>> inputs;
  std::vector<Tensor<T>> grads;
  std::vector<double> sums;
  for (std::size_t p : params) {
    inputs.push_back(variables[p]);
    grads.push_back(Tensor<T>::uninitialized(variables[p].shape()));
  }
  Index total = 0;
  for (const Tensor<T>& g : grads) total += g.size();
  sums.assign(static_cast<std::size_t>(total), 0.0);
  Tensor<T> cotangent(batch.logits().shape());  // zero except row e during the sweeps of example e
  const std::span<const Var<T>> zs(&batch.logits_variable(), 1);
  for (Index e = 0; e < n; ++e) {
    for (const Tensor<T>& col : columns) {
      std::copy(col.data() + e * c, col.data() + (e + 1) * c, cotangent.data() + e * c);
      batch.tape().vjp_into(zs, std::span<const Tensor<T>>(&cotangent, 1), inputs, grads);
      std::size_t k = 0;
      for (const Tensor<T>& g : grads) {
        for (Index j = 0; j < g.size(); ++j, ++k) {
          const double v = static_cast<double>(g[j]);
          sums[k] += v * v;
        }
      }
    }
    std::fill(cotangent.data() + e * c, cotangent.data() + (e + 1) * c, T(0));
  }
  std::size_t k = 0;
  for (std::size_t p : params) {
    const nn::ParamInfo& info = batch.model().layout()[p];
    for (Index j = 0; j < info.shape.numel(); ++j, ++k) {
      out[info.offset + j] = static_cast<T>(weight * sums[k]);
    }
  }
}

// sum over columns and examples of the squared per-example products, times `scale` / N, with
// the columns made from the recorded logits by `make_columns`.
template <Real T, class MakeColumns>
Tensor<T> diagonal_of_columns(const char* op, const nn::Model<T>& model, const Tensor<T>& inputs,
                              double scale, const MakeColumns& make_columns) {
  // One tapped record; the layers whose squares follow from the taps and the parameters that
  // need per-example sweeps are split there (detail/per_example_record.hpp).
  detail::PerExampleRecord<T> record(op, model, inputs);
  const Columns<T> columns = make_columns(record.batch().logits());
  const double weight = scale / static_cast<double>(inputs.dim(0));
  Tensor<T> out = model.zeros_like_parameters();
  tapped_squares(record.batch(), columns, record.layers(), weight, out);
  per_example_squares(record.batch(), columns, record.untapped(), weight, out);
  return out;
}

}  // namespace

template <Real T>
Tensor<T> diagonal_ggn(const nn::Model<T>& model, const nn::Head<T>& head,
                       const Tensor<T>& inputs) {
  return diagonal_of_columns("diagonal_ggn", model, inputs, 1.0, [&](const Tensor<T>& z) {
    return detail::logit_hessian_factor(head, z);  // B_i B_i^T = H_L(z_i): C columns
  });
}

template <Real T>
Tensor<T> diagonal_ggn_monte_carlo(const nn::Model<T>& model, const nn::Head<T>& head,
                                   const Tensor<T>& inputs, int samples, std::uint64_t seed,
                                   const std::vector<Index>& example_ids) {
  if (samples < 1) {
    throw ValueError("diagonal_ggn_monte_carlo: needs at least 1 sample, got " +
                     std::to_string(samples));
  }
  check_inputs("diagonal_ggn_monte_carlo", inputs.shape(), inputs.defined());
  if (!example_ids.empty() && static_cast<Index>(example_ids.size()) != inputs.dim(0)) {
    throw ShapeError("diagonal_ggn_monte_carlo: " + std::to_string(example_ids.size()) +
                     " example ids for a batch of " + std::to_string(inputs.dim(0)) + " rows");
  }
  const double scale = 1.0 / static_cast<double>(samples);
  return diagonal_of_columns(
      "diagonal_ggn_monte_carlo", model, inputs, scale, [&](const Tensor<T>& z) {
        // y ~ r(. | z) from the model itself: the true Fisher (SEED-NOTES 1); the same labels as
        // MonteCarloFisherOperator draws for the same (seed, ids).
        return detail::sampled_scores(head, z, seed, samples, example_ids);
      });
}

template <Real T>
Tensor<T> diagonal_empirical_fisher(const nn::Model<T>& model, const nn::Head<T>& head,
                                    const Tensor<T>& inputs, const Tensor<T>& targets) {
  constexpr const char* op = "diagonal_empirical_fisher";
  check_inputs(op, inputs.shape(), inputs.defined());
  if (!targets.defined() || targets.rank() != 2 || targets.dim(0) != inputs.dim(0)) {
    throw ShapeError(std::string(op) + ": targets must be (N, C) with the inputs' N = " +
                     std::to_string(inputs.dim(0)) + ", got " +
                     (targets.defined() ? targets.shape().str() : std::string("undefined")));
  }
  return diagonal_of_columns(op, model, inputs, 1.0, [&](const Tensor<T>& z) {
    // The data labels' logit gradients, one column: the empirical Fisher (SEED-NOTES 1), whose
    // scores are these up to the sign that the square removes.
    Tensor<T> residual = Tensor<T>::uninitialized(z.shape());
    head.residual(z, targets, residual);
    return Columns<T>{std::move(residual)};
  });
}

template <Real T>
Tensor<T> diagonal_ggn_over_dataset(const nn::Model<T>& model, const nn::Head<T>& head,
                                    const Tensor<T>& inputs, Index batch_size, int samples,
                                    std::uint64_t seed) {
  if (batch_size < 1) {
    throw ValueError("diagonal_ggn_over_dataset: batch_size must be >= 1, got " +
                     std::to_string(batch_size));
  }
  if (samples < 0) {
    throw ValueError("diagonal_ggn_over_dataset: samples must be >= 0 (0: exact), got " +
                     std::to_string(samples));
  }
  check_inputs("diagonal_ggn_over_dataset", inputs.shape(), inputs.defined());
  const Index n = inputs.dim(0), row = inputs.size() / n;
  std::vector<Index> dims(inputs.shape().dims().begin(), inputs.shape().dims().end());
  Tensor<T> out = model.zeros_like_parameters();
  for (Index first = 0; first < n; first += batch_size) {
    const Index rows = std::min(batch_size, n - first);
    dims[0] = rows;
    const Tensor<T> x = inputs.view(first * row, Shape(std::span<const Index>(dims)));
    Tensor<T> part;
    if (samples == 0) {
      part = diagonal_ggn(model, head, x);
    } else {
      std::vector<Index> ids(static_cast<std::size_t>(rows));
      for (Index i = 0; i < rows; ++i) ids[static_cast<std::size_t>(i)] = first + i;
      part = diagonal_ggn_monte_carlo(model, head, x, samples, seed, ids);
    }
    const T share = static_cast<T>(static_cast<double>(rows) / static_cast<double>(n));
    for (Index k = 0; k < out.size(); ++k) out[k] += share * part[k];  // the batch's share
  }
  return out;
}

template Tensor<float> diagonal_ggn<float>(const nn::Model<float>&, const nn::Head<float>&,
                                           const Tensor<float>&);
template Tensor<double> diagonal_ggn<double>(const nn::Model<double>&, const nn::Head<double>&,
                                             const Tensor<double>&);
template Tensor<float> diagonal_empirical_fisher<float>(const nn::Model<float>&,
                                                       const nn::Head<float>&, const Tensor<float>&,
                                                       const Tensor<float>&);
template Tensor<double> diagonal_empirical_fisher<double>(const nn::Model<double>&,
                                                         const nn::Head<double>&,
                                                         const Tensor<double>&,
                                                         const Tensor<double>&);
template Tensor<float> diagonal_ggn_monte_carlo<float>(const nn::Model<float>&,
                                                       const nn::Head<float>&, const Tensor<float>&,
                                                       int, std::uint64_t,
                                                       const std::vector<Index>&);
template Tensor<double> diagonal_ggn_monte_carlo<double>(const nn::Model<double>&,
                                                         const nn::Head<double>&,
                                                         const Tensor<double>&, int, std::uint64_t,
                                                         const std::vector<Index>&);
template Tensor<float> diagonal_ggn_over_dataset<float>(const nn::Model<float>&,
                                                        const nn::Head<float>&,
                                                        const Tensor<float>&, Index, int,
                                                        std::uint64_t);
template Tensor<double> diagonal_ggn_over_dataset<double>(const nn::Model<double>&,
                                                          const nn::Head<double>&,
                                                          const Tensor<double>&, Index, int,
                                                          std::uint64_t);

}  // namespace amari::curvature

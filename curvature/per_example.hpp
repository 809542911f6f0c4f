// Per-example gradients of a model's loss and the gradient-noise statistics built from them.
//
// For a batch of N examples with per-example losses l_n(theta) = NLL(z_n(theta), y_n), the batch
// loss is L = (1/N) sum_n l_n and its gradient is the mean of the per-example gradients g_n =
// grad_theta l_n. The g_n carry what the mean hides: their spread (the gradient noise) and their
// sizes (per-example norms, e.g. for clipping or outlier detection).
//
// What is computed: the model is recorded once on the whole batch, exactly as nn::gradient_at
// does (model.mode(), the current dropout masks at model.step(), the state left alone). Row n is
// then the gradient of l_n = NLL(z_n, y_n) through that one recorded pass: what a reverse sweep
// whose logit cotangent is grad_{z_n} l_n = mu(z_n) - T(y_n) = -score_n in row n and zero
// elsewhere (nn/heads.hpp) gives (how it is computed faster is said at per_example_gradients). For a model whose examples do not interact (every layer acting row by
// row: Linear, activations, convolutions, batch norm in eval mode) this equals the gradient of the
// model evaluated on example n alone (with dropout in train mode: under the mask the batch pass
// drew for row n). For a model whose examples interact (batch norm in train mode) there is no
// per-example gradient in that sense: row n is the total derivative d l_n / d theta of example n's
// loss in the batch pass, the inputs of the other examples held fixed, including the paths through
// the batch statistics, so it differs from the one-example gradient. In every case the rows
// average to the batch gradient.
#pragma once

#include <functional>

#include <amari/autodiff/autodiff.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// Per-example gradients (N, P): row n is the gradient in the flat parameters of example n's loss
/// (not divided by N), see the file comment for what it means when examples interact. inputs
/// (N, ...), targets (N, C). The mean of the rows is the batch gradient of nn::gradient_at.
/// How: one recorded forward pass with layer taps (an nn::RecordedModel), then, when the examples
/// do not interact, one reverse sweep to the outputs of the Linear and Conv2d layers gives every
/// example's error there at once, and example n's block of such a layer is the outer product of its
/// input row [a_n, 1] with its error (a sum over positions for Conv2d, one GEMM per example);
/// parameters in no such layer (norm scales, embeddings, grouped convolutions), and all parameters
/// when the examples interact (batch norm in train mode), take one reverse sweep per example
/// instead.
/// Cost: on the mnist MLP (N = 128, all parameters tapped) the writing of the N x P result
/// dominates; bench/jacobian_bench.cpp measures it against a batch gradient (bench/RESULTS.md).
/// Memory: N * P.
template <Real T>
Tensor<T> per_example_gradients(const nn::Model<T>& model, const nn::Head<T>& head,
                                const Tensor<T>& inputs, const Tensor<T>& targets);

/// The same into a caller's (N, P) buffer `out`, e.g. reused across batches. ShapeError for
/// another shape; ValueError if `out` shares elements with the inputs, targets or the model's
/// parameters. These errors, and any from recording the batch or from the head, come before
/// anything is written to `out`.
template <Real T>
void per_example_gradients(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                           const Tensor<T>& targets, Tensor<T>& out);

/// The rows of per_example_gradients() handed to `visit` a chunk at a time, so that the N x P
/// matrix never exists: visit(first, rows) is called for first = 0, chunk, 2 chunk, ... with rows
/// (k, P), k = min(chunk, N - first), the gradients of examples first ... first + k - 1, computed
/// as per_example_gradients() computes them (the same bits). `rows` is one buffer, overwritten by
/// the next chunk: clone() what must outlive the call. For a consumer that reduces the gradients
/// as they come (statistics, clipping by another rule, streaming to a file), with chunk * P
/// memory; a chunk that fits the caches (e.g. 1-4 rows of the mnist MLP's 269,322 floats) also
/// avoids the main-memory stores that dominate the full matrix. ValueError for chunk < 1 or an
/// empty `visit`; the errors of per_example_gradients() otherwise, all before the first call of
/// `visit`; an exception thrown by `visit` ends the loop and propagates. Cost on the mnist MLP:
/// bench/jacobian_bench.cpp (bench/RESULTS.md).
template <Real T>
void for_each_per_example_gradient(const nn::Model<T>& model, const nn::Head<T>& head,
                                   const Tensor<T>& inputs, const Tensor<T>& targets, Index chunk,
                                   const std::function<void(Index first, const Tensor<T>& rows)>& visit);

/// The Gram matrix (N, N) of the per-example gradients, K[n][m] = <g_n, g_m> (the rows of
/// per_example_gradients(); BackPACK's BatchDotGrad), without the N x P matrix: for a tapped
/// Linear layer <[a_n, 1]^T delta_n, [a_m, 1]^T delta_m> = <[a_n, 1], [a_m, 1]> <delta_n,
/// delta_m>, the Hadamard product of two N x N Gram matrices; for a tapped Conv2d layer the N
/// per-example blocks of its weight (N rows out values) and their N x N dot products; untapped
/// parameters (and all parameters when the examples interact) from per-example sweeps. Summed in
/// double, exactly symmetric. Its diagonal is the squared norms; its sum is N^2 ||G||^2; sim(n, m)
/// = K[n][m] / sqrt(K[n][n] K[m][m]) is the cosine between two examples' gradients. Cost on an MLP
/// whose parameters are all tapped: one recorded forward pass and one reverse sweep plus 2 N^2
/// (rows + out) flops per layer. ShapeError for inputs and targets as per_example_gradients().
template <Real T>
Tensor<T> per_example_gradient_gram(const nn::Model<T>& model, const nn::Head<T>& head,
                                    const Tensor<T>& inputs, const Tensor<T>& targets);

/// Euclidean norms (N) of the rows of per_example_gradients(), accumulated in double, without
/// forming the N x P matrix: for a tapped Linear layer ||[a_n, 1]^T delta_n||^2 =
/// ||[a_n, 1]||^2 ||delta_n||^2 (Goodfellow 2015), O(in + out) per example; a Conv2d block is
/// formed per example and squared; untapped parameters as in per_example_gradients(). Cost on the
/// mnist MLP: about one batch gradient (bench/RESULTS.md). Memory: N plus one block.
template <Real T>
Tensor<T> per_example_gradient_norms(const nn::Model<T>& model, const nn::Head<T>& head,
                                     const Tensor<T>& inputs, const Tensor<T>& targets);

/// The mean of the per-example gradients clipped to norm max_norm,
///   gradient = (1/N) sum_n min(1, max_norm / ||g_n||) g_n,
/// the clipping of DP-SGD (Abadi et al. 2016, Algorithm 1, before its noise), without the N x P
/// matrix: the norms as per_example_gradient_norms(), then, since g_n = J^T b_n with b_n the logit
/// gradient in row n only, sum_n c_n g_n = J^T (c o b) in one more reverse sweep over the same
/// record (for interacting examples too: row n is then d l_n / d theta as above). Returns the
/// norms ||g_n|| before clipping (N). `gradient` (P) is written only on success; ValueError if
/// max_norm is not positive and finite or `gradient` shares elements with the inputs, targets or
/// parameters; ShapeError for a gradient not of shape (P). Cost: per_example_gradient_norms() plus
/// one reverse sweep.
template <Real T>
Tensor<T> clipped_mean_gradient(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                                const Tensor<T>& targets, double max_norm, Tensor<T>& gradient);

/// Gradient-noise statistics of N >= 2 per-example gradients g_n (rows of an (N, P) matrix).
template <Real T>
struct GradientNoise {
  /// G = (1/N) sum_n g_n, (P): the batch gradient.
  Tensor<T> mean;
  /// Per-coordinate sample variance (1/(N-1)) sum_n (g_n - G)^2, (P): the diagonal of Sigma.
  Tensor<T> variance;
  /// tr(Sigma) = sum of `variance`: the per-example gradient covariance's trace.
  double trace_covariance = 0;
  /// |G|^2. As an estimate of the true gradient's squared norm it is biased up by tr(Sigma) / N.
  double mean_norm_squared = 0;
  /// The simple gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018,
  /// "An Empirical Model of Large-Batch Training", eq. 2.8), from the two plug-in values above;
  /// +inf when G = 0.
  double noise_scale = 0;
};

/// The statistics of the rows of `per_example` (N, P), N >= 2 (ValueError otherwise); sums in
/// double, in a fixed order. Cost O(N P), no forward pass.
template <Real T>
GradientNoise<T> gradient_noise(const Tensor<T>& per_example);

/// The same statistics of a batch without the N x P matrix: mean = the batch gradient (one
/// reverse sweep of a recorded pass), and from the empirical Fisher's diagonal diag(EF) = (1/N)
/// sum_n g_n o g_n (diagonal_empirical_fisher, diag_ggn.hpp: BackPACK's SumGradSquared / N)
/// variance_j = N / (N - 1) (diag(EF)_j - G_j^2) (BackPACK's Variance, with the N - 1 of the matrix
/// version) and tr(Sigma) = N / (N - 1) (sum_j diag(EF)_j - ||G||^2), each clamped at 0. Being
/// differences, they lose relative accuracy where G_j^2 dominates the spread (the matrix version
/// above sums squared deviations instead). N >= 2 (ValueError otherwise). Cost:
/// diagonal_empirical_fisher (about a batch gradient where every parameter is tapped) plus a
/// recorded forward pass and one reverse sweep; memory O(N + P) besides the records.
template <Real T>
GradientNoise<T> gradient_noise(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                                const Tensor<T>& targets);

extern template void per_example_gradients<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                  const Tensor<float>&, const Tensor<float>&, Tensor<float>&);
extern template void per_example_gradients<double>(const nn::Model<double>&, const nn::Head<double>&,
                                                   const Tensor<double>&, const Tensor<double>&, Tensor<double>&);
extern template Tensor<float> per_example_gradients<float>(const nn::Model<float>&,
                                                           const nn::Head<float>&,
                                                           const Tensor<float>&,
                                                           const Tensor<float>&);
extern template Tensor<double> per_example_gradients<double>(const nn::Model<double>&,
                                                             const nn::Head<double>&,
                                                             const Tensor<double>&,
                                                             const Tensor<double>&);
extern template Tensor<float> per_example_gradient_gram<float>(const nn::Model<float>&,
                                                               const nn::Head<float>&,
                                                               const Tensor<float>&,
                                                               const Tensor<float>&);
extern template Tensor<double> per_example_gradient_gram<double>(const nn::Model<double>&,
                                                                 const nn::Head<double>&,
                                                                 const Tensor<double>&,
                                                                 const Tensor<double>&);
extern template void for_each_per_example_gradient<float>(
    const nn::Model<float>&, const nn::Head<float>&, const Tensor<float>&, const Tensor<float>&, Index,
    const std::function<void(Index, const Tensor<float>&)>&);
extern template void for_each_per_example_gradient<double>(
    const nn::Model<double>&, const nn::Head<double>&, const Tensor<double>&, const Tensor<double>&,
    Index, const std::function<void(Index, const Tensor<double>&)>&);
extern template Tensor<float> per_example_gradient_norms<float>(const nn::Model<float>&,
                                                                const nn::Head<float>&,
                                                                const Tensor<float>&,
                                                                const Tensor<float>&);
extern template Tensor<double> per_example_gradient_norms<double>(const nn::Model<double>&,
                                                                  const nn::Head<double>&,
                                                                  const Tensor<double>&,
                                                                  const Tensor<double>&);
extern template Tensor<float> clipped_mean_gradient<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                          const Tensor<float>&, const Tensor<float>&, double,
                                                          Tensor<float>&);
extern template Tensor<double> clipped_mean_gradient<double>(const nn::Model<double>&, const nn::Head<double>&,
                                                            const Tensor<double>&, const Tensor<double>&, double,
                                                            Tensor<double>&);
extern template GradientNoise<float> gradient_noise<float>(const Tensor<float>&);
extern template GradientNoise<float> gradient_noise<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                           const Tensor<float>&, const Tensor<float>&);
extern template GradientNoise<double> gradient_noise<double>(const nn::Model<double>&, const nn::Head<double>&,
                                                             const Tensor<double>&, const Tensor<double>&);
extern template GradientNoise<double> gradient_noise<double>(const Tensor<double>&);

}  // namespace amari::curvature

// The diagonal of the GGN, exact and Monte Carlo (BackPACK's DiagGGN and DiagGGNMC: Dangel,
// Kunstner, Hennig 2020, "BackPACK: Packing more into backprop", sec. 2 and App. A.3), and of the
// empirical Fisher (BackPACK's SumGradSquared / N; a different matrix, SEED-NOTES 1).
//
// With B_i a factor of the head's logit Hessian, B_i B_i^T = H_L(z_i) (C x C, SEED-NOTES 3),
//   G = (1/N) sum_i J_i^T H_L(z_i) J_i = (1/N) sum_i sum_c (J_i^T b_{i,c}) (J_i^T b_{i,c})^T,
//   diag(G) = (1/N) sum_i sum_c (J_i^T b_{i,c})^2                        (elementwise square),
// the normalization of GgnOperator (ggn.hpp: the mean over the batch). The Monte-Carlo variant
// replaces B_i by S sampled-label scores s_{i,s} = grad_z log r(y_{i,s} | z_i), y ~ r(. | z_i):
//   diag(F_MC) = (1/(N S)) sum_i sum_s (J_i^T s_{i,s})^2,
// which is exactly the diagonal of MonteCarloFisherOperator's matrix (fisher.hpp) for the same
// seed, sample count and example ids (labels keyed by (seed, example id, sample index)); it is an
// unbiased estimate of diag(G) (= diag(F) for amari's heads) with error ~ 1 / sqrt(S).
//
// How the per-example squares are formed without a P x N matrix: the model is recorded once with
// layer taps (one nn::RecordedModel, as for GgnOperator) and each column c (all examples at once)
// is swept back from the logits to the tapped layers' outputs s_l, giving delta_{n,c} =
// d<b_{n,c}, z_n>/ds_l. For a layer s = a W + b, example n's part of J_n^T b_{n,c} in its [W; b]
// block is the outer product of its augmented input rows [a, 1] with those errors:
//  - Linear: a_n delta_{n,c}^T, whose square is (a_n^2)(delta_{n,c}^2)^T, so the block's diagonal
//    is (1/N) (A o A)^T (sum_c Delta_c o Delta_c): one GEMM for all examples and columns
//    (BackPACK's trick);
//  - Conv2d: the weight is shared over the T output positions, so the square is taken of the sum
//    sum_t a_{n,t} delta_{n,t,c}^T, one (rows x T)(T x out) GEMM per example and column (the exact
//    per-example gradient, neither KFC's expand nor reduce approximation).
// This needs the examples not to interact (each row of the batch flows through the model on its
// own), so that row n of the errors belongs to example n alone. Parameters in no tapped layer
// (norm scales and shifts, embeddings, grouped or shared-weight layers), and every parameter when
// the examples interact (a model in Mode::train with state, i.e. batch norm on batch statistics),
// get their squares from per-example reverse sweeps instead: cotangent b_{n,c} in row n only, one
// sweep of the batch record per example and column, restricted to those parameters. Either way the
// result is the diagonal of GgnOperator's matrix (the J_i are the rows of the batch Jacobian, the
// mode, dropout masks and state of the model as in GgnOperator).
//
// Cost (exact; for Monte Carlo read S for C): one taped forward pass; C reverse sweeps of the batch
// record from the logits to the tapped layers (each at most one gradient's sweep); per Linear layer
// N C out + 2 N rows out flops; per Conv2d layer 2 N C T rows out flops (C times its weight
// gradient); O(N C^3) for the factors B_i (none for Monte Carlo); plus N C reverse sweeps when
// parameters are untapped or the examples interact (about N C gradients: costly, see above).
// Memory: the record, N out per Linear layer, one T x rows patch buffer. No P x P matrix.
#pragma once

#include <cstdint>
#include <vector>

#include <amari/autodiff/tensor.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// diag(G) (P), G = (1/N) sum_i J_i^T H_L(z_i) J_i the GGN of GgnOperator on `inputs` (N, ...) at
/// the model's current parameters. ShapeError if inputs is undefined, of rank 0 or empty, or the
/// logits are not (N, C). Cost: see the file comment (about C reverse sweeps for tapped layers).
template <Real T>
Tensor<T> diagonal_ggn(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs);

/// The Monte-Carlo estimate (1/(N S)) sum_i sum_s (J_i^T s_{i,s})^2 (P) with S >= 1 labels per
/// example sampled from the model, keyed by (seed, example_ids[i], s) (by (seed, i, s) when
/// example_ids is empty): exactly the diagonal of MonteCarloFisherOperator(model, head, inputs,
/// samples, seed, example_ids). ValueError if samples < 1; ShapeError as diagonal_ggn, or if
/// example_ids is neither empty nor one per row. Cost: as diagonal_ggn with S sweeps for C.
template <Real T>
Tensor<T> diagonal_ggn_monte_carlo(const nn::Model<T>& model, const nn::Head<T>& head,
                                   const Tensor<T>& inputs, int samples, std::uint64_t seed,
                                   const std::vector<Index>& example_ids = {});

/// The diagonal of the EMPIRICAL Fisher, (1/N) sum_n g_n o g_n (P), g_n the gradient of example n's
/// loss at its data label (per_example.hpp): exactly the diagonal of EmpiricalFisherOperator's
/// matrix (fisher.hpp) on the same batch. Not the Fisher's diagonal (SEED-NOTES 1: that is
/// diagonal_ggn for amari's heads, or its Monte-Carlo estimate). N times it is BackPACK's
/// SumGradSquared, and with the batch gradient it gives the per-coordinate gradient variance
/// (gradient_noise in per_example.hpp). The same algorithm as diagonal_ggn with the one column
/// grad_{z_n} l_n = mu(z_n) - T(y_n) per example: one sweep to the tapped layers, (A o A)^T
/// (Delta o Delta) per Linear layer, squared per-example blocks for Conv2d, per-example sweeps for
/// untapped parameters or interacting examples. targets (N, C); ShapeError as diagonal_ggn, or for
/// targets that are not (N, C) with the inputs' N. Cost: about one batch gradient where every
/// parameter is tapped.
template <Real T>
Tensor<T> diagonal_empirical_fisher(const nn::Model<T>& model, const nn::Head<T>& head,
                                    const Tensor<T>& inputs, const Tensor<T>& targets);

/// The diagonal over a whole data set of inputs (N, ...): sum_b (N_b / N) diag_b over consecutive
/// batches of batch_size rows, exact (samples = 0) or Monte Carlo (samples >= 1, labels keyed by
/// the row index in the data set, as DatasetOperator). Equal (up to rounding) to the one-batch
/// result whenever the examples do not interact. ValueError if batch_size < 1 or samples < 0;
/// ShapeError as diagonal_ggn. Cost: one diagonal per batch; memory of one batch's record.
template <Real T>
Tensor<T> diagonal_ggn_over_dataset(const nn::Model<T>& model, const nn::Head<T>& head,
                                    const Tensor<T>& inputs, Index batch_size, int samples = 0,
                                    std::uint64_t seed = 0);

extern template Tensor<float> diagonal_ggn<float>(const nn::Model<float>&, const nn::Head<float>&,
                                                  const Tensor<float>&);
extern template Tensor<double> diagonal_ggn<double>(const nn::Model<double>&,
                                                    const nn::Head<double>&, const Tensor<double>&);
extern template Tensor<float> diagonal_empirical_fisher<float>(const nn::Model<float>&,
                                                              const nn::Head<float>&,
                                                              const Tensor<float>&,
                                                              const Tensor<float>&);
extern template Tensor<double> diagonal_empirical_fisher<double>(const nn::Model<double>&,
                                                                const nn::Head<double>&,
                                                                const Tensor<double>&,
                                                                const Tensor<double>&);
extern template Tensor<float> diagonal_ggn_monte_carlo<float>(const nn::Model<float>&,
                                                              const nn::Head<float>&,
                                                              const Tensor<float>&, int,
                                                              std::uint64_t,
                                                              const std::vector<Index>&);
extern template Tensor<double> diagonal_ggn_monte_carlo<double>(const nn::Model<double>&,
                                                                const nn::Head<double>&,
                                                                const Tensor<double>&, int,
                                                                std::uint64_t,
                                                                const std::vector<Index>&);
extern template Tensor<float> diagonal_ggn_over_dataset<float>(const nn::Model<float>&,
                                                               const nn::Head<float>&,
                                                               const Tensor<float>&, Index, int,
                                                               std::uint64_t);
extern template Tensor<double> diagonal_ggn_over_dataset<double>(const nn::Model<double>&,
                                                                 const nn::Head<double>&,
                                                                 const Tensor<double>&, Index, int,
                                                                 std::uint64_t);

}  // namespace amari::curvature

// Internal: the scores of labels sampled from the model, keyed by example id, shared by the
// Monte-Carlo Fisher operator (fisher.cpp) and the Monte-Carlo diagonal GGN (diag_ggn.cpp), so the
// two sample exactly the same labels for the same (seed, ids).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <amari/nn/heads.hpp>

namespace amari::curvature::detail {

/// y ~ r(. | z_i) for every row, keyed by (seed, ids[i], sample): one draw per row with the head's
/// counter-based sampler (its first_example argument is the key of row 0 of the slice it gets);
/// without ids, one call for the whole batch (row i keyed by i).
template <Real T>
Tensor<T> sample_by_id(const nn::Head<T>& head, const Tensor<T>& z, std::uint64_t seed, std::uint64_t sample,
                       const std::vector<Index>& ids) {
  if (ids.empty()) return head.sample(z, seed, sample);
  const Index n = z.dim(0), c = z.dim(1);
  Tensor<T> y;  // (N, width of a sampled row): a head's targets need not be as wide as its logits
  for (Index i = 0; i < n; ++i) {
    const Tensor<T> yi = head.sample(z.view(i * c, Shape{1, c}), seed, sample, ids[static_cast<std::size_t>(i)]);
    if (i == 0) y = Tensor<T>::uninitialized(Shape{n, yi.size()});
    std::copy(yi.begin(), yi.end(), y.data() + i * yi.size());
  }
  return y;
}

/// The scores s = T(y) - mu(z) (N, C) of `samples` label draws y ~ r(. | z) (SEED-NOTES 1: labels
/// from the model itself, which is what makes their outer products estimate the true Fisher).
template <Real T>
std::vector<Tensor<T>> sampled_scores(const nn::Head<T>& head, const Tensor<T>& z, std::uint64_t seed, int samples,
                                      const std::vector<Index>& ids) {
  std::vector<Tensor<T>> scores;
  for (int s = 0; s < samples; ++s) {
    const Tensor<T> y = sample_by_id(head, z, seed, static_cast<std::uint64_t>(s), ids);
    Tensor<T> score = Tensor<T>::uninitialized(z.shape());
    head.score(z, y, score);
    scores.push_back(std::move(score));
  }
  return scores;
}

}  // namespace amari::curvature::detail

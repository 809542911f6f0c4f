// Embedding: a lookup table of learned vectors, PyTorch's nn.Embedding.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include <amari/nn/module.hpp>

namespace amari::nn {

/// Rows of a (num_embeddings, dim) table picked by integer indices. The input holds the indices
/// stored as T (every module maps a T tensor to a T tensor), exact for indices below 2^24 in float
/// and 2^53 in double; (N) -> (N, dim), (N, L) -> (N, L, dim). A non-integer or out-of-range index
/// raises ValueError. The input is data: it has no derivative (a tangent on it is ignored).
/// Parameter "weight" (num_embeddings, dim), N(0, 1) as in PyTorch.
template <Real T>
class Embedding final : public Layer<T, Embedding<T>> {
 public:
  Embedding(Index num_embeddings, Index dim) : num_(num_embeddings), dim_(dim) {
    if (num_ <= 0 || dim_ <= 0) {
      throw ValueError("Embedding: needs num_embeddings > 0 and dim > 0, got " + std::to_string(num_) + ", " +
                       std::to_string(dim_));
    }
  }
  std::string describe() const override {
    return "Embedding(" + std::to_string(num_) + ", " + std::to_string(dim_) + ")";
  }
  void declare(std::vector<ParamSpec>& out, const std::string& prefix) const override {
    out.push_back({prefix + "weight", Shape{num_, dim_}, Init::normal, num_, dim_});
  }
  template <Value V>
  V apply(const V& x, ForwardContext<V>& c) const {
    const Tensor<T>& idx = primal_of(x);
    std::vector<Index> indices(static_cast<std::size_t>(idx.size()));
    for (Index i = 0; i < idx.size(); ++i) {
      const T v = idx[i];
      if (!(v >= 0 && v < static_cast<T>(num_)) || std::floor(v) != v) {
        throw ValueError(describe() + ": input element " + std::to_string(i) + " is " + std::to_string(v) +
                         ", not an index in [0, " + std::to_string(num_) + ")");
      }
      indices[static_cast<std::size_t>(i)] = static_cast<Index>(v);
    }
    return embedding(c.next(), indices, idx.shape());
  }

 private:
  Index num_, dim_;
};

}  // namespace amari::nn

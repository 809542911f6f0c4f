// Internal: the aliasing rule of the heads' out-parameter functions (nn/heads.hpp), shared by every
// head. Not installed.
#pragma once

#include <initializer_list>

#include <amari/autodiff/tensor.hpp>

namespace amari::nn::detail {

// Runs compute(dst) with dst = out, or, when out shares elements with one of `inputs` (which
// compute reads while it writes dst), with dst a fresh tensor copied into out at the end. So every
// out-parameter function gives the same numbers whether or not out aliases an argument.
template <Real T, class F>
void into(Tensor<T>& out, std::initializer_list<const Tensor<T>*> inputs, const F& compute) {
  for (const Tensor<T>* in : inputs) {
    if (out.overlaps(*in)) {
      Tensor<T> tmp = Tensor<T>::uninitialized(out.shape());
      compute(tmp);
      out.copy_from(tmp);
      return;
    }
  }
  compute(out);
}

}  // namespace amari::nn::detail

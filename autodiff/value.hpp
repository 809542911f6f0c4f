// The three value types every primitive accepts, and what generic code needs to know about them.
#pragma once

#include <type_traits>

#include <amari/autodiff/dual.hpp>
#include <amari/autodiff/tape.hpp>
#include <amari/autodiff/tensor.hpp>

namespace amari {

template <class V>
struct is_value : std::false_type {};
template <Real T>
struct is_value<Tensor<T>> : std::true_type {};
template <Real T>
struct is_value<Dual<T>> : std::true_type {};
template <Real T>
struct is_value<Var<T>> : std::true_type {};

/// A value the primitives accept: Tensor<T> (plain evaluation), Dual<T> (forward mode) or Var<T>
/// (recorded on a tape for reverse mode), with T float or double. Code written for any Value runs
/// in all three modes.
template <class V>
concept Value = is_value<std::remove_cvref_t<V>>::value;

/// The plain tensor inside a value: itself, the primal of a dual, the value of a tape variable.
template <Real T>
const Tensor<T>& primal_of(const Tensor<T>& v) { return v; }
template <Real T>
const Tensor<T>& primal_of(const Dual<T>& v) { return v.primal(); }
template <Real T>
const Tensor<T>& primal_of(const Var<T>& v) { return v.value(); }

/// Wraps a plain tensor as a constant of value type V (no tangent, not recorded).
template <Value V>
V constant_like(Tensor<typename V::value_type> t) {
  if constexpr (std::is_same_v<V, Tensor<typename V::value_type>>) {
    return t;
  } else {
    return V(std::move(t));
  }
}

/// Expands X(V) for each of the six value types; used to instantiate the primitives.
#define AMARI_FOR_EACH_VALUE_TYPE(X)                                                  \
  X(::amari::Tensor<float>) X(::amari::Tensor<double>) X(::amari::Dual<float>)        \
  X(::amari::Dual<double>) X(::amari::Var<float>) X(::amari::Var<double>)

}  // namespace amari

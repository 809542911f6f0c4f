// Deterministic random tensors for tests: splitmix64, so the same seed gives the same numbers with
// any standard library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <amari/autodiff/tensor.hpp>

namespace amari::test {

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for test data.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Standard normal (Box-Muller).
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) { return next() % n; }

 private:
  std::uint64_t state_;
};

template <Real T>
Tensor<T> uniform_tensor(const Shape& shape, Rng& rng, double lo = -1.0, double hi = 1.0) {
  Tensor<T> t = Tensor<T>::uninitialized(shape);
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<T>(rng.uniform(lo, hi));
  return t;
}

template <Real T>
Tensor<T> normal_tensor(const Shape& shape, Rng& rng, double stddev = 1.0) {
  Tensor<T> t = Tensor<T>::uninitialized(shape);
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<T>(stddev * rng.normal());
  return t;
}

/// Element type conversion (for comparing float results with double references).
template <Real To, Real From>
Tensor<To> convert(const Tensor<From>& x) {
  Tensor<To> t = Tensor<To>::uninitialized(x.shape());
  for (Index i = 0; i < x.size(); ++i) t[i] = static_cast<To>(x[i]);
  return t;
}

template <Real T>
double dot(const Tensor<T>& a, const Tensor<T>& b) {
  double s = 0;
  for (Index i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

template <Real T>
double norm(const Tensor<T>& a) {
  return std::sqrt(dot(a, a));
}

/// ||a - b||_2 (a and b of equal size).
template <Real T, Real U>
double distance(const Tensor<T>& a, const Tensor<U>& b) {
  double s = 0;
  for (Index i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    s += d * d;
  }
  return std::sqrt(s);
}

/// ||a - b|| / ||b||, with ||b|| floored so an exact zero reference is compared absolutely.
template <Real T, Real U>
double rel_err(const Tensor<T>& a, const Tensor<U>& b) {
  return distance(a, b) / std::max(norm(b), 1e-300);
}

/// max_i |a_i - b_i|.
template <Real T, Real U>
double max_abs_diff(const Tensor<T>& a, const Tensor<U>& b) {
  double m = 0;
  for (Index i = 0; i < a.size(); ++i)
    m = std::fmax(m, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

}  // namespace amari::test

// The vector kernels (autodiff/kernels/vector.hpp): the one reduction gives exactly the sum its
// header describes (blocks that depend on n only, 8 double lanes per block, a fixed pairwise lane
// order, blocks in order), and a dot or a sum is the same whatever the thread count and the
// address of the data. The sizes span
// one block with a ragged tail, an odd number of blocks with a short last one, the OpenMP path
// (>= kParallelElements) and the cap of kMaxBlocks blocks.
// GCC 12 reports _mm512_cvtps_pd's _mm512_undefined_pd() operand (widen, vector.hpp) as maybe
// uninitialized once inlined here; the library is compiled with -Wno-maybe-uninitialized.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/kernels/vector.hpp>

#include "support/random.hpp"

namespace {

using amari::Index;
namespace kernels = amari::kernels;

constexpr Index kVectorSizes[] = {0, 1, 37, 4096, 69001, (Index{1} << 20) + 13};

class VectorThreads {
 public:
  explicit VectorThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~VectorThreads() { omp_set_num_threads(saved_); }
  VectorThreads(const VectorThreads&) = delete;
  VectorThreads& operator=(const VectorThreads&) = delete;

 private:
  int saved_;
};

template <class T>
std::vector<T> random_values(Index n, unsigned seed) {
  amari::test::Rng rng(seed);
  std::vector<T> v(static_cast<std::size_t>(n) + 1);  // + 1: room for a shifted copy
  for (T& e : v) e = static_cast<T>(rng.uniform(-1.0, 1.0));
  return v;
}

// The reduction as vector.hpp states it, one element at a time. term(i) is the double term of
// element i.
template <class Term>
double reference_reduction(Index n, const Term& term) {
  if (n == 0) return 0.0;
  const kernels::Blocks blocks = kernels::blocks_for(n);
  double total = 0.0;
  for (Index b = 0; b < blocks.count; ++b) {
    const kernels::Span s = kernels::block_span(n, blocks, b);
    double lane[8] = {};
    for (Index i = s.lo; i < s.hi; ++i) lane[(i - s.lo) % 8] += term(i);
    total +=
        ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
  }
  return total;
}

bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

TEST_CASE("vector kernels: a dot of floats is bitwise the reduction vector.hpp describes",
          "[kernels]") {
  for (Index n : kVectorSizes) {
    CAPTURE(n);
    const std::vector<float> x = random_values<float>(n, 1);
    const std::vector<float> y = random_values<float>(n, 2);
    // A product of two floats is exact in double, so the terms do not depend on whether the
    // compiler fuses the multiply into the addition.
    CHECK(same_bits(kernels::dot(n, x.data(), y.data()), reference_reduction(n, [&](Index i) {
                      return static_cast<double>(x[static_cast<std::size_t>(i)]) *
                             static_cast<double>(y[static_cast<std::size_t>(i)]);
                    })));
  }
}

TEST_CASE(
    "vector kernels: dot and sum are bitwise the same on 1, 2 and 3 threads and at any "
    "address",
    "[kernels]") {
  for (Index n : kVectorSizes) {
    CAPTURE(n);
    const std::vector<double> x = random_values<double>(n, 4);
    const std::vector<double> y = random_values<double>(n, 5);
    const std::vector<float> xf = random_values<float>(n, 6);
    double dot1, sum1, sumf1;
    {
      VectorThreads t(1);
      dot1 = kernels::dot(n, x.data(), y.data());
      sum1 = kernels::sum(n, x.data());
      sumf1 = kernels::sum(n, xf.data());
    }
    for (int threads : {2, 3}) {
      CAPTURE(threads);
      VectorThreads t(threads);
      CHECK(same_bits(kernels::dot(n, x.data(), y.data()), dot1));
      CHECK(same_bits(kernels::sum(n, x.data()), sum1));
      CHECK(same_bits(kernels::sum(n, xf.data()), sumf1));
    }
    // Shifted by one element: the lanes follow the offset in the block, not the address.
    std::vector<double> xs(x.size() + 1), ys(y.size() + 1);
    std::copy(x.begin(), x.end(), xs.begin() + 1);
    std::copy(y.begin(), y.end(), ys.begin() + 1);
    CHECK(same_bits(kernels::dot(n, xs.data() + 1, ys.data() + 1), dot1));
  }
}

TEST_CASE("vector kernels: block_dot over the partition's blocks, combined in order, is dot",
          "[kernels]") {
  // Lanczos reduces several vectors per block with block_dot: its entries of Q^T w must be dot().
  // Floats, whose products are exact in double: this file is compiled at -O1 and the library at
  // -O3, which may fuse a double product into its addition in one and not in the other.
  for (Index n : kVectorSizes) {
    CAPTURE(n);
    const std::vector<float> x = random_values<float>(n, 7);
    const std::vector<float> y = random_values<float>(n, 8);
    const kernels::Blocks blocks = kernels::blocks_for(n);
    std::vector<double> partial(static_cast<std::size_t>(blocks.count));
    for (Index b = 0; b < blocks.count; ++b) {
      const kernels::Span s = kernels::block_span(n, blocks, b);
      partial[static_cast<std::size_t>(b)] = kernels::block_dot(x.data(), y.data(), s.lo, s.hi);
    }
    CHECK(same_bits(kernels::combine_blocks(partial.data(), blocks.count),
                    kernels::dot(n, x.data(), y.data())));
  }
}

TEST_CASE("vector kernels: all_finite finds a NaN or inf in any block, copy copies", "[kernels]") {
  const Index n = (Index{1} << 17) + 3;
  std::vector<float> x = random_values<float>(n, 9);
  CHECK(kernels::all_finite(n, x.data()));
  CHECK(kernels::all_finite(0, x.data()));
  for (Index pos : {Index{0}, Index{5000}, n - 1}) {
    for (float bad :
         {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      CAPTURE(pos, bad);
      const float saved = x[static_cast<std::size_t>(pos)];
      x[static_cast<std::size_t>(pos)] = bad;
      CHECK_FALSE(kernels::all_finite(n, x.data()));
      x[static_cast<std::size_t>(pos)] = saved;
    }
  }
  std::vector<float> y(x.size(), 0.0f);
  {
    VectorThreads t(2);
    kernels::copy(n, x.data(), y.data());
  }
  CHECK(std::equal(x.begin(), x.begin() + n, y.begin()));
  CHECK(y[static_cast<std::size_t>(n)] == 0.0f);
}

// Specification of kernels::gemm: C = alpha * op(A) * op(B) + beta * C against a naive triple loop
// accumulated in higher precision, for every transpose variant, edge sizes around the SIMD width
// and the register tile, padded leading dimensions, unaligned pointers, the beta == 0 contract, the
// empty cases, the threaded path and determinism.
#include <amari/autodiff/kernels/gemm.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include <omp.h>
#include <catch2/catch.hpp>

namespace {

using amari::Index;
using amari::kernels::gemm;
using amari::kernels::Trans;

// One GEMM case with stored (not logical) operand layouts, padded leading dimensions and an
// element offset from the start of each buffer (to make the pointers unaligned).
struct Case {
  Trans ta = Trans::no, tb = Trans::no;
  Index m = 0, n = 0, k = 0;
  Index pad_a = 0, pad_b = 0, pad_c = 0;  // extra columns beyond the minimum leading dimension
  Index offset = 0;                       // elements skipped at the start of A, B and C
  double alpha = 1, beta = 0;
};

template <class T>
struct Operands {
  Case cs;
  Index lda, ldb, ldc;
  std::vector<T> a, b, c;  // c: the initial C (NaN where beta == 0, to prove it is not read)
  const T* a_ptr() const { return a.data() + cs.offset; }
  const T* b_ptr() const { return b.data() + cs.offset; }
  T op_a(Index i, Index p) const {
    return cs.ta == Trans::no ? a_ptr()[i * lda + p] : a_ptr()[p * lda + i];
  }
  T op_b(Index p, Index j) const {
    return cs.tb == Trans::no ? b_ptr()[p * ldb + j] : b_ptr()[j * ldb + p];
  }
};

// Filled with values in [-1, 1]; the sentinel marks memory gemm must not touch (C's padding).
template <class T>
constexpr T sentinel() {
  return T(12345.5);
}

template <class T>
Operands<T> make_operands(const Case& cs, std::mt19937& rng) {
  Operands<T> op{cs, 0, 0, 0, {}, {}, {}};
  std::uniform_real_distribution<T> dist(T(-1), T(1));
  const Index a_rows = cs.ta == Trans::no ? cs.m : cs.k;
  const Index b_rows = cs.tb == Trans::no ? cs.k : cs.n;
  op.lda = (cs.ta == Trans::no ? cs.k : cs.m) + cs.pad_a;
  op.ldb = (cs.tb == Trans::no ? cs.n : cs.k) + cs.pad_b;
  op.ldc = cs.n + cs.pad_c;
  op.a.resize(static_cast<std::size_t>(cs.offset + a_rows * op.lda));
  op.b.resize(static_cast<std::size_t>(cs.offset + b_rows * op.ldb));
  op.c.assign(static_cast<std::size_t>(cs.offset + cs.m * op.ldc), sentinel<T>());
  for (auto& x : op.a) x = dist(rng);
  for (auto& x : op.b) x = dist(rng);
  for (Index i = 0; i < cs.m; ++i) {
    for (Index j = 0; j < cs.n; ++j) {
      op.c[static_cast<std::size_t>(cs.offset + i * op.ldc + j)] =
          cs.beta == 0 ? std::numeric_limits<T>::quiet_NaN() : dist(rng);
    }
  }
  return op;
}

template <class T>
std::vector<T> run_gemm(const Operands<T>& op) {
  std::vector<T> c = op.c;
  gemm<T>(op.cs.ta, op.cs.tb, op.cs.m, op.cs.n, op.cs.k, T(op.cs.alpha), op.a_ptr(), op.lda,
          op.b_ptr(), op.ldb, T(op.cs.beta), c.data() + op.cs.offset, op.ldc);
  return c;
}

// Checks `result` (the whole C buffer after gemm) against the naive loop: every element within
// (k + 2) rounding errors relative to alpha * sum_p |a||b| + |beta * c|, and the padding and the
// leading offset untouched.
template <class T>
bool matches_naive(const Operands<T>& op, const std::vector<T>& result) {
  using Acc = std::conditional_t<std::is_same_v<T, float>, double, long double>;
  const Case& cs = op.cs;
  const Acc tol = Acc(2) * Acc(cs.k + 2) * Acc(std::numeric_limits<T>::epsilon());
  for (Index idx = 0; idx < cs.offset; ++idx) {
    if (result[static_cast<std::size_t>(idx)] != sentinel<T>()) return false;
  }
  for (Index i = 0; i < cs.m; ++i) {
    for (Index j = 0; j < op.ldc; ++j) {
      const std::size_t at = static_cast<std::size_t>(cs.offset + i * op.ldc + j);
      if (j >= cs.n) {
        if (result[at] != sentinel<T>()) return false;
        continue;
      }
      Acc sum = 0, bound = 0;
      for (Index p = 0; p < cs.k; ++p) {
        const Acc prod = Acc(op.op_a(i, p)) * Acc(op.op_b(p, j));
        sum += prod;
        bound += std::fabs(prod);
      }
      Acc expected = Acc(cs.alpha) * sum;
      bound = std::fabs(Acc(cs.alpha)) * bound;
      if (cs.beta != 0) {
        expected += Acc(cs.beta) * Acc(op.c[at]);
        bound += std::fabs(Acc(cs.beta) * Acc(op.c[at]));
      }
      const Acc got = result[at];
      if (!(std::fabs(got - expected) <= tol * bound + Acc(std::numeric_limits<T>::min()))) {
        UNSCOPED_INFO("C(" << i << ", " << j << ") = " << double(got) << ", expected "
                           << double(expected) << " (bound " << double(bound) << ")");
        return false;
      }
    }
  }
  return true;
}

template <class T>
bool check_case(const Case& cs, std::mt19937& rng) {
  const Operands<T> op = make_operands<T>(cs, rng);
  const bool ok = matches_naive(op, run_gemm(op));
  if (!ok) {
    UNSCOPED_INFO("ta=" << (cs.ta == Trans::yes) << " tb=" << (cs.tb == Trans::yes) << " m=" << cs.m
                        << " n=" << cs.n << " k=" << cs.k << " pads=" << cs.pad_a << "," << cs.pad_b
                        << "," << cs.pad_c << " offset=" << cs.offset << " alpha=" << cs.alpha
                        << " beta=" << cs.beta);
  }
  return ok;
}

constexpr Trans kTrans[] = {Trans::no, Trans::yes};

// All of 1..17 (every remainder of the SIMD width and the register tile), the tile and cache-line
// multiples and their neighbours, and primes up to 67.
const std::vector<Index> kSizes = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                   16, 17, 23, 29, 31, 32, 33, 37, 47, 48, 61, 64, 65, 67};

struct Scalars {
  double alpha, beta;
};
constexpr Scalars kScalars[] = {{1, 0}, {-0.5, 1}, {2, -1.5}, {0.75, 0}, {1, 1}};

}  // namespace

TEMPLATE_TEST_CASE("gemm: all four transpose variants match a naive triple loop for sizes 1..67",
                   "[gemm]", float, double) {
  std::mt19937 rng(42);
  int variant = 0;
  for (Trans ta : kTrans) {
    for (Trans tb : kTrans) {
      bool all_ok = true;
      for (Index m : kSizes) {
        for (Index n : kSizes) {
          for (Index k : kSizes) {
            // Cycle alpha/beta and leading-dimension padding so every combination of sizes meets
            // several of them without multiplying the case count.
            const Scalars s = kScalars[(m + 3 * n + 7 * k + variant) % 5];
            Case cs{ta, tb, m, n, k, (m + k) % 3, (n + k) % 2, (m + n) % 3, 0, s.alpha, s.beta};
            all_ok = check_case<TestType>(cs, rng) && all_ok;
            if (!all_ok) break;
          }
          if (!all_ok) break;
        }
        if (!all_ok) break;
      }
      CHECK(all_ok);
      ++variant;
    }
  }
}

TEMPLATE_TEST_CASE(
    "gemm: unaligned pointers and padded leading dimensions work, C's padding is never written",
    "[gemm]", float, double) {
  std::mt19937 rng(7);
  for (Trans ta : kTrans) {
    for (Trans tb : kTrans) {
      for (Index offset : {1, 3}) {
        for (Index pad : {1, 5, 17}) {
          Case cs{ta, tb, 45, 53, 39, pad, pad + 2, pad + 1, offset, 1.25, -0.5};
          CHECK(check_case<TestType>(cs, rng));
          cs.beta = 0;
          CHECK(check_case<TestType>(cs, rng));
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("gemm: beta = 0 writes C without reading it, so NaN in C does not propagate",
                   "[gemm]", float, double) {
  std::mt19937 rng(3);
  // Small (direct loops) and blocked sizes, full and edge tiles; make_operands fills C with NaN.
  for (Index size : {3, 20, 64, 97}) {
    for (Trans ta : kTrans) {
      for (Trans tb : kTrans) {
        const Operands<TestType> op =
            make_operands<TestType>(Case{ta, tb, size, size + 1, size + 2, 0, 0, 0, 0, 1, 0}, rng);
        const std::vector<TestType> c = run_gemm(op);
        bool finite = true;
        for (Index i = 0; i < size * op.ldc; ++i) finite = finite && std::isfinite(c[i]);
        CHECK(finite);
        CHECK(matches_naive(op, c));
      }
    }
  }
}

TEMPLATE_TEST_CASE("gemm: k = 0 or alpha = 0 gives C = beta * C, m = 0 or n = 0 touches nothing",
                   "[gemm]", float, double) {
  using T = TestType;
  const std::vector<T> a(64, std::numeric_limits<T>::quiet_NaN());  // never read
  const std::vector<T> b(64, std::numeric_limits<T>::quiet_NaN());
  for (Trans ta : kTrans) {
    for (Trans tb : kTrans) {
      std::vector<T> c(12, T(2));
      gemm<T>(ta, tb, 3, 4, 0, T(1), a.data(), ta == Trans::no ? 0 : 3, b.data(),
              tb == Trans::no ? 4 : 0, T(-1.5), c.data(), 4);
      CHECK(c == std::vector<T>(12, T(-3)));
      gemm<T>(ta, tb, 3, 4, 5, T(0), a.data(), ta == Trans::no ? 5 : 3, b.data(),
              tb == Trans::no ? 4 : 5, T(0.5), c.data(), 4);
      CHECK(c == std::vector<T>(12, T(-1.5)));
      c.assign(12, std::numeric_limits<T>::quiet_NaN());
      gemm<T>(ta, tb, 3, 4, 0, T(1), a.data(), 5, b.data(), 5, T(0), c.data(), 4);
      CHECK(c == std::vector<T>(12, T(0)));

      std::vector<T> untouched(12, T(7));
      gemm<T>(ta, tb, 0, 4, 5, T(1), a.data(), 5, b.data(), 5, T(1), untouched.data(), 4);
      gemm<T>(ta, tb, 3, 0, 5, T(1), a.data(), 5, b.data(), 5, T(1), untouched.data(), 1);
      gemm<T>(ta, tb, 0, 0, 0, T(1), a.data(), 5, b.data(), 5, T(1), untouched.data(), 1);
      CHECK(untouched == std::vector<T>(12, T(7)));
    }
  }
}

TEMPLATE_TEST_CASE("gemm: large products (several cache blocks, threaded) match the naive loop",
                   "[gemm]", float, double) {
  std::mt19937 rng(11);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(std::max(2, omp_get_num_procs()));
  // 129x257x300: edge tiles in m and n and two k blocks. 301x263x517: above the threading
  // threshold, split by rows. 20x1100x400: too few rows to split, split by columns.
  const Index shapes[][3] = {{129, 257, 300}, {301, 263, 517}, {20, 1100, 400}};
  for (const auto& s : shapes) {
    for (Trans ta : kTrans) {
      for (Trans tb : kTrans) {
        CHECK(check_case<TestType>(Case{ta, tb, s[0], s[1], s[2], 3, 1, 2, 1, 0.5, -1}, rng));
      }
    }
  }
  CHECK(check_case<TestType>(Case{Trans::no, Trans::no, 257, 2100, 301, 0, 0, 0, 0, 1, 0}, rng));
  omp_set_num_threads(saved_threads);
}

TEMPLATE_TEST_CASE("gemm: matrix-vector shapes and narrow C (a few columns) match the naive loop",
                   "[gemm]", float, double) {
  std::mt19937 rng(13);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(std::max(2, omp_get_num_procs()));
  // m == 1 or n == 1 take the dot/axpy path; n = 10 (a classifier head) is computed as C^T, and
  // 2000 x 10 x 300 does so on threads, split over C's rows.
  const Index shapes[][3] = {{1, 300, 500},  {500, 1, 300},   {1, 1, 700},
                             {300, 10, 200}, {2000, 10, 300}, {3, 257, 129}};
  for (const auto& s : shapes) {
    for (Trans ta : kTrans) {
      for (Trans tb : kTrans) {
        CHECK(check_case<TestType>(Case{ta, tb, s[0], s[1], s[2], 2, 3, 1, 1, -0.75, 0.5}, rng));
        CHECK(check_case<TestType>(Case{ta, tb, s[0], s[1], s[2], 0, 0, 0, 0, 1, 0}, rng));
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

TEMPLATE_TEST_CASE("gemm: results are bitwise identical across runs and across thread counts",
                   "[gemm]", float, double) {
  std::mt19937 rng(5);
  const int saved_threads = omp_get_max_threads();
  for (Trans ta : kTrans) {
    for (Trans tb : kTrans) {
      for (const Index m : {Index{333}, Index{24}}) {
        const Operands<TestType> op =
            make_operands<TestType>(Case{ta, tb, m, 517, 411, 0, 0, 0, 0, 1, 0.5}, rng);
        omp_set_num_threads(std::max(2, omp_get_num_procs()));
        const std::vector<TestType> first = run_gemm(op);
        const std::vector<TestType> second = run_gemm(op);
        omp_set_num_threads(1);
        const std::vector<TestType> serial = run_gemm(op);
        // memcmp-style comparison: NaN-free data, so == on every element is bitwise equality.
        CHECK(first == second);
        CHECK(first == serial);
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

TEMPLATE_TEST_CASE("gemm: concurrent calls from inside a parallel region each get their own result",
                   "[gemm]", float, double) {
  using T = TestType;
  std::mt19937 rng(9);
  constexpr int kCalls = 8;
  std::vector<Operands<T>> ops;
  std::vector<std::vector<T>> expected;
  for (int i = 0; i < kCalls; ++i) {
    ops.push_back(
        make_operands<T>(Case{Trans::no, Trans::yes, 70 + i, 90, 110, 0, 0, 0, 0, 1, 0}, rng));
    expected.push_back(run_gemm(ops.back()));
  }
  std::vector<std::vector<T>> got(kCalls);
#pragma omp parallel for num_threads(2) schedule(static, 1)
  for (int i = 0; i < kCalls; ++i) got[i] = run_gemm(ops[i]);
  for (int i = 0; i < kCalls; ++i) CHECK(got[i] == expected[i]);
}

TEST_CASE("gemm: negative extents or too small leading dimensions throw ShapeError", "[gemm]") {
  std::vector<float> buf(64, 1.0f);
  const float* a = buf.data();
  float* c = buf.data();
  CHECK_THROWS_AS(gemm<float>(Trans::no, Trans::no, -1, 2, 2, 1, a, 2, a, 2, 0, c, 2),
                  amari::ShapeError);
  CHECK_THROWS_AS(gemm<float>(Trans::no, Trans::no, 2, 2, 3, 1, a, 2, a, 2, 0, c, 2),
                  amari::ShapeError);  // lda < k
  CHECK_THROWS_AS(gemm<float>(Trans::yes, Trans::no, 4, 2, 3, 1, a, 3, a, 2, 0, c, 2),
                  amari::ShapeError);  // lda < m for A^T
  CHECK_THROWS_AS(gemm<float>(Trans::no, Trans::yes, 2, 2, 3, 1, a, 3, a, 2, 0, c, 2),
                  amari::ShapeError);  // ldb < k for B^T
  CHECK_THROWS_AS(gemm<float>(Trans::no, Trans::no, 2, 3, 2, 1, a, 2, a, 3, 0, c, 2),
                  amari::ShapeError);  // ldc < n
}

// Invariants of amari's value-level objects under misuse (issue 10): the Tensor state machine
// (construct, copy, move, view, assign, fill, reset in random orders), zero-size tensors through
// every primitive, result buffers that alias arguments in every *_into API, settings validated in
// the precision they are used in, guards on what an optimizer writes, and Dataset consistency.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <typeinfo>
#include <vector>

#include <amari/amari.hpp>

#include <amari/autodiff/kernels/elementwise.hpp>

#include "support/ad_check.hpp"
#include "support/random.hpp"

namespace {

using namespace amari;
using Catch::Matchers::Contains;

template <class E, class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected a different exception type, got: " << e.what());
  }
  FAIL("expected an exception, none was thrown");
  return {};
}

template <Real T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() && a.size() == b.size() &&
         (a.size() == 0 ||
          std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0);
}

// |a - b| <= tol (1 + |b|) element-wise, NaN matching NaN.
template <Real T>
bool close(const Tensor<T>& a, const Tensor<T>& b, double tol) {
  if (!(a.shape() == b.shape())) return false;
  for (Index i = 0; i < a.size(); ++i) {
    const double x = a[i], y = b[i];
    if (std::isnan(x) && std::isnan(y)) continue;
    if (!(std::fabs(x - y) <= tol * (1 + std::fabs(y)))) return false;
  }
  return true;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---- 1. Tensor: a random state machine checked against a model of shared storage ----------------

// What a Tensor handle should be: a window [offset, offset + numel) of a shared store, or nothing.
struct Model {
  std::shared_ptr<std::vector<double>> store;  // null: undefined
  Index offset = 0;
  Shape shape = Shape::empty_vector();
};

Shape random_shape(test::Rng& rng) {
  static const Index extents[] = {0, 1, 2, 3, 5};
  std::vector<Index> dims(rng.below(4));
  for (Index& d : dims) d = extents[rng.below(5)];
  return Shape(std::span<const Index>(dims.data(), dims.size()));
}

// A shape with `n` elements (n > 0), or with a random count (which may then not match).
Shape shape_with(Index n, test::Rng& rng) {
  switch (rng.below(4)) {
    case 0:
      return Shape{n};
    case 1:
      return Shape{1, n};
    case 2:
      return n % 2 == 0 ? Shape{2, n / 2} : Shape{n, 1};
    default:
      return random_shape(rng);
  }
}

// The first violated invariant of `t` given its model, or "" if all hold.
std::string violation(const Tensor<double>& t, const Model& m) {
  if (t.defined() != (t.data() != nullptr)) return "defined() != (data() != nullptr)";
  if (t.defined() != (m.store != nullptr)) return "defined() differs from the model";
  if (t.size() != t.shape().numel()) return "size() != shape().numel()";
  if (!(t.shape() == m.shape)) return "shape " + t.shape().str() + ", model " + m.shape.str();
  if (t.end() - t.begin() != t.size()) return "end() - begin() != size()";
  if (static_cast<Index>(t.to_vector().size()) != t.size()) return "to_vector() size";
  if (!t.defined()) {
    if (!(t.shape() == Shape::empty_vector()) || t.size() != 0) return "undefined but not empty";
    if (t.clone().defined()) return "clone() of an undefined tensor is defined";
    return "";
  }
  for (Index k = 0; k < t.size(); ++k) {
    if (t[k] != (*m.store)[static_cast<std::size_t>(m.offset + k)]) {
      return "element " + std::to_string(k) + " is " + std::to_string(t[k]) + ", model " +
             std::to_string((*m.store)[static_cast<std::size_t>(m.offset + k)]);
    }
  }
  return "";
}

// Two handles relate as their models say: same storage iff same store and offset, overlapping
// iff same store and intersecting windows (only checked for handles with elements).
std::string sharing_violation(const Tensor<double>& a, const Model& ma, const Tensor<double>& b,
                              const Model& mb) {
  if (a.size() == 0 || b.size() == 0) return "";
  const bool same_store = ma.store == mb.store;
  if (a.same_storage(b) != (same_store && ma.offset == mb.offset)) return "same_storage()";
  const bool overlap = same_store && ma.offset < mb.offset + b.size() && mb.offset < ma.offset + a.size();
  if (a.overlaps(b) != overlap) return "overlaps()";
  return "";
}

void run_tensor_state_machine(std::uint64_t seed, int steps) {
  constexpr std::size_t kSlots = 4;
  test::Rng rng(seed);
  std::vector<Tensor<double>> t(kSlots);
  std::vector<Model> m(kSlots);
  double next_value = 1;
  const auto fresh = [&](const Shape& s, double v) {
    return Model{std::make_shared<std::vector<double>>(static_cast<std::size_t>(s.numel()), v), 0, s};
  };
  for (int step = 0; step < steps; ++step) {
    const std::size_t i = rng.below(kSlots), j = rng.below(kSlots);
    const int op = static_cast<int>(rng.below(17));
    std::string what = "op " + std::to_string(op) + " on slots " + std::to_string(i) + ", " + std::to_string(j);
    const double v = next_value++;
    switch (op) {
      case 0: {  // Tensor(shape): zeros
        const Shape s = random_shape(rng);
        t[i] = Tensor<double>(s);
        m[i] = fresh(s, 0);
        break;
      }
      case 1: {  // full, and uninitialized then filled
        const Shape s = random_shape(rng);
        if (rng.below(2)) {
          t[i] = Tensor<double>::full(s, v);
        } else {
          t[i] = Tensor<double>::uninitialized(s);
          t[i].fill(v);
        }
        m[i] = fresh(s, v);
        break;
      }
      case 2:  // default construction
        t[i] = Tensor<double>();
        m[i] = Model{};
        break;
      case 3:  // copy assignment: another handle to the same elements
        t[i] = t[j];
        m[i] = m[j];
        break;
      case 4: {  // copy construction
        const Tensor<double> c(t[j]);
        t[i] = c;
        m[i] = m[j];
        break;
      }
      case 5: {  // move assignment, self-move included
        t[i] = std::move(t[j]);
        if (i != j) {
          m[i] = m[j];
          m[j] = Model{};
        }
        break;
      }
      case 6: {  // move construction: the source becomes undefined
        Tensor<double> c(std::move(t[j]));
        const Model mc = m[j];
        m[j] = Model{};
        t[i] = std::move(c);
        m[i] = mc;
        if (c.defined() || c.size() != 0) what += ": a moved-from local is not undefined";
        break;
      }
      case 7: {  // view: fits, does not fit, or undefined
        const Index n = t[j].size();
        const Index offset = static_cast<Index>(rng.below(static_cast<std::uint64_t>(n) + 2));
        const Index count = n >= offset ? static_cast<Index>(rng.below(static_cast<std::uint64_t>(n - offset) + 2)) : 1;
        const Shape s = count == 0 ? Shape{0} : shape_with(count, rng);
        const bool fits = offset <= n && s.numel() <= n - offset;
        try {
          t[i] = t[j].view(offset, s);
          if (!m[j].store || !fits) what += ": view() did not throw";
          m[i] = Model{m[j].store, m[j].offset + offset, s};
        } catch (const ValueError&) {
          if (m[j].store) what += ": view() threw ValueError on a defined tensor";
        } catch (const ShapeError&) {
          if (fits) what += ": view() threw ShapeError on a range that fits";
        }
        break;
      }
      case 8: {  // reshaped
        const Index n = t[j].size();
        const Shape s = n > 0 ? shape_with(n, rng) : (rng.below(2) ? Shape{0, 3} : random_shape(rng));
        try {
          t[i] = t[j].reshaped(s);
          if (!m[j].store || s.numel() != n) what += ": reshaped() did not throw";
          m[i] = Model{m[j].store, m[j].offset, s};
        } catch (const ValueError&) {
          if (m[j].store) what += ": reshaped() threw ValueError on a defined tensor";
        } catch (const ShapeError&) {
          if (s.numel() == n) what += ": reshaped() threw ShapeError for the same count";
        }
        break;
      }
      case 9:  // fill: writes through every handle of the window
        t[i].fill(v);
        if (m[i].store)
          for (Index k = 0; k < m[i].shape.numel(); ++k) (*m[i].store)[static_cast<std::size_t>(m[i].offset + k)] = v;
        break;
      case 10:  // reset: this handle only
        t[i].reset();
        m[i] = Model{};
        break;
      case 11: {  // clone: a deep copy
        t[i] = t[j].clone();
        if (m[j].store) {
          Model c = fresh(m[j].shape, 0);
          for (Index k = 0; k < m[j].shape.numel(); ++k)
            (*c.store)[static_cast<std::size_t>(k)] = (*m[j].store)[static_cast<std::size_t>(m[j].offset + k)];
          m[i] = c;
        } else {
          m[i] = Model{};
        }
        break;
      }
      case 12: {  // copy_from, overlapping windows included
        const bool ok = m[i].store && m[j].store && m[i].shape == m[j].shape;
        try {
          t[i].copy_from(t[j]);
          if (!ok) what += ": copy_from() did not throw";
          std::vector<double> src;
          for (Index k = 0; k < m[j].shape.numel(); ++k) src.push_back((*m[j].store)[static_cast<std::size_t>(m[j].offset + k)]);
          for (Index k = 0; k < m[i].shape.numel(); ++k)
            (*m[i].store)[static_cast<std::size_t>(m[i].offset + k)] = src[static_cast<std::size_t>(k)];
        } catch (const ValueError&) {
          if (m[i].store && m[j].store) what += ": copy_from() threw ValueError on defined tensors";
        } catch (const ShapeError&) {
          if (ok) what += ": copy_from() threw ShapeError on equal shapes";
        }
        break;
      }
      case 13:  // one element written through operator[]
        if (t[i].size() > 0) {
          const Index k = static_cast<Index>(rng.below(static_cast<std::uint64_t>(t[i].size())));
          t[i][k] = v;
          (*m[i].store)[static_cast<std::size_t>(m[i].offset + k)] = v;
        }
        break;
      case 14:  // item() and at() need storage
        if (!t[i].defined()) {
          try {
            (void)t[i].item();
            what += ": item() on an undefined tensor did not throw";
          } catch (const ValueError&) {
          }
        } else if (t[i].size() == 1) {
          if (t[i].item() != (*m[i].store)[static_cast<std::size_t>(m[i].offset)]) what += ": item()";
        }
        break;
      case 15: {  // from()
        const Shape s = random_shape(rng);
        std::vector<double> vals(static_cast<std::size_t>(s.numel()));
        for (std::size_t k = 0; k < vals.size(); ++k) vals[k] = v + static_cast<double>(k);
        t[i] = Tensor<double>::from(s, vals);
        m[i] = Model{std::make_shared<std::vector<double>>(vals), 0, s};
        break;
      }
      default: {  // swap through moves
        Tensor<double> tmp = std::move(t[i]);
        t[i] = std::move(t[j]);
        t[j] = std::move(tmp);
        std::swap(m[i], m[j]);
        break;
      }
    }
    std::string bad = what.find(": ") != std::string::npos ? what : "";
    for (std::size_t a = 0; a < kSlots && bad.empty(); ++a) {
      const std::string v1 = violation(t[a], m[a]);
      if (!v1.empty()) bad = what + ": slot " + std::to_string(a) + ": " + v1;
      for (std::size_t b = a + 1; b < kSlots && bad.empty(); ++b) {
        const std::string v2 = sharing_violation(t[a], m[a], t[b], m[b]);
        if (!v2.empty()) bad = what + ": slots " + std::to_string(a) + ", " + std::to_string(b) + ": " + v2;
      }
    }
    if (!bad.empty()) {
      FAIL_CHECK("seed " << seed << ", step " << step << ", " << bad);
      return;
    }
  }
  SUCCEED("seed " << seed << ": " << steps << " steps");
}

// ---- 3. zero sizes: every primitive ---------------------------------------------------------------

// One base configuration of a primitive; the sweep derives variants with an empty dimension.
std::vector<test::AdCase> zero_size_cases() {
  using test::ad_case;
  std::vector<test::AdCase> cs;
  const auto unary = [&](const std::string& name, auto f) {
    cs.push_back(ad_case(name, name, {{Shape{2, 3}}}, f));
  };
  unary("exp", [](auto x) { return amari::exp(x[0]); });
  unary("log", [](auto x) { return amari::log(x[0]); });
  unary("tanh", [](auto x) { return amari::tanh(x[0]); });
  unary("sigmoid", [](auto x) { return amari::sigmoid(x[0]); });
  unary("relu", [](auto x) { return amari::relu(x[0]); });
  unary("softplus", [](auto x) { return amari::softplus(x[0]); });
  unary("square", [](auto x) { return amari::square(x[0]); });
  unary("sqrt", [](auto x) { return amari::sqrt(x[0]); });
  unary("gelu", [](auto x) { return amari::gelu(x[0]); });
  unary("affine", [](auto x) { return amari::affine(x[0], -1.5, 0.25); });
  unary("transpose", [](auto x) { return amari::transpose(x[0]); });
  unary("dropout", [](auto x) { return amari::dropout(x[0], 0.5, 42, 7); });
  unary("reshape", [](auto x) { return amari::reshape(x[0], Shape{x[0].shape().numel()}); });
  unary("reshape", [](auto x) { return amari::reshape(x[0], Shape{x[0].shape()[1], x[0].shape()[0]}); });
  unary("sum", [](auto x) { return amari::sum(x[0]); });
  unary("sum", [](auto x) { return amari::sum(x[0], 0); });
  unary("sum", [](auto x) { return amari::sum(x[0], 1, true); });
  unary("sum", [](auto x) { return amari::mean(x[0], 0); });
  for (int axis : {0, 1}) {
    unary("max", [axis](auto x) { return amari::max(x[0], axis); });
    unary("logsumexp", [axis](auto x) { return amari::logsumexp(x[0], axis); });
    unary("softmax", [axis](auto x) { return amari::softmax(x[0], axis); });
    unary("log_softmax", [axis](auto x) { return amari::log_softmax(x[0], axis); });
  }
  for (const char* name : {"add", "sub", "mul", "div"}) {
    const std::string n = name;
    const auto f = [n](auto x) {
      return n == "add" ? x[0] + x[1] : n == "sub" ? x[0] - x[1] : n == "mul" ? x[0] * x[1] : x[0] / x[1];
    };
    cs.push_back(ad_case(n, n + " row", {{Shape{2, 3}}, {Shape{3}}}, f));
    cs.push_back(ad_case(n, n + " rank 3", {{Shape{4, 1, 3}}, {Shape{2, 1}}}, f));
  }
  cs.push_back(ad_case("matmul", "matmul", {{Shape{2, 3}}, {Shape{3, 4}}},
                       [](auto x) { return amari::matmul(x[0], x[1]); }));
  cs.push_back(ad_case("matmul", "matmul b^T", {{Shape{2, 3}}, {Shape{4, 3}}},
                       [](auto x) { return amari::matmul(x[0], x[1], Trans::no, Trans::yes); }));
  cs.push_back(ad_case("linear", "linear", {{Shape{2, 3}}, {Shape{3, 4}}, {Shape{4}}},
                       [](auto x) { return amari::linear(x[0], x[1], x[2]); }));
  cs.push_back(ad_case("conv2d", "conv2d", {{Shape{3, 6, 5, 7}}, {Shape{2, 4, 7, 8}}, {Shape{8}}},
                       [](auto x) { return amari::conv2d(x[0], x[1], x[2], {.padding = {1, 0}}); }));
  cs.push_back(ad_case("conv2d", "conv2d no bias", {{Shape{3, 6, 5, 7}}, {Shape{2, 4, 7, 8}}},
                       [](auto x) { return amari::conv2d(x[0], x[1]); }));
  Pool2dOptions pool;
  pool.kernel = {2, 2};
  cs.push_back(ad_case("max_pool2d", "max_pool2d", {{Shape{2, 6, 5, 3}}},
                       [pool](auto x) { return amari::max_pool2d(x[0], pool); }));
  cs.push_back(ad_case("conv2d_relu_max_pool2d", "conv2d_relu_max_pool2d",
                       {{Shape{2, 6, 4, 3}}, {Shape{3, 3, 3, 16}}, {Shape{16}}}, [pool](auto x) {
                         return amari::conv2d_relu_max_pool2d(x[0], x[1], x[2], {.padding = {1, 1}}, pool);
                       }));
  cs.push_back(ad_case("avg_pool2d", "avg_pool2d", {{Shape{2, 6, 5, 3}}},
                       [pool](auto x) { return amari::avg_pool2d(x[0], pool); }));
  cs.push_back(ad_case("global_avg_pool2d", "global_avg_pool2d", {{Shape{2, 3, 4, 5}}},
                       [](auto x) { return amari::global_avg_pool2d(x[0]); }));
  cs.push_back(ad_case("layer_norm", "layer_norm", {{Shape{2, 3}}, {Shape{3}}, {Shape{3}}},
                       [](auto x) { return amari::layer_norm(x[0], x[1], x[2]); }));
  cs.push_back(ad_case("batch_norm", "batch_norm", {{Shape{4, 3}}, {Shape{3}}, {Shape{3}}},
                       [](auto x) { return amari::batch_norm(x[0], x[1], x[2]); }));
  cs.push_back(ad_case("batch_norm", "batch_norm images", {{Shape{2, 5, 4, 3}}, {Shape{3}}, {Shape{3}}},
                       [](auto x) { return amari::batch_norm(x[0], x[1], x[2]); }));
  cs.push_back(ad_case("embedding", "embedding", {{Shape{5, 3}}}, [](auto x) {
    return amari::embedding(x[0], std::vector<Index>{1, 4, 0, 2}, Shape{2, 2});
  }));
  cs.push_back(ad_case("embedding", "embedding of no index", {{Shape{5, 3}}},
                       [](auto x) { return amari::embedding(x[0], std::vector<Index>{}, Shape{0}); }));
  cs.push_back(ad_case("permute", "permute", {{Shape{2, 3, 4}}},
                       [](auto x) { return amari::permute(x[0], {2, 0, 1}); }));
  cs.push_back(ad_case("concat", "concat axis 0", {{Shape{2, 3}}, {Shape{4, 3}}},
                       [](auto x) { return amari::concat(x[0], x[1], 0); }));
  cs.push_back(ad_case("concat", "concat list axis 1", {{Shape{2, 3}}, {Shape{2, 4}}, {Shape{2, 5}}, {Shape{2, 6}}},
                       [](auto x) {
                         using V = std::remove_cvref_t<decltype(x[0])>;
                         return amari::concat(std::vector<V>(x.begin(), x.end()), 1);
                       }));
  cs.push_back(ad_case("slice", "slice", {{Shape{5, 3}}}, [](auto x) { return amari::slice(x[0], 0, 1, 3); }));
  cs.push_back(ad_case("slice", "slice to nothing", {{Shape{5, 3}}},
                       [](auto x) { return amari::slice(x[0], 0, 2, 2); }));
  return cs;
}

// Variants of `base` with an empty dimension: every occurrence of one extent set to 0 (keeps the
// relations between the inputs' shapes), and each single dimension of each input set to 0.
std::vector<std::vector<Shape>> zero_variants(const std::vector<Shape>& base) {
  std::set<std::vector<std::vector<Index>>> seen;
  std::vector<std::vector<Shape>> out;
  const auto add = [&](std::vector<std::vector<Index>> dims) {
    if (!seen.insert(dims).second) return;
    std::vector<Shape> shapes;
    for (const auto& d : dims) shapes.emplace_back(std::span<const Index>(d.data(), d.size()));
    out.push_back(shapes);
  };
  std::vector<std::vector<Index>> dims;
  std::set<Index> extents;
  for (const Shape& s : base) {
    dims.emplace_back(s.dims().begin(), s.dims().end());
    for (Index d : s.dims()) extents.insert(d);
  }
  for (Index e : extents) {
    auto d = dims;
    for (auto& v : d)
      for (Index& x : v)
        if (x == e) x = 0;
    add(d);
  }
  for (std::size_t i = 0; i < dims.size(); ++i) {
    for (std::size_t a = 0; a < dims[i].size(); ++a) {
      auto d = dims;
      d[i][a] = 0;
      add(d);
    }
  }
  return out;
}

std::string describe(const std::vector<Shape>& shapes) {
  std::string s;
  for (const Shape& x : shapes) s += (s.empty() ? "" : " ") + x.str();
  return s;
}

// Runs f and returns "ok" or the dynamic type of the amari::Error it threw; any other exception
// fails the test.
template <class F>
std::string outcome_of(F&& f) {
  try {
    f();
    return "ok";
  } catch (const Error& e) {
    return typeid(e).name();
  } catch (const std::exception& e) {
    FAIL_CHECK("not an amari::Error: " << e.what());
    return "foreign";
  }
}

// Plain, dual and tape evaluation of one variant: all refuse it with the same amari::Error type,
// or all return the same result, and the tape's vjp / jvp / hvp give tensors of the right shapes
// that satisfy the adjoint identity.
void check_zero_variant(const test::AdCase& c, const std::vector<Shape>& shapes) {
  INFO(c.label << " with inputs " << describe(shapes));
  test::Rng rng(7);
  std::vector<Tensor<double>> x, v;
  for (const Shape& s : shapes) {
    x.push_back(test::uniform_tensor<double>(s, rng, 0.5, 1.5));
    v.push_back(test::uniform_tensor<double>(s, rng));
  }
  Tensor<double> y;
  const std::string plain = outcome_of([&] { y = c.plain_d(x); });
  Dual<double> yd;
  const std::string dual = outcome_of([&] {
    std::vector<Dual<double>> xd;
    for (std::size_t i = 0; i < x.size(); ++i) xd.emplace_back(x[i], v[i]);
    yd = c.dual_d(xd);
  });
  Tape<double> tape;
  std::vector<Var<double>> xv;
  for (const auto& t : x) xv.push_back(tape.variable(t));
  Var<double> yv;
  const std::string var = outcome_of([&] { yv = c.var_d(xv); });
  CHECK(plain == dual);
  CHECK(plain == var);
  if (plain != "ok" || dual != "ok" || var != "ok") return;
  REQUIRE(yd.shape() == y.shape());
  REQUIRE(yv.shape() == y.shape());
  CHECK(same_bits(yd.primal(), y));
  CHECK(same_bits(yv.value(), y));
  const Var<double> outs[] = {yv};
  const Tensor<double> u = test::uniform_tensor<double>(y.shape(), rng);
  const Tensor<double> us[] = {u};
  const auto jv = tape.jvp(xv, v, outs);
  const auto xbar = tape.vjp(outs, us, xv);
  const auto hv = tape.hvp(outs, us, xv, v);
  REQUIRE(jv[0].shape() == y.shape());
  CHECK(close(jv[0], yd.tangent_or_zeros(), 1e-12));
  double lhs = test::dot(u, jv[0]), rhs = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    REQUIRE(xbar[i].shape() == shapes[i]);
    REQUIRE(hv[i].shape() == shapes[i]);
    rhs += test::dot(xbar[i], v[i]);
  }
  if (std::isfinite(lhs) && std::isfinite(rhs)) CHECK(std::fabs(lhs - rhs) <= 1e-10 * (1 + std::fabs(lhs)));
}

// ---- 4. aliasing helpers ---------------------------------------------------------------------------

// f(x, w) = sum(tanh(x w) * x w): non-linear in both, matmul makes every rule read whole tensors.
template <Value V>
V aliasing_function(const V& x, const V& w) {
  const V h = matmul(x, w);
  return sum(tanh(h) * h);
}

// ---- 6. a custom layer with declared fans ------------------------------------------------------

template <Real T>
class FanLayer final : public nn::Layer<T, FanLayer<T>> {
 public:
  FanLayer(nn::Init init, Index fan_in, Index fan_out) : init_(init), fan_in_(fan_in), fan_out_(fan_out) {}
  std::string describe() const override { return "FanLayer"; }
  void declare(std::vector<nn::ParamSpec>& out, const std::string& prefix) const override {
    out.push_back({prefix + "weight", Shape{3, 3}, init_, fan_in_, fan_out_});
  }
  template <Value V>
  V apply(const V& x, nn::ForwardContext<V>& p) const {
    return matmul(x, p.next());
  }

 private:
  nn::Init init_;
  Index fan_in_, fan_out_;
};

}  // namespace

// =================================================================================================
// 1. Tensor state and value semantics

TEST_CASE("tensor invariants: random sequences of construct, copy, move, view, reshape, assign, fill, reset keep every invariant and the sharing model",
          "[invariants][tensor]") {
  for (std::uint64_t seed : {1u, 2u, 3u}) run_tensor_state_machine(seed, 3000);
}

TEST_CASE("tensor invariants: a moved-from tensor equals a default-constructed one", "[invariants][tensor]") {
  Tensor<double> a = Tensor<double>::full(Shape{3, 4}, 2.0);
  const double* storage = a.data();
  Tensor<double> b(std::move(a));
  CHECK(b.data() == storage);
  CHECK(b.shape() == Shape{3, 4});
  for (const Tensor<double>* moved : {&a}) {
    CHECK_FALSE(moved->defined());
    CHECK(moved->size() == 0);
    CHECK(moved->shape() == Tensor<double>().shape());
    CHECK(moved->shape() == Shape::empty_vector());
    CHECK(moved->begin() == moved->end());
  }
  Tensor<double> c = Tensor<double>::full(Shape{5}, 1.0);
  c = std::move(b);
  CHECK_FALSE(b.defined());
  CHECK(b.size() == 0);
  CHECK(b.shape() == Shape::empty_vector());
  CHECK(c.data() == storage);
  // Self-move leaves the tensor as it was.
  Tensor<double>& alias = c;
  c = std::move(alias);
  CHECK(c.data() == storage);
  CHECK(c.shape() == Shape{3, 4});
  // reset() makes only this handle undefined.
  Tensor<double> d = c;
  d.reset();
  CHECK_FALSE(d.defined());
  CHECK(d.size() == 0);
  CHECK(c.defined());
  CHECK(c[11] == 2.0);
}

TEST_CASE("tensor invariants: members that need storage throw ValueError naming the member on an undefined tensor, the others see no elements",
          "[invariants][tensor]") {
  Tensor<double> u;
  const Tensor<double> other = Tensor<double>::full(Shape{0}, 1.0);
  CHECK_THAT(error_message<ValueError>([&] { (void)u.item(); }), Contains("Tensor::item"));
  CHECK_THAT(error_message<ValueError>([&] { (void)u.at(0); }), Contains("Tensor::at"));
  CHECK_THAT(error_message<ValueError>([&] { (void)u.reshaped(Shape{0}); }), Contains("Tensor::reshaped"));
  CHECK_THAT(error_message<ValueError>([&] { (void)u.view(0, Shape{0}); }), Contains("Tensor::view"));
  CHECK_THAT(error_message<ValueError>([&] { u.copy_from(other); }), Contains("Tensor::copy_from"));
  Tensor<double> dst(Shape{0});
  CHECK_THAT(error_message<ValueError>([&] { dst.copy_from(u); }), Contains("source"));
  CHECK(u.size() == 0);
  CHECK(u.to_vector().empty());
  CHECK_NOTHROW(u.fill(3.0));
  CHECK_FALSE(u.clone().defined());
  CHECK_FALSE(u.same_storage(Tensor<double>()));
  CHECK_FALSE(u.overlaps(other));
  // Helpers that take sizes from the tensor see nothing to read.
  CHECK(sum(Tensor<double>::full(Shape{2}, 1.0)).item() == 2.0);
  CHECK_THROWS_AS(sum(u), ValueError);
  CHECK_THROWS_AS(exp(u), ValueError);
}

// =================================================================================================
// 2. zero sizes

TEST_CASE("zero sizes: add of shapes (2^40, 0) and (0) returns a (2^40, 0) tensor at once in every mode",
          "[invariants][zero]") {
  const Index big = Index{1} << 40;
  const Tensor<double> a(Shape{big, 0}), b(Shape{0});
  const auto start = std::chrono::steady_clock::now();
  CHECK(add(a, b).shape() == Shape{big, 0});
  CHECK(add(b, a).shape() == Shape{big, 0});
  CHECK(sub(a, b).shape() == Shape{big, 0});
  CHECK(mul(b, a).shape() == Shape{big, 0});
  const Dual<double> yd = add(Dual<double>(a, a), Dual<double>(b, b));
  CHECK(yd.tangent().shape() == Shape{big, 0});
  Tape<double> tape;
  const Var<double> xa = tape.variable(a), xb = tape.variable(b);
  const Var<double> y = add(xa, xb);
  CHECK(y.shape() == Shape{big, 0});
  const Var<double> outs[] = {y};
  const Var<double> ins[] = {xa, xb};
  const Tensor<double> us[] = {Tensor<double>(Shape{big, 0})};
  const auto g = tape.vjp(outs, us, ins);  // b's adjoint sums over the 2^40 empty rows
  CHECK(g[0].shape() == Shape{big, 0});
  CHECK(g[1].shape() == Shape{0});
  const Tensor<double> ts[] = {a, b};
  CHECK(tape.jvp(ins, ts, outs)[0].shape() == Shape{big, 0});
  CHECK(tape.hvp(outs, us, ins, ts)[1].shape() == Shape{0});
  CHECK(seconds_since(start) < 2.0);
}

TEST_CASE("zero sizes: kernels on empty shapes whose other extents multiply past 2^63 finish at once with the right shapes",
          "[invariants][zero]") {
  // 2^40 + 1 does not wrap to 0 when squared modulo 2^64, so a loop over the product would run
  // 2^41 + 1 times; 2^62 * 2^62 overflows any signed product (UBSan reports it in the sanitized
  // build).
  const Index odd = (Index{1} << 40) + 1, huge = Index{1} << 62;
  const auto start = std::chrono::steady_clock::now();
  const Tensor<double> wide(Shape{0, huge, huge});
  CHECK(add(wide, Tensor<double>::full(Shape{1, 1, 1}, 1.0)).shape() == Shape{0, huge, huge});
  CHECK(mul(Tensor<double>(Shape{0, 1, huge}), wide).shape() == Shape{0, huge, huge});
  const Tensor<double> x(Shape{odd, odd, 5, 0});
  CHECK(sum(x, 2).shape() == Shape{odd, odd, 0});
  CHECK(sum(x, 2, true).shape() == Shape{odd, odd, 1, 0});
  CHECK(sum(x).item() == 0.0);
  CHECK(max(x, 2).shape() == Shape{odd, odd, 0});
  CHECK(logsumexp(x, 2).shape() == Shape{odd, odd, 0});
  const Tensor<double> r(Shape{odd, 0});
  CHECK(softmax(r, 1).shape() == Shape{odd, 0});
  CHECK(log_softmax(r, 1).shape() == Shape{odd, 0});
  CHECK(transpose(r).shape() == Shape{0, odd});
  CHECK(matmul(Tensor<double>(Shape{0, odd}), Tensor<double>(Shape{odd, 0})).shape() == Shape{0, 0});
  CHECK(exp(wide).shape() == wide.shape());
  // The VJP of the broadcast (unbroadcasting) over empty rows.
  Tape<double> tape;
  const Var<double> vr = tape.variable(r), vb = tape.variable(Tensor<double>(Shape{1, 0}));
  const Var<double> y = sum(softmax(vr + vb, 0));
  const Var<double> outs[] = {y};
  const Var<double> ins[] = {vr, vb};
  const Tensor<double> us[] = {Tensor<double>::scalar(1.0)};
  const auto g = tape.vjp(outs, us, ins);
  CHECK(g[0].shape() == Shape{odd, 0});
  CHECK(g[1].shape() == Shape{1, 0});
  CHECK(seconds_since(start) < 2.0);
}

TEST_CASE("zero sizes: a broadcast whose result would exceed 2^48 elements is a SizeError naming the op and both shapes",
          "[invariants][zero]") {
  const Index big = Index{1} << 30;
  const Tensor<double> a(Shape{big, 1, 0}), b(Shape{1, big, 0});
  CHECK(add(a, b).shape() == Shape{big, big, 0});  // empty: fine
  CHECK(kernels::broadcast_shapes("add", Shape{1 << 24, 1}, Shape{1, 1 << 24}).numel() == kMaxElements);
  const std::string msg =
      error_message<SizeError>([] { (void)kernels::broadcast_shapes("mul", Shape{big, 1}, Shape{1, big}); });
  CHECK_THAT(msg, Contains("mul") && Contains("(1073741824, 1)") && Contains("(1, 1073741824)"));
}

TEST_CASE("zero sizes: every primitive in autodiff/ops runs on inputs with an empty dimension or refuses them with the same amari::Error in every mode",
          "[invariants][zero]") {
  const auto cases = zero_size_cases();
  std::set<std::string> covered;
  int variants = 0;
  for (const auto& c : cases) {
    covered.insert(c.primitive);
    std::vector<Shape> base;
    for (const auto& in : c.inputs) base.push_back(in.shape);
    for (const auto& shapes : zero_variants(base)) {
      check_zero_variant(c, shapes);
      ++variants;
    }
  }
  CHECK(variants > 150);
  // Like the registry: a primitive file without a zero-size case fails here.
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(AMARI_SOURCE_DIR) / "autodiff/ops")) {
    if (entry.path().extension() != ".cpp") continue;
    INFO("primitive " << entry.path().stem().string());
    CHECK(covered.count(entry.path().stem().string()) == 1);
  }
}

// =================================================================================================
// 3. aliasing

TEST_CASE("aliasing: Tape::hvp_into with the result buffer equal to the tangent gives H v",
          "[invariants][aliasing]") {
  test::Rng rng(5);
  const Tensor<double> x0 = test::uniform_tensor<double>(Shape{3, 4}, rng);
  const Tensor<double> w0 = test::uniform_tensor<double>(Shape{4, 2}, rng);
  Tape<double> tape;
  const Var<double> x = tape.variable(x0), w = tape.variable(w0);
  const Var<double> loss = aliasing_function(x, w);
  const Var<double> outs[] = {loss};
  const Var<double> ins[] = {x, w};
  const Tensor<double> one[] = {Tensor<double>::scalar(1.0)};
  const Tensor<double> v[] = {test::uniform_tensor<double>(Shape{3, 4}, rng), test::uniform_tensor<double>(Shape{4, 2}, rng)};
  const auto expected = tape.hvp(outs, one, ins, v);
  // v <- H v in place, the pattern of a power iteration.
  std::vector<Tensor<double>> inout = {v[0].clone(), v[1].clone()};
  tape.hvp_into(outs, one, ins, inout, inout);
  CHECK(close(inout[0], expected[0], 1e-13));
  CHECK(close(inout[1], expected[1], 1e-13));
  // The result buffer is the variable's own value, which the tape saved for its rules.
  std::vector<Tensor<double>> results = {x0.clone(), Tensor<double>(Shape{4, 2})};
  Tape<double> tape2;
  const Var<double> x2 = tape2.variable(results[0]), w2 = tape2.variable(w0);
  const Var<double> loss2 = aliasing_function(x2, w2);
  const Var<double> outs2[] = {loss2};
  const Var<double> ins2[] = {x2, w2};
  tape2.hvp_into(outs2, one, ins2, v, results);
  CHECK(close(results[0], expected[0], 1e-13));
  CHECK(close(results[1], expected[1], 1e-13));
}

TEST_CASE("aliasing: Tape::vjp_into and jvp_into give the same results when a result buffer is a cotangent, a tangent or a saved value",
          "[invariants][aliasing]") {
  test::Rng rng(6);
  const Tensor<double> x0 = test::uniform_tensor<double>(Shape{3, 3}, rng);
  const Tensor<double> w0 = test::uniform_tensor<double>(Shape{3, 3}, rng);
  SECTION("vjp_into: the result is the cotangent of an output that is the input itself") {
    Tape<double> tape;
    const Var<double> x = tape.variable(x0), w = tape.variable(w0);
    const Var<double> y = matmul(x, w);
    const Var<double> outs[] = {y, x};
    const Var<double> ins[] = {x};
    const Tensor<double> u[] = {test::uniform_tensor<double>(Shape{3, 3}, rng), test::uniform_tensor<double>(Shape{3, 3}, rng)};
    const auto expected = tape.vjp(outs, u, ins);
    std::vector<Tensor<double>> cot = {u[0].clone(), u[1].clone()};
    std::vector<Tensor<double>> res = {cot[1]};  // shares the second cotangent's elements
    tape.vjp_into(outs, cot, ins, res);
    CHECK(close(res[0], expected[0], 1e-13));
    CHECK(close(cot[1], expected[0], 1e-13));
  }
  SECTION("vjp_into: the result is the value of the variable, saved by matmul") {
    Tape<double> tape;
    Tensor<double> buffer = x0.clone();
    const Var<double> x = tape.variable(buffer);
    const Var<double> loss = aliasing_function(x, x);  // x used twice: both rules read it
    const Var<double> outs[] = {loss};
    const Var<double> ins[] = {x};
    const Tensor<double> one[] = {Tensor<double>::scalar(1.0)};
    const auto expected = tape.vjp(outs, one, ins);
    Tensor<double> res[] = {buffer};
    tape.vjp_into(outs, one, ins, res);
    CHECK(close(buffer, expected[0], 1e-13));
  }
  SECTION("jvp_into: the output tangent buffer is the seed tangent, which a later record reads") {
    Tape<double> tape;
    const Var<double> x = tape.variable(x0), w = tape.variable(w0);
    const Var<double> y1 = tanh(matmul(x, w));
    const Var<double> y2 = x * y1;
    const Var<double> ins[] = {x};
    const Var<double> outs[] = {y1, y2};
    const Tensor<double> t[] = {test::uniform_tensor<double>(Shape{3, 3}, rng)};
    const auto expected = tape.jvp(ins, t, outs);
    const Tensor<double> seed = t[0].clone();
    std::vector<Tensor<double>> results = {seed, Tensor<double>(Shape{3, 3})};
    tape.jvp_into(ins, std::span<const Tensor<double>>(&seed, 1), outs, results);
    CHECK(close(results[0], expected[0], 1e-13));
    CHECK(close(results[1], expected[1], 1e-13));
  }
}

TEST_CASE("aliasing: result buffers that share elements but receive different results are a ValueError naming the function, and nothing is written",
          "[invariants][aliasing]") {
  test::Rng rng(8);
  Tape<double> tape;
  const Var<double> x = tape.variable(test::uniform_tensor<double>(Shape{4}, rng));
  const Var<double> w = tape.variable(test::uniform_tensor<double>(Shape{4}, rng));
  const Var<double> loss = sum(tanh(x * w));
  const Var<double> outs[] = {loss};
  const Var<double> ins[] = {x, w};
  const Tensor<double> one[] = {Tensor<double>::scalar(1.0)};
  Tensor<double> storage = Tensor<double>::full(Shape{7}, 9.0);
  std::vector<Tensor<double>> res = {storage.view(0, Shape{4}), storage.view(3, Shape{4})};
  CHECK_THAT(error_message<ValueError>([&] { tape.vjp_into(outs, one, ins, res); }),
             Contains("Tape::vjp_into") && Contains("result buffers 0 and 1"));
  const Tensor<double> tangents[] = {Tensor<double>::full(Shape{4}, 1.0), Tensor<double>::full(Shape{4}, 1.0)};
  CHECK_THAT(error_message<ValueError>([&] { tape.hvp_into(outs, one, ins, tangents, res); }),
             Contains("Tape::hvp_into"));
  for (Index i = 0; i < storage.size(); ++i) CHECK(storage[i] == 9.0);
  // The same buffer for the same input twice is fine: both receive the gradient.
  const Var<double> twice[] = {x, x};
  std::vector<Tensor<double>> same = {storage.view(0, Shape{4}), storage.view(0, Shape{4})};
  tape.vjp_into(outs, one, twice, same);
  const auto expected = tape.vjp(outs, one, twice);
  CHECK(close(same[0], expected[0], 1e-14));
}

TEMPLATE_TEST_CASE("aliasing: every head's mean, gradient, score and hessian_product give the same numbers when the output aliases an input",
                   "[invariants][aliasing]", float, double) {
  using T = TestType;
  const nn::SoftmaxCrossEntropy<T> softmax_head;
  const nn::SigmoidBernoulli<T> sigmoid_head;
  const nn::Gaussian<T> gaussian_head(0.7);
  const Shape s{4, 3};
  for (const nn::Head<T>* head : {static_cast<const nn::Head<T>*>(&softmax_head),
                                  static_cast<const nn::Head<T>*>(&sigmoid_head),
                                  static_cast<const nn::Head<T>*>(&gaussian_head)}) {
    INFO(head->name());
    test::Rng rng(9);
    const Tensor<T> z = test::uniform_tensor<T>(s, rng, -2, 2);
    const Tensor<T> y = head == &softmax_head ? nn::one_hot<T>({0, 2, 1, 2}, 3) : test::uniform_tensor<T>(s, rng, 0, 1);
    const Tensor<T> a = test::uniform_tensor<T>(s, rng);
    Tensor<T> ref_grad(s), ref_score(s), ref_hess(s), ref_mean(s);
    head->gradient(z, y, ref_grad);
    head->score(z, y, ref_score);
    head->hessian_product(z, a, ref_hess);
    head->mean(z, ref_mean);
    // An output equal to an input, or a window of the same storage shifted by one element.
    const auto aliased = [&](const Tensor<T>& input, auto&& call, const Tensor<T>& expected, const char* what) {
      INFO(what);
      Tensor<T> in_place = input.clone();
      call(in_place, in_place);
      CHECK(close(in_place, expected, 0));
      Tensor<T> storage(Shape{s.numel() + 1});
      Tensor<T> in = storage.view(0, s), out = storage.view(1, s);
      in.copy_from(input);
      call(in, out);
      CHECK(close(out, expected, 0));
      Tensor<T> in2 = storage.view(1, s), out2 = storage.view(0, s);
      in2.copy_from(input);
      call(in2, out2);
      CHECK(close(out2, expected, 0));
    };
    aliased(y, [&](const Tensor<T>& yy, Tensor<T>& out) { head->gradient(z, yy, out); }, ref_grad, "gradient, out = targets");
    aliased(z, [&](const Tensor<T>& zz, Tensor<T>& out) { head->gradient(zz, y, out); }, ref_grad, "gradient, out = logits");
    aliased(y, [&](const Tensor<T>& yy, Tensor<T>& out) { head->score(z, yy, out); }, ref_score, "score, out = targets");
    aliased(z, [&](const Tensor<T>& zz, Tensor<T>& out) { head->score(zz, y, out); }, ref_score, "score, out = logits");
    aliased(a, [&](const Tensor<T>& aa, Tensor<T>& out) { head->hessian_product(z, aa, out); }, ref_hess, "hessian_product, out = direction");
    aliased(z, [&](const Tensor<T>& zz, Tensor<T>& out) { head->hessian_product(zz, a, out); }, ref_hess, "hessian_product, out = logits");
    aliased(z, [&](const Tensor<T>& zz, Tensor<T>& out) { head->mean(zz, out); }, ref_mean, "mean, out = logits");
  }
}

// =================================================================================================
// 4. settings validated in the precision of use, and guards on what an optimizer writes

TEST_CASE("optimizer options: values fine in double but out of range once rounded to float are ValueErrors naming the option",
          "[invariants][optim]") {
  using nn::Adam;
  using nn::Sgd;
  using E = ValueError;
  CHECK_THAT(error_message<E>([] { Sgd<float>({.learning_rate = 1e39}); }), Contains("learning_rate") && Contains("float"));
  CHECK_NOTHROW(Sgd<double>({.learning_rate = 1e39}));
  CHECK_THAT(error_message<E>([] { Sgd<float>({.learning_rate = 1e-50}); }), Contains("learning_rate"));
  CHECK_NOTHROW(Sgd<float>({.learning_rate = 0}));
  CHECK_THAT(error_message<E>([] { Sgd<float>({.momentum = 1 - 1e-12}); }), Contains("momentum"));
  CHECK_NOTHROW(Sgd<double>({.momentum = 1 - 1e-12}));
  CHECK_THAT(error_message<E>([] { Sgd<float>({.weight_decay = 1e39}); }), Contains("weight_decay"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.epsilon = 1e-50}); }), Contains("epsilon") && Contains("1e-50"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.epsilon = 1e-40}); }), Contains("epsilon"));  // subnormal
  CHECK_NOTHROW(Adam<double>({.epsilon = 1e-50}));
  CHECK_THAT(error_message<E>([] { Adam<float>({.beta2 = 1 - 1e-10}); }), Contains("beta2"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.beta1 = 1 - 1e-10}); }), Contains("beta1"));
  CHECK_THAT(error_message<E>([] { Adam<float>({.learning_rate = 1e39}); }), Contains("learning_rate"));
  Adam<float> adam;
  CHECK_THAT(error_message<E>([&] { adam.set_learning_rate(1e39); }), Contains("learning_rate"));
  CHECK(adam.learning_rate() == 1e-3);
  Sgd<float> sgd;
  CHECK_THROWS_AS(sgd.set_learning_rate(1e-60), E);
  CHECK(sgd.learning_rate() == 0.01);
}

TEST_CASE("Gaussian head: a sigma whose 1 / sigma^2 overflows or underflows in T is a ValueError naming sigma and T",
          "[invariants][heads]") {
  CHECK_THAT(error_message<ValueError>([] { nn::Gaussian<double>(1e-200); }), Contains("sigma") && Contains("float64"));
  CHECK_THAT(error_message<ValueError>([] { nn::Gaussian<float>(1e-20); }), Contains("sigma") && Contains("float32"));
  CHECK_THROWS_AS(nn::Gaussian<float>(1e19), ValueError);   // 1 / sigma^2 below float's normal range
  CHECK_THROWS_AS(nn::Gaussian<double>(1e160), ValueError);
  CHECK_NOTHROW(nn::Gaussian<double>(1e-20));
  CHECK_NOTHROW(nn::Gaussian<float>(1e-19));
  CHECK_NOTHROW(nn::Gaussian<float>(1e9));
  // What the refused sigmas would have produced: an infinite curvature.
  const nn::Gaussian<float> ok(1e-19f);
  Tensor<float> out(Shape{1, 1});
  ok.hessian_product(Tensor<float>::full(Shape{1, 1}, 0.f), Tensor<float>::full(Shape{1, 1}, 1.f), out);
  CHECK(std::isfinite(out[0]));
}

TEST_CASE("ParamSpec: xavier_uniform or he_normal with zero fans is a ValueError naming the parameter, never NaN weights",
          "[invariants][module]") {
  using nn::Init;
  using nn::ParamSpec;
  CHECK_THAT(error_message<ValueError>([] { ParamSpec("w", Shape{3, 4}, Init::xavier_uniform); }),
             Contains("\"w\"") && Contains("xavier_uniform"));
  CHECK_THAT(error_message<ValueError>([] { ParamSpec("v", Shape{3}, Init::he_normal, 0, 5); }),
             Contains("\"v\"") && Contains("he_normal"));
  CHECK_THROWS_AS(ParamSpec("n", Shape{2}, Init::zeros, -1, 0), ValueError);
  CHECK_NOTHROW(ParamSpec("w", Shape{3, 4}, Init::xavier_uniform, 3, 4));
  CHECK_NOTHROW(ParamSpec("e", Shape{0, 4}, Init::xavier_uniform));  // nothing to draw
  CHECK_NOTHROW(ParamSpec("b", Shape{4}, Init::torch_uniform));       // bound 0: zeros
  // A custom layer declaring such a parameter fails when the model is built, naming it.
  const auto bad = std::make_shared<FanLayer<float>>(Init::xavier_uniform, 0, 0);
  CHECK_THAT(error_message<ValueError>([&] { nn::Model<float> m(bad); }), Contains("weight"));
  const auto good = std::make_shared<FanLayer<float>>(Init::he_normal, 3, 3);
  nn::Model<float> m(good);
  for (Index i = 0; i < m.parameters().size(); ++i) CHECK(std::isfinite(m.parameters()[i]));
}

TEMPLATE_TEST_CASE("optimizers: an update that would overflow a parameter or the state is a ValueError and leaves parameters, state and step count unchanged",
                   "[invariants][optim]", float, double) {
  using T = TestType;
  constexpr T big = std::numeric_limits<T>::max() / 2;
  const nn::SgdOptions sgd_variants[] = {
      {.learning_rate = 4},
      {.learning_rate = 4, .weight_decay = 0.5},
      {.learning_rate = 4, .momentum = 0.9},
      {.learning_rate = 4, .momentum = 0.9, .nesterov = true, .weight_decay = 0.1},
  };
  for (const auto& o : sgd_variants) {
    INFO(nn::Sgd<T>(o).describe());
    for (int first : {1, 0}) {  // a refused first step, or a refused later step
      INFO((first ? "first step" : "second step"));
      test::Rng rng(11);
      nn::Sgd<T> sgd(o), twin(o);
      Tensor<T> p = test::uniform_tensor<T>(Shape{37}, rng), q = p.clone();
      const Tensor<T> g0 = test::uniform_tensor<T>(Shape{37}, rng);
      if (!first) {
        sgd.step(p, g0);
        twin.step(q, g0);
      }
      p[21] = -big;
      q[21] = -big;
      Tensor<T> g = test::uniform_tensor<T>(Shape{37}, rng);
      g[21] = big;  // finite, but p - lr g overflows
      const Tensor<T> p_before = p.clone();
      const Tensor<T> v_before = sgd.velocity().clone();
      CHECK_THAT(error_message<ValueError>([&] { sgd.step(p, g); }), Contains("Sgd::step") && Contains("21"));
      CHECK(same_bits(p, p_before));
      CHECK(sgd.velocity().defined() == v_before.defined());
      if (v_before.defined()) CHECK(same_bits(sgd.velocity(), v_before));
      CHECK(sgd.steps() == (first ? 0 : 1));
      // The next step gives what it would have given without the refused one.
      g[21] = 1;
      sgd.step(p, g);
      twin.step(q, g);
      CHECK(same_bits(p, q));
    }
  }
  const nn::AdamOptions adam_variants[] = {
      {},
      {.learning_rate = 0.01, .weight_decay = 0.1},
      {.learning_rate = 0.01, .weight_decay = 0.1, .decoupled_weight_decay = true},
  };
  for (const auto& o : adam_variants) {
    INFO(nn::Adam<T>(o).describe());
    for (int first : {1, 0}) {
      INFO((first ? "first step" : "second step"));
      test::Rng rng(12);
      nn::Adam<T> adam(o), twin(o);
      Tensor<T> p = test::uniform_tensor<T>(Shape{37}, rng), q = p.clone();
      const Tensor<T> g0 = test::uniform_tensor<T>(Shape{37}, rng);
      if (!first) {
        adam.step(p, g0);
        twin.step(q, g0);
      }
      Tensor<T> g = test::uniform_tensor<T>(Shape{37}, rng);
      g[34] = std::sqrt(big) * 4;  // finite, but g^2 overflows the second moment
      const Tensor<T> p_before = p.clone();
      const Tensor<T> m_before = adam.first_moment().clone(), v_before = adam.second_moment().clone();
      CHECK_THAT(error_message<ValueError>([&] { adam.step(p, g); }),
                 Contains("Adam::step") && Contains("second moment 34"));
      CHECK(same_bits(p, p_before));
      CHECK(adam.first_moment().defined() == m_before.defined());
      if (m_before.defined()) {
        CHECK(same_bits(adam.first_moment(), m_before));
        CHECK(same_bits(adam.second_moment(), v_before));
      }
      CHECK(adam.steps() == (first ? 0 : 1));
      g[34] = 1;
      adam.step(p, g);
      twin.step(q, g);
      CHECK(same_bits(p, q));
    }
  }
  // A huge learning rate that pushes a large parameter past the largest finite value: the first
  // step moves each parameter by about lr = max / 200.
  constexpr T kMax = std::numeric_limits<T>::max();
  nn::Adam<T> adam({.learning_rate = static_cast<double>(kMax / 200)});
  Tensor<T> p = Tensor<T>::full(Shape{5}, T(1));
  p[2] = kMax * T(0.999);
  Tensor<T> g = Tensor<T>::full(Shape{5}, T(-1));
  const Tensor<T> before = p.clone();
  CHECK_THAT(error_message<ValueError>([&] { adam.step(p, g); }), Contains("parameter 2"));
  CHECK(same_bits(p, before));
  CHECK_FALSE(adam.first_moment().defined());
  // A step whose size the cheap screen cannot bound (|lr m| / epsilon is far beyond max) but that
  // stays finite is taken: the first step moves each parameter by about lr.
  nn::Adam<T> bold({.learning_rate = static_cast<double>(kMax / 1000)});
  Tensor<T> q = Tensor<T>::full(Shape{5}, T(1));
  bold.step(q, g);
  for (Index i = 0; i < q.size(); ++i) CHECK(q[i] > kMax / 2000);
  CHECK(bold.steps() == 1);
}

TEST_CASE("optimizers: a copy is a deep snapshot that later steps of the original do not change",
          "[invariants][optim]") {
  nn::Adam<double> adam({.learning_rate = 0.1});
  Tensor<double> p = Tensor<double>::full(Shape{4}, 1.0);
  const Tensor<double> g = Tensor<double>::full(Shape{4}, 0.5);
  adam.step(p, g);
  const nn::Adam<double> snapshot = adam;
  const Tensor<double> m = snapshot.first_moment().clone();
  adam.step(p, g);
  CHECK(same_bits(snapshot.first_moment(), m));
  CHECK(snapshot.steps() == 1);
  nn::Sgd<double> sgd({.momentum = 0.9});
  sgd.step(p, g);
  nn::Sgd<double> sgd_copy(sgd);
  sgd.step(p, g);
  CHECK_FALSE(sgd_copy.velocity().same_storage(sgd.velocity()));
  CHECK(sgd_copy.velocity()[0] == 0.5);
}

// =================================================================================================
// 5. datasets

TEST_CASE("Dataset: more labels than rows is refused at construction, and consumers re-check a dataset changed afterwards",
          "[invariants][dataset]") {
  const Tensor<float> x = Tensor<float>::full(Shape{2, 3}, 1.f);
  CHECK_THAT(error_message<ShapeError>([&] { (void)nn::Dataset<float>{x, {0, 1, 2}, 3}; }), Contains("3 labels"));
  CHECK_THROWS_AS((nn::Dataset<float>{x, {0, 5}, 3}), ValueError);
  CHECK_THROWS_AS((nn::Dataset<float>{Tensor<float>(), {}, 3}), ShapeError);
  CHECK_THROWS_AS((nn::Dataset<float>{x, {0, 1}, 0}), ValueError);
  const nn::Dataset<float> empty;
  CHECK(empty.size() == 0);
  CHECK(empty.num_features() == 0);
  CHECK_NOTHROW(empty.check("test"));
  // Changed after construction: every consumer refuses it before reading.
  nn::Dataset<float> d{x, {0, 1}, 3};
  d.labels.push_back(2);
  CHECK_THAT(error_message<ShapeError>([&] { nn::Standardizer<float>::fit(d); }), Contains("Standardizer::fit"));
  CHECK_THROWS_AS(nn::Batches<float>(d, 1, 0, 0), ShapeError);
  CHECK_THROWS_AS(nn::take(d, 1), ShapeError);
  CHECK_THROWS_AS(nn::class_counts(d), ShapeError);
  const auto s = nn::Standardizer<float>::fit(nn::Dataset<float>{x, {0, 1}, 3});
  CHECK_THROWS_AS(s.apply(d), ShapeError);
}

TEMPLATE_TEST_CASE("Standardizer: a NaN or infinite training value is a ValueError naming the column and row, never NaN in a clean test set",
                   "[invariants][dataset]", float, double) {
  using T = TestType;
  for (nn::Standardization mode : {nn::Standardization::per_feature, nn::Standardization::global}) {
    for (T bad : {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity()}) {
      Tensor<T> x = Tensor<T>::from(Shape{3, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
      x.at(1, 2) = bad;
      const nn::Dataset<T> train{x, {0, 1, 0}, 2};
      const std::string msg = error_message<ValueError>([&] { nn::Standardizer<T>::fit(train, mode); });
      CHECK_THAT(msg, Contains("column 2") && Contains("row 1"));
    }
  }
  // Values whose squares overflow (double; float data squares fine in double): the column is
  // named even though every value is finite.
  if constexpr (std::is_same_v<T, double>) {
    Tensor<T> x = Tensor<T>::from(Shape{2, 2}, {1, std::numeric_limits<T>::max(), 2, -std::numeric_limits<T>::max()});
    const nn::Dataset<T> train{x, {0, 1}, 2};
    CHECK_THAT(error_message<ValueError>([&] { nn::Standardizer<T>::fit(train); }), Contains("column 1"));
  }
  // A clean training set still standardizes a clean test set to finite values.
  const nn::Dataset<T> clean{Tensor<T>::from(Shape{2, 2}, {1, 2, 3, 5}), {0, 1}, 2};
  const auto s = nn::Standardizer<T>::fit(clean);
  const Tensor<T> out = s.apply(Tensor<T>::from(Shape{1, 2}, {2, 3}));
  CHECK(std::isfinite(out[0]));
  CHECK(std::isfinite(out[1]));
}

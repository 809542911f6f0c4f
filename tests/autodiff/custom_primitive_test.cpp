// User-defined primitives (autodiff/custom_primitive.hpp) and the public rule checker
// (autodiff/check_rules.hpp): ops defined with the public API run in all three modes and pass
// check_rules; an op with one wrong rule fails it, and the report names the check that caught it;
// every check check_rules runs fails on some deliberately broken function.
#include <cmath>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/autodiff/check_rules.hpp>
#include <amari/autodiff/custom_primitive.hpp>
#include <amari/autodiff/ops/primitive.hpp>  // internal: the built-in primitives' rule convention
#include <amari/autodiff/tape_print.hpp>

#include "support/ad_check.hpp"
#include "support/random.hpp"

using namespace amari;
using Catch::Matchers::Contains;

namespace {

// ---- sin, by its scalar rules, and copies with one rule wrong -----------------------------------

struct SinRules {
  static constexpr const char* name = "sin";
  template <class T>
  T primal(T x) const {
    return std::sin(x);
  }
  template <class T>
  T jvp(T x, T, T dx) const {
    return std::cos(x) * dx;
  }
  template <class T>
  T vjp(T x, T, T ybar) const {
    return std::cos(x) * ybar;
  }
  template <class T>
  T vjp_tangent(T x, T, T dx, T, T ybar) const {
    return -std::sin(x) * dx * ybar;
  }
};
struct SinWrongJvp : SinRules {
  template <class T>
  T jvp(T x, T, T dx) const {
    return -std::cos(x) * dx;
  }
};
struct SinWrongVjp : SinRules {
  template <class T>
  T vjp(T x, T, T ybar) const {
    return -std::cos(x) * ybar;
  }
};
struct SinWrongSecondOrder : SinRules {
  template <class T>
  T vjp_tangent(T x, T, T dx, T, T ybar) const {
    return std::sin(x) * dx * ybar;
  }
};
// Wrong in float only: the float-vs-double checks must see it.
template <class T>
constexpr T float_error(double e) {
  return std::is_same_v<T, float> ? T(e) : T(0);
}
struct SinFloatPrimal : SinRules {
  template <class T>
  T primal(T x) const {
    return std::sin(x) + float_error<T>(1e-3);
  }
};
struct SinFloatJvp : SinRules {
  template <class T>
  T jvp(T x, T, T dx) const {
    return (std::cos(x) + float_error<T>(1e-2)) * dx;
  }
};
struct SinFloatVjp : SinRules {
  template <class T>
  T vjp(T x, T, T ybar) const {
    return (std::cos(x) + float_error<T>(1e-2)) * ybar;
  }
};
struct SinFloatSecondOrder : SinRules {
  template <class T>
  T vjp_tangent(T x, T, T dx, T, T ybar) const {
    return (-std::sin(x) + float_error<T>(1e-2)) * dx * ybar;
  }
};

template <class Rules>
auto unary(const Rules& rules) {
  return [rules](auto x) { return custom::elementwise(rules, x[0]); };
}

// ---- matvec: two inputs of different shapes, by tensor rules ------------------------------------

// y = A x for A (m, n) and x (n). Bilinear: the second-order rule is the VJP rule with one tangent
// in place of its input.
struct MatVec {
  static constexpr const char* name = "matvec";
  static constexpr int arity = 2;

  Shape output_shape(const Shape& a, const Shape& x) const {
    if (a.rank() != 2 || x.rank() != 1 || a[1] != x[0]) {
      throw ShapeError("matvec: expected A (m, n) and x (n), got " + a.str() + " and " + x.str());
    }
    return Shape{a[0]};
  }
  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& x, Tensor<T>& y) const {
    y.fill(T(0));
    add_ax(a, x, y);
  }
  // dy = dA x + A dx
  template <Real T>
  void jvp(const custom::Saved<T, 2>& s, const Tensor<T>* da, const Tensor<T>* dx,
           Tensor<T>& dy) const {
    dy.fill(T(0));
    if (da) add_ax(*da, s.x[1], dy);
    if (dx) add_ax(s.x[0], *dx, dy);
  }
  // Abar += ybar x^T, xbar += A^T ybar
  template <Real T>
  void vjp(const custom::Saved<T, 2>& s, const Tensor<T>& ybar, Tensor<T>* abar,
           Tensor<T>* xbar) const {
    if (abar) add_outer(ybar, s.x[1], *abar);
    if (xbar) add_aty(s.x[0], ybar, *xbar);
  }
  // Abar_dot += ybar dx^T, xbar_dot += dA^T ybar
  template <Real T>
  void vjp_tangent(const custom::Saved<T, 2>&, const Tensor<T>* da, const Tensor<T>* dx,
                   const Tensor<T>& /*dy*/, const Tensor<T>& ybar, Tensor<T>* abar_dot,
                   Tensor<T>* xbar_dot) const {
    if (abar_dot && dx) add_outer(ybar, *dx, *abar_dot);
    if (xbar_dot && da) add_aty(*da, ybar, *xbar_dot);
  }

  // y += s A x
  template <Real T>
  static void add_ax(const Tensor<T>& a, const Tensor<T>& x, Tensor<T>& y, T s = T(1)) {
    const Index m = a.dim(0), n = a.dim(1);
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) y[i] += s * a[i * n + j] * x[j];
  }
  // x += s A^T y
  template <Real T>
  static void add_aty(const Tensor<T>& a, const Tensor<T>& y, Tensor<T>& x, T s = T(1)) {
    const Index m = a.dim(0), n = a.dim(1);
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) x[j] += s * a[i * n + j] * y[i];
  }
  // A += y x^T
  template <Real T>
  static void add_outer(const Tensor<T>& y, const Tensor<T>& x, Tensor<T>& a) {
    const Index m = y.size(), n = x.size();
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) a[i * n + j] += y[i] * x[j];
  }
};

// A rule written as amari's built-in primitives are (autodiff/ops/primitive.hpp), told which adjoint
// buffers are fresh, that adds to them anyway: the NaN-filled buffers of check_rules keep NaN. (A
// user primitive's rule always adds; the tape zero-fills fresh buffers for it.)
struct SinAddsToFresh {
  static constexpr const char* name = "sin_adds_to_fresh";
  static constexpr int arity = 1;
  static constexpr unsigned saves = save::x0;
  Shape output_shape(const Shape& x) const { return x; }
  template <Real T>
  void primal(const Tensor<T>& x, Tensor<T>& y) const {
    for (Index i = 0; i < y.size(); ++i) y[i] = std::sin(x[i]);
  }
  template <Real T>
  void jvp(const detail::Saved<T, 1>& s, const Tensor<T>& dx, Tensor<T>& dy) const {
    for (Index i = 0; i < dy.size(); ++i) dy[i] = std::cos(s.x[0][i]) * dx[i];
  }
  template <Real T>
  void vjp(const detail::Saved<T, 1>& s, const Tensor<T>& ybar, Tensor<T>& xbar, detail::Overwrite) const {
    for (Index i = 0; i < xbar.size(); ++i) xbar[i] += std::cos(s.x[0][i]) * ybar[i];
  }
  template <Real T>
  void vjp_tangent(const detail::Saved<T, 1>& s, const Tensor<T>& dx, const Tensor<T>&,
                   const Tensor<T>& ybar, Tensor<T>& xbar_dot) const {
    for (Index i = 0; i < xbar_dot.size(); ++i) xbar_dot[i] -= std::sin(s.x[0][i]) * dx[i] * ybar[i];
  }
};

// Deliberate mistakes a matvec can make; each shows in one check of check_rules.
enum class Bug {
  constant_a_jvp,
  constant_a_vjp,
  constant_a_second_order,
  asymmetric,
  overwrites_abar,
  overwrites_abar_dot
};

struct BrokenMatVec : MatVec {
  Bug bug;

  // The A x part flips sign when A is a constant.
  template <Real T>
  void jvp(const custom::Saved<T, 2>& s, const Tensor<T>* da, const Tensor<T>* dx,
           Tensor<T>& dy) const {
    MatVec::jvp(s, da, dx, dy);
    if (bug == Bug::constant_a_jvp && !da && dx) add_ax(s.x[0], *dx, dy, T(-2));
  }
  // xbar flips sign when Abar is not wanted.
  template <Real T>
  void vjp(const custom::Saved<T, 2>& s, const Tensor<T>& ybar, Tensor<T>* abar,
           Tensor<T>* xbar) const {
    if (bug == Bug::overwrites_abar && abar) abar->fill(T(0));  // = instead of +=
    MatVec::vjp(s, ybar, abar, xbar);
    if (bug == Bug::constant_a_vjp && !abar && xbar) add_aty(s.x[0], ybar, *xbar, T(-2));
  }
  // A spurious term when A is a constant, or the dA^T ybar term doubled (so that
  // <w, H v> != <v, H w>).
  template <Real T>
  void vjp_tangent(const custom::Saved<T, 2>& s, const Tensor<T>* da, const Tensor<T>* dx,
                   const Tensor<T>& dy, const Tensor<T>& ybar, Tensor<T>* abar_dot,
                   Tensor<T>* xbar_dot) const {
    if (bug == Bug::overwrites_abar_dot && abar_dot) abar_dot->fill(T(0));  // = instead of +=
    MatVec::vjp_tangent(s, da, dx, dy, ybar, abar_dot, xbar_dot);
    if (bug == Bug::constant_a_second_order && !da && xbar_dot) add_aty(s.x[0], ybar, *xbar_dot);
    if (bug == Bug::asymmetric && da && xbar_dot) add_aty(*da, ybar, *xbar_dot);
  }
};

auto matvec() {
  return [](auto x) { return custom::apply(MatVec{}, x[0], x[1]); };
}
auto broken_matvec(Bug bug) {
  return [bug](auto x) { return custom::apply(BrokenMatVec{{}, bug}, x[0], x[1]); };
}
const std::vector<InputSpec> kMatVecInputs = {{Shape{3, 4}}, {Shape{4}}};

// ---- a linear op of two inputs, with the default output shape: y = a + 2 b ----------------------

struct APlus2B {
  static constexpr const char* name = "a_plus_2b";
  static constexpr int arity = 2;
  static constexpr bool linear = true;  // so no vjp_tangent

  template <Real T>
  void primal(const Tensor<T>& a, const Tensor<T>& b, Tensor<T>& y) const {
    for (Index i = 0; i < y.size(); ++i) y[i] = a[i] + 2 * b[i];
  }
  template <Real T>
  void jvp(const custom::Saved<T, 2>&, const Tensor<T>* da, const Tensor<T>* db,
           Tensor<T>& dy) const {
    for (Index i = 0; i < dy.size(); ++i)
      dy[i] = (da ? (*da)[i] : T(0)) + (db ? 2 * (*db)[i] : T(0));
  }
  template <Real T>
  void vjp(const custom::Saved<T, 2>&, const Tensor<T>& ybar, Tensor<T>* abar,
           Tensor<T>* bbar) const {
    for (Index i = 0; i < ybar.size(); ++i) {
      if (abar) (*abar)[i] += ybar[i];
      if (bbar) (*bbar)[i] += 2 * ybar[i];
    }
  }
};

bool failed(const CheckReport& r, const std::string& name_start) {
  for (const auto& n : r.failed())
    if (n.rfind(name_start, 0) == 0) return true;
  return false;
}

// A check's name without the input it concerns: "... (input 1 alone, ...)" -> "...".
std::string kind_of(const std::string& name) {
  return name.substr(0, name.find(" (input "));
}

}  // namespace

TEST_CASE("custom sin runs on Tensor, Dual and Var and matches sin, cos and -sin",
          "[autodiff][custom]") {
  test::Rng rng(3);
  const Tensor<double> x = test::uniform_tensor<double>(Shape{2, 3}, rng, -2, 2);
  const Tensor<double> v = test::uniform_tensor<double>(Shape{2, 3}, rng);
  auto f = [](const auto& t) { return sum(custom::elementwise(SinRules{}, t)); };
  const Tensor<double> y = custom::elementwise(SinRules{}, x);
  const auto [fx, jv] = jvp(f, x, v);
  const Tensor<double> g = grad(f, x);
  const Tensor<double> hv = hvp(f, x, v);
  double sum_sin = 0, cos_v = 0;
  for (Index i = 0; i < x.size(); ++i) {
    CHECK(y[i] == std::sin(x[i]));
    CHECK(g[i] == Approx(std::cos(x[i])).epsilon(1e-15));
    CHECK(hv[i] == Approx(-std::sin(x[i]) * v[i]).epsilon(1e-14));
    sum_sin += std::sin(x[i]);
    cos_v += std::cos(x[i]) * v[i];
  }
  CHECK(fx.item() == Approx(sum_sin).epsilon(1e-14));
  CHECK(jv.item() == Approx(cos_v).epsilon(1e-14));
  const Tensor<float> yf = custom::elementwise(SinRules{}, test::convert<float>(x));
  CHECK(yf[0] == std::sin(static_cast<float>(x[0])));
}

TEST_CASE("custom primitives pass check_rules: sin, a two-input matvec and a linear op",
          "[autodiff][custom]") {
  const CheckReport sin_report = check_rules("sin", unary(SinRules{}), {{Shape{3, 4}}});
  INFO(sin_report.str());
  CHECK(sin_report.ok());
  CHECK(sin_report.checks.size() == 17);  // 14 + 3 per input

  const CheckReport mv = check_rules("matvec", matvec(), kMatVecInputs);
  INFO(mv.str());
  CHECK(mv.ok());
  CHECK(mv.checks.size() == 26);  // 14 + 3 per input + 3 per input alone

  const CheckReport lin =
      check_rules("a_plus_2b", [](auto x) { return custom::apply(APlus2B{}, x[0], x[1]); },
                  {{Shape{2, 5}}, {Shape{2, 5}}});
  INFO(lin.str());
  CHECK(lin.ok());

  // Custom and built-in ops compose: the checks run on the whole function.
  const CheckReport mixed = check_rules(
      "tanh(matvec(A, sin x))",
      [](auto x) {
        return tanh(custom::apply(MatVec{}, x[0], custom::elementwise(SinRules{}, x[1])));
      },
      kMatVecInputs);
  INFO(mixed.str());
  CHECK(mixed.ok());
}

TEST_CASE("the expect_ad registry helper accepts custom primitives and their error paths",
          "[autodiff][custom]") {
  const auto sin_case =
      test::ad_case("sin", "custom sin (2, 3)", {{Shape{2, 3}}}, unary(SinRules{}));
  test::expect_ad(sin_case);
  test::expect_errors(sin_case);
  const auto mv_case = test::ad_case("matvec", "custom matvec", {{Shape{3, 4}}, {Shape{4}}},
                                     matvec(), {{Shape{3, 4}, Shape{5}}, {Shape{4}, Shape{4}}});
  test::expect_ad(mv_case);
  test::expect_errors(mv_case);
  // Without output_shape, inputs of different shapes are refused with both shapes named.
  const auto lin_case = test::ad_case("a_plus_2b", "custom a_plus_2b", {{Shape{3}}, {Shape{3}}},
                                      [](auto x) { return custom::apply(APlus2B{}, x[0], x[1]); },
                                      {{Shape{3, 4}, Shape{4}}});
  test::expect_ad(lin_case);
  test::expect_errors(lin_case);
}

TEST_CASE("a wrong VJP rule of sin fails the adjoint identity and the VJP finite-difference check",
          "[autodiff][custom]") {
  const CheckReport r =
      check_rules("sin with -cos in its VJP", unary(SinWrongVjp{}), {{Shape{3, 4}}});
  INFO(r.str());
  CHECK_FALSE(r.ok());
  CHECK(failed(r, "VJP: adjoint identity"));
  CHECK(failed(r, "VJP: <J^T u, w> vs finite differences"));
  CHECK_FALSE(failed(r, "JVP:"));
  CHECK_THAT(r.str(), Contains("FAIL  VJP: adjoint identity"));
}

TEST_CASE("a wrong JVP rule of sin fails the JVP finite-difference check and the adjoint identity",
          "[autodiff][custom]") {
  const CheckReport r =
      check_rules("sin with -cos in its JVP", unary(SinWrongJvp{}), {{Shape{3, 4}}});
  INFO(r.str());
  CHECK(failed(r, "JVP: forward mode (Dual) J v vs finite differences"));
  CHECK(failed(r, "VJP: adjoint identity"));
  CHECK_FALSE(failed(r, "VJP: <J^T u, w> vs finite differences"));
  CHECK_FALSE(failed(r, "second order:"));
}

TEST_CASE("a wrong second-order rule of sin fails only the second-order check",
          "[autodiff][custom]") {
  const CheckReport r = check_rules("sin with +sin in its second-order rule",
                                    unary(SinWrongSecondOrder{}), {{Shape{3, 4}}});
  INFO(r.str());
  const std::vector<std::string> names = r.failed();
  REQUIRE(names.size() == 1);
  CHECK(names[0] == "second order: H v vs finite differences of J^T u along v (relative)");
}

TEST_CASE("every check of check_rules fails on some deliberately broken function",
          "[autodiff][custom]") {
  struct Broken {
    std::string what;
    std::string check;  // the start of the name of a check that must fail
    CheckReport report;
  };
  using S = std::vector<InputSpec>;
  const S one = {{Shape{3, 4}}};
  // Functions whose modes disagree: a rule is not the only thing that can be wrong.
  auto var_adds = [](double e) {
    return [e](auto x) {
      using V = std::remove_cvref_t<decltype(x[0])>;
      const V y = custom::elementwise(SinRules{}, x[0]);
      if constexpr (std::is_same_v<V, Var<typename V::value_type>>)
        return y + e;
      else
        return y;
    };
  };
  auto dual_wrong_jvp = [](auto x) {
    using V = std::remove_cvref_t<decltype(x[0])>;
    if constexpr (std::is_same_v<V, Dual<typename V::value_type>>)
      return custom::elementwise(SinWrongJvp{}, x[0]);
    else
      return custom::elementwise(SinRules{}, x[0]);
  };
  auto var_reshapes = [](auto x) {
    using V = std::remove_cvref_t<decltype(x[0])>;
    const V y = custom::elementwise(SinRules{}, x[0]);
    if constexpr (std::is_same_v<V, Var<typename V::value_type>>)
      return reshape(y, Shape{12});
    else
      return y;
  };
  auto float_var_adds = [](auto x) {
    using V = std::remove_cvref_t<decltype(x[0])>;
    const V y = custom::elementwise(SinRules{}, x[0]);
    if constexpr (std::is_same_v<V, Var<float>>)
      return y + 1e-3;
    else
      return y;
  };
  const std::vector<Broken> broken = {
      {"Var adds 1e-9", "primal: Dual and Var values equal", check_rules("", var_adds(1e-9), one)},
      {"Var reshapes", "primal: Dual and Var values have the shape",
       check_rules("", var_reshapes, one)},
      {"wrong JVP", "JVP: forward mode", check_rules("", unary(SinWrongJvp{}), one)},
      {"Dual uses a wrong JVP", "JVP: tape forward sweep", check_rules("", dual_wrong_jvp, one)},
      {"wrong VJP", "VJP: adjoint identity", check_rules("", unary(SinWrongVjp{}), one)},
      {"wrong VJP", "VJP: <J^T u, w>", check_rules("", unary(SinWrongVjp{}), one)},
      {"wrong second order", "second order: H v",
       check_rules("", unary(SinWrongSecondOrder{}), one)},
      {"JVP wrong when A is constant", "JVP: J_i v_i",
       check_rules("", broken_matvec(Bug::constant_a_jvp), kMatVecInputs)},
      {"VJP wrong when A is not wanted", "VJP: J_i^T u",
       check_rules("", broken_matvec(Bug::constant_a_vjp), kMatVecInputs)},
      {"second order wrong when A is constant", "second order: H_ii v_i",
       check_rules("", broken_matvec(Bug::constant_a_second_order), kMatVecInputs)},
      {"asymmetric second order", "second order: symmetry",
       check_rules("", broken_matvec(Bug::asymmetric), kMatVecInputs)},
      {"VJP overwrites an adjoint that holds a value", "VJP: added to adjoints",
       check_rules("", broken_matvec(Bug::overwrites_abar), kMatVecInputs)},
      {"VJP overwrites an adjoint that holds a value", "VJP: even inputs' adjoints",
       check_rules("", broken_matvec(Bug::overwrites_abar), kMatVecInputs)},
      {"second order overwrites an adjoint tangent that holds a value",
       "second order: added to adjoint tangents",
       check_rules("", broken_matvec(Bug::overwrites_abar_dot), kMatVecInputs)},
      {"built-in style rule adds to a fresh adjoint", "VJP: into NaN-filled buffers",
       check_rules("", [](auto x) { return detail::apply(SinAddsToFresh{}, x[0]); }, one)},
      {"float Var adds 1e-3", "float primal: Dual and Var values equal",
       check_rules("", float_var_adds, one)},
      {"float primal off", "float vs double: primal",
       check_rules("", unary(SinFloatPrimal{}), one)},
      {"float JVP off", "float vs double: JVP by forward mode",
       check_rules("", unary(SinFloatJvp{}), one)},
      {"float JVP off", "float vs double: JVP by the tape",
       check_rules("", unary(SinFloatJvp{}), one)},
      {"float VJP off", "float vs double: VJP", check_rules("", unary(SinFloatVjp{}), one)},
      {"float second order off", "float vs double: H v",
       check_rules("", unary(SinFloatSecondOrder{}), one)},
  };
  std::set<std::string> caught;
  for (const auto& b : broken) {
    INFO(b.what << "\n" << b.report.str());
    CHECK(failed(b.report, b.check));
    for (const auto& n : b.report.failed()) caught.insert(kind_of(n));
  }
  // Every kind of check in the report of a correct function was seen failing.
  for (const auto& correct : {check_rules("sin", unary(SinRules{}), one),
                              check_rules("matvec", matvec(), kMatVecInputs)}) {
    for (const auto& c : correct.checks) {
      INFO(c.name);
      CHECK(caught.count(kind_of(c.name)) == 1);
    }
  }
}

TEST_CASE("a custom primitive is one tape record under its own name and constants are not recorded",
          "[autodiff][custom]") {
  Tape<double> tape;
  const Var<double> a = tape.variable(Tensor<double>::full(Shape{2, 3}, 0.5), "A");
  const Var<double> x(Tensor<double>::full(Shape{3}, 1.0));  // a constant
  const Var<double> y = custom::apply(MatVec{}, a, x);
  const Var<double> z = custom::elementwise(SinRules{}, y);
  CHECK(tape.size() == 2);
  CHECK(z.is_active());
  const std::string table = to_string(tape);
  INFO(table);
  CHECK_THAT(table, Contains("matvec"));
  CHECK_THAT(table, Contains("sin"));
  CHECK_THAT(table, Contains("const"));
  const Var<double> c = custom::elementwise(SinRules{}, x);
  CHECK_FALSE(c.is_active());
  CHECK(tape.size() == 2);
  // Every input and output is kept for the rules: A (6), x (3), y (2, read by sin too), sin(y) (2).
  CHECK(tape.memory_bytes() == (6 + 3 + 2 + 2) * sizeof(double));
}

TEST_CASE("custom ops refuse undefined inputs and bad shapes with typed errors naming the op",
          "[autodiff][custom]") {
  CHECK_THROWS_WITH(custom::elementwise(SinRules{}, Tensor<double>()),
                    Contains("sin: input 0") && Contains("undefined"));
  CHECK_THROWS_AS(custom::elementwise(SinRules{}, Dual<double>(Tensor<double>())), ValueError);
  CHECK_THROWS_AS(custom::elementwise(SinRules{}, Var<double>(Tensor<double>())), ValueError);
  CHECK_THROWS_AS(custom::apply(MatVec{}, Tensor<double>(Shape{2, 3}), Tensor<double>(Shape{2})),
                  ShapeError);
  CHECK_THROWS_WITH(custom::apply(APlus2B{}, Tensor<double>(Shape{2}), Tensor<double>(Shape{3})),
                    Contains("a_plus_2b") && Contains("(2)") && Contains("(3)"));
}

TEST_CASE("check_rules reports one line per check and checks at a given point",
          "[autodiff][custom]") {
  CheckOptions options;
  options.point = {Tensor<double>::from(Shape{3}, {0.1, -1.0, 2.5})};
  const CheckReport r = check_rules("sin", unary(SinRules{}), {{Shape{3}}}, options);
  CHECK(r.ok());
  const std::string s = r.str();
  INFO(s);
  CHECK_THAT(s, Contains("check_rules: sin, input (3), given point: 17 checks, all passed"));
  std::size_t lines = 0, pass = 0;
  for (std::size_t at = 0; (at = s.find('\n', at)) != std::string::npos; ++at) ++lines;
  for (std::size_t at = 0; (at = s.find("\nPASS  ", at)) != std::string::npos; ++at) ++pass;
  CHECK(lines == 1 + r.checks.size());
  CHECK(pass == r.checks.size());
  CHECK_THAT(s, Contains("error") && Contains("tolerance"));

  options.point = {Tensor<double>(Shape{4})};
  CHECK_THROWS_AS(check_rules("sin", unary(SinRules{}), {{Shape{3}}}, options), ShapeError);
  CHECK_THROWS_AS(check_rules("nothing", [](auto x) { return x[0]; }, {}), ValueError);
}

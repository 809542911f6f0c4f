// The registry of derivative checks: every primitive appears here with a few shapes, and the same
// helper (support/ad_check) checks all of its rules. A primitive file in autodiff/ops without an
// entry here fails the coverage test at the bottom.
#include <catch2/catch.hpp>

#include <filesystem>
#include <set>

#include "autodiff/registry.hpp"
#include "support/ad_check.hpp"

using namespace amari;
using namespace amari::test;

namespace {

using S = std::vector<Shape>;

Shape trans_shape(Index rows, Index cols, bool t) { return t ? Shape{cols, rows} : Shape{rows, cols}; }

std::vector<AdCase> all_cases() {
  std::vector<AdCase> cs;
  const S unary_shapes = {Shape{}, Shape{17}, Shape{3, 5}, Shape{2, 3, 4}};
  auto unary = [&](const std::string& name, Domain domain, auto f) {
    for (const auto& s : unary_shapes) cs.push_back(ad_case(name, name + " " + s.str(), {{s, domain}}, f));
  };
  unary("exp", Domain::any, [](auto x) { return amari::exp(x[0]); });
  unary("log", Domain::positive, [](auto x) { return amari::log(x[0]); });
  unary("tanh", Domain::any, [](auto x) { return amari::tanh(x[0]); });
  unary("sigmoid", Domain::any, [](auto x) { return amari::sigmoid(x[0]); });
  unary("relu", Domain::separated, [](auto x) { return amari::relu(x[0]); });
  unary("softplus", Domain::any, [](auto x) { return amari::softplus(x[0]); });
  unary("square", Domain::any, [](auto x) { return amari::square(x[0]); });
  unary("sqrt", Domain::positive, [](auto x) { return amari::sqrt(x[0]); });
  unary("gelu", Domain::any, [](auto x) { return amari::gelu(x[0]); });
  unary("affine", Domain::any, [](auto x) { return amari::affine(x[0], -1.5, 0.25); });
  unary("affine", Domain::any, [](auto x) { return -x[0]; });
  unary("affine", Domain::any, [](auto x) { return 3.0 * x[0] - 2.0; });
  unary("affine", Domain::any, [](auto x) { return 1.0 - x[0] / 4.0; });

  // Broadcasting pairs: same shape, row (bias), column, scalar, rank-3 against rank-2, reversed.
  const std::vector<S> pairs = {{Shape{3, 4}, Shape{3, 4}}, {Shape{3, 4}, Shape{4}},    {Shape{3, 4}, Shape{1, 4}},
                                {Shape{3, 4}, Shape{3, 1}}, {Shape{}, Shape{3, 4}},      {Shape{2, 3, 4}, Shape{3, 1}},
                                {Shape{4}, Shape{3, 4}},    {Shape{19}, Shape{19}},      {Shape{2, 1, 5}, Shape{3, 1}}};
  const std::vector<S> incompatible = {{Shape{3, 4}, Shape{5}}, {Shape{2, 3}, Shape{3, 2}}};
  auto binary = [&](const std::string& name, Domain second, auto f) {
    for (const auto& p : pairs)
      cs.push_back(ad_case(name, name + " " + p[0].str() + " with " + p[1].str(), {{p[0]}, {p[1], second}}, f,
                           incompatible));
  };
  binary("add", Domain::any, [](auto x) { return x[0] + x[1]; });
  binary("sub", Domain::any, [](auto x) { return x[0] - x[1]; });
  binary("mul", Domain::any, [](auto x) { return x[0] * x[1]; });
  binary("div", Domain::positive, [](auto x) { return x[0] / x[1]; });
  // An input used twice: its adjoint accumulates two contributions.
  cs.push_back(ad_case("mul", "mul x * x", {{Shape{3, 4}}}, [](auto x) { return x[0] * x[0]; }));

  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, k, n] : std::vector<std::array<Index, 3>>{{3, 4, 5}, {1, 1, 1}, {7, 1, 3}, {17, 9, 5}}) {
        const Trans a = ta ? Trans::yes : Trans::no, b = tb ? Trans::yes : Trans::no;
        cs.push_back(ad_case("matmul",
                             "matmul m,k,n=" + std::to_string(m) + "," + std::to_string(k) + "," + std::to_string(n) +
                                 (ta ? " a^T" : "") + (tb ? " b^T" : ""),
                             {{trans_shape(m, k, ta)}, {trans_shape(k, n, tb)}},
                             [a, b](auto x) { return amari::matmul(x[0], x[1], a, b); },
                             {{Shape{3, 4}, Shape{5, 2}}, {Shape{3}, Shape{3, 4}}, {Shape{2, 3, 4}, Shape{4, 2}}}));
      }

  for (auto [n, in, out] : std::vector<std::array<Index, 3>>{{3, 4, 5}, {1, 1, 1}, {17, 9, 2}})
    cs.push_back(ad_case("linear",
                         "linear N,in,out=" + std::to_string(n) + "," + std::to_string(in) + "," + std::to_string(out),
                         {{Shape{n, in}}, {Shape{in, out}}, {Shape{out}}},
                         [](auto x) { return amari::linear(x[0], x[1], x[2]); },
                         {{Shape{3, 4}, Shape{5, 2}, Shape{2}}, {Shape{3, 4}, Shape{4, 2}, Shape{3}}}));
  for (const auto& s : S{Shape{3, 5}, Shape{1, 7}, Shape{17, 4}})
    cs.push_back(ad_case("transpose", "transpose " + s.str(), {{s}}, [](auto x) { return amari::transpose(x[0]); },
                         {{Shape{3}}, {Shape{2, 3, 4}}}));
  cs.push_back(ad_case("reshape", "reshape (3, 4) -> (2, 6)", {{Shape{3, 4}}},
                       [](auto x) { return amari::reshape(x[0], Shape{2, 6}); }, {{Shape{3, 5}}}));
  cs.push_back(ad_case("reshape", "reshape (2, 3, 4) -> (24)", {{Shape{2, 3, 4}}},
                       [](auto x) { return amari::reshape(x[0], Shape{24}); }));

  for (const auto& s : S{Shape{}, Shape{7}, Shape{3, 4}, Shape{2, 3, 4}, Shape{40}})
    cs.push_back(ad_case("sum", "sum all " + s.str(), {{s}}, [](auto x) { return amari::sum(x[0]); }));
  for (int axis : {0, 1, -1})
    for (bool keep : {false, true}) {
      const std::string l = " axis " + std::to_string(axis) + (keep ? " keep" : "");
      cs.push_back(ad_case("sum", "sum (3, 4)" + l, {{Shape{3, 4}}},
                           [axis, keep](auto x) { return amari::sum(x[0], axis, keep); },
                           axis == 1 ? std::vector<S>{{Shape{3}}} : std::vector<S>{}));
      cs.push_back(ad_case("sum", "sum (2, 3, 4)" + l, {{Shape{2, 3, 4}}},
                           [axis, keep](auto x) { return amari::sum(x[0], axis, keep); }));
      cs.push_back(ad_case("sum", "mean (2, 3, 4)" + l, {{Shape{2, 3, 4}}},
                           [axis, keep](auto x) { return amari::mean(x[0], axis, keep); }));
    }
  cs.push_back(ad_case("sum", "mean all (3, 5)", {{Shape{3, 5}}}, [](auto x) { return amari::mean(x[0]); }));

  struct AxisCase {
    Shape shape;
    int axis;
    bool keep;
  };
  const std::vector<AxisCase> axis_cases = {
      {Shape{3, 5}, -1, false}, {Shape{4, 3}, 0, false}, {Shape{2, 3, 4}, 1, true}, {Shape{7}, 0, false}, {Shape{2, 17}, 1, true}};
  for (const auto& a : axis_cases) {
    const std::string l = " " + a.shape.str() + " axis " + std::to_string(a.axis) + (a.keep ? " keep" : "");
    // The same shape with the reduced axis empty: a max over nothing is an error, not -inf.
    std::vector<Index> empty(a.shape.dims().begin(), a.shape.dims().end());
    empty[static_cast<std::size_t>(a.shape.normalize_axis(a.axis, "test"))] = 0;
    cs.push_back(ad_case("max", "max" + l, {{a.shape, Domain::separated}},
                         [a](auto x) { return amari::max(x[0], a.axis, a.keep); }, {{Shape(empty)}}));
    cs.push_back(ad_case("logsumexp", "logsumexp" + l, {{a.shape}},
                         [a](auto x) { return amari::logsumexp(x[0], a.axis, a.keep); }));
    cs.push_back(ad_case("softmax", "softmax" + l, {{a.shape}}, [a](auto x) { return amari::softmax(x[0], a.axis); }));
    cs.push_back(
        ad_case("log_softmax", "log_softmax" + l, {{a.shape}}, [a](auto x) { return amari::log_softmax(x[0], a.axis); }));
  }
  // Out-of-range axes are ShapeErrors naming the primitive and the shape.
  cs.push_back(ad_case("logsumexp", "logsumexp bad axis", {{Shape{3, 4}}},
                       [](auto x) { return amari::logsumexp(x[0], 1); }, {{Shape{3}}}));
  cs.push_back(ad_case("softmax", "softmax bad axis", {{Shape{3, 4}}}, [](auto x) { return amari::softmax(x[0], 1); },
                       {{Shape{3}}}));
  cs.push_back(ad_case("log_softmax", "log_softmax bad axis", {{Shape{3, 4}}},
                       [](auto x) { return amari::log_softmax(x[0], 1); }, {{Shape{3}}}));

  // Composites: the same checks on whole functions built from primitives.
  cs.push_back(ad_case(
      "composite", "3-layer tanh MLP with softmax cross-entropy (x, W1, b1, W2, b2, W3, b3)",
      {{Shape{5, 4}}, {Shape{4, 6}}, {Shape{6}}, {Shape{6, 6}}, {Shape{6}}, {Shape{6, 3}}, {Shape{3}}},
      [](auto x) {
        using V = std::remove_cvref_t<decltype(x[0])>;
        using T = typename V::value_type;
        const auto h1 = amari::tanh(amari::matmul(x[0], x[1]) + x[2]);
        const auto h2 = amari::tanh(amari::linear(h1, x[3], x[4]));
        const auto z = amari::linear(h2, x[5], x[6]);
        // One-hot labels 0, 1, 2, 0, 1 as a constant: mean_i logsumexp(z_i) - z_{i, y_i}.
        Tensor<T> onehot(Shape{5, 3});
        for (int i = 0; i < 5; ++i) onehot.at(i, i % 3) = T(1);
        return (amari::sum(amari::logsumexp(z, 1)) - amari::sum(amari::constant_like<V>(onehot) * z)) * 0.2;
      }));
  cs.push_back(ad_case("composite", "log_softmax cross-entropy equals logsumexp form, relu/gelu/softplus MLP",
                       {{Shape{4, 3}}, {Shape{3, 5}}, {Shape{5}}, {Shape{5, 2}}},
                       [](auto x) {
                         const auto h = amari::gelu(amari::relu(amari::matmul(x[0], x[1])) + amari::softplus(x[2]));
                         return -amari::mean(amari::log_softmax(amari::matmul(h, x[3]), 1));
                       }));
  for (auto family : {conv_cases, shape_cases, norm_cases})
    for (auto& c : family()) cs.push_back(std::move(c));
  return cs;
}

}  // namespace

TEST_CASE("every primitive: modes agree, JVP and VJP match finite differences, adjoint identity, HVP",
          "[autodiff][registry]") {
  std::uint64_t seed = 1;
  for (const auto& c : all_cases()) {
    DYNAMIC_SECTION(c.label) { expect_ad(c, seed); }
    ++seed;
  }
}

TEST_CASE("every primitive: cleared or mixed tapes and bad shapes raise typed errors naming the op",
          "[autodiff][registry][errors]") {
  for (const auto& c : all_cases()) {
    DYNAMIC_SECTION(c.label) { expect_errors(c); }
  }
}

TEST_CASE("every primitive file in autodiff/ops has derivative checks in the registry", "[autodiff][registry]") {
  std::set<std::string> tested;
  for (const auto& c : all_cases()) tested.insert(c.primitive);
  tested.erase("composite");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(AMARI_SOURCE_DIR) / "autodiff/ops")) {
    if (entry.path().extension() != ".cpp") continue;
    ++files;
    const std::string name = entry.path().stem().string();
    INFO("primitive " << name << " (autodiff/ops/" << name << ".cpp)");
    CHECK(tested.count(name) == 1);
  }
  CHECK(files >= 20);
}

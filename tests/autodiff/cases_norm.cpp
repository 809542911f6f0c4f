// Registry cases for layer_norm, batch_norm and dropout: every rule (JVP, VJP, second order) of the
// fused normalizations against finite differences, batch coupling included.
#include "autodiff/registry.hpp"

namespace amari::test {

std::vector<AdCase> norm_cases() {
  std::vector<AdCase> cs;
  using S = std::vector<Shape>;

  for (const auto& x : S{Shape{3, 5}, Shape{2, 3, 4}, Shape{4, 1}, Shape{7}}) {
    const Index d = x[x.rank() - 1];
    cs.push_back(ad_case("layer_norm", "layer_norm x " + x.str(), {{x}, {Shape{d}}, {Shape{d}}},
                         [](auto v) { return amari::layer_norm(v[0], v[1], v[2]); },
                         {{Shape{3, 5}, Shape{4}, Shape{5}},
                          {Shape{3, 5}, Shape{5}, Shape{5, 1}},
                          {Shape{3, 0}, Shape{0}, Shape{0}}}));
  }
  cs.push_back(ad_case("layer_norm", "layer_norm eps 0.5", {{Shape{2, 6}}, {Shape{6}}, {Shape{6}}},
                       [](auto v) { return amari::layer_norm(v[0], v[1], v[2], 0.5); }));

  for (const auto& x :
       S{Shape{4, 3}, Shape{1, 2, 3, 2}, Shape{2, 2, 2, 3}, Shape{5, 1}, Shape{3, 2, 2}}) {
    const Index c = x[x.rank() - 1];
    cs.push_back(ad_case("batch_norm", "batch_norm x " + x.str(), {{x}, {Shape{c}}, {Shape{c}}},
                         [](auto v) { return amari::batch_norm(v[0], v[1], v[2]); },
                         {{Shape{4, 3}, Shape{2}, Shape{3}},
                          {Shape{3}, Shape{3}, Shape{3}},
                          {Shape{0, 3}, Shape{3}, Shape{3}},
                          {Shape{4, 0}, Shape{0}, Shape{0}}}));
  }
  // A loss that reads two outputs of one example: the batch coupling enters the second order.
  cs.push_back(ad_case(
      "batch_norm", "batch_norm inside tanh, eps 0.1", {{Shape{3, 2}}, {Shape{2}}, {Shape{2}}},
      [](auto v) { return amari::tanh(amari::batch_norm(v[0], v[1], v[2], 0.1)); }));

  for (double p : {0.0, 0.5, 0.3}) {
    for (const auto& x : S{Shape{3, 4}, Shape{2, 3, 4}, Shape{40}}) {
      cs.push_back(ad_case("dropout", "dropout p=" + std::to_string(p) + " x " + x.str(), {{x}},
                           [p](auto v) { return amari::dropout(v[0], p, 42, 7); }));
    }
  }
  return cs;
}

}  // namespace amari::test

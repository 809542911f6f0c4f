// Registry cases for the pooling, rearranging and indexing primitives: every rule of each checked
// by expect_ad at small shapes, including the edge geometries (padding, stride > kernel, 1x1
// windows, empty slices, repeated indices).
#include "autodiff/registry.hpp"

namespace amari::test {

namespace {

using S = std::vector<Shape>;

std::string pool_label(const std::string& op, const Shape& x, const Pool2dOptions& o) {
  auto pair = [](const std::array<Index, 2>& a) {
    return "(" + std::to_string(a[0]) + "," + std::to_string(a[1]) + ")";
  };
  return op + " x " + x.str() + " k" + pair(o.kernel) + " s" + pair(o.stride) + " p" +
         pair(o.padding) + (o.count_include_pad ? "" : " exclude pad");
}

Pool2dOptions pool(std::array<Index, 2> k, std::array<Index, 2> s, std::array<Index, 2> p,
                   bool include = true) {
  Pool2dOptions o;
  o.kernel = k, o.stride = s, o.padding = p, o.count_include_pad = include;
  return o;
}

}  // namespace

std::vector<AdCase> shape_cases() {
  std::vector<AdCase> cs;

  struct PoolCase {
    Shape x;
    Pool2dOptions o;
  };
  const std::vector<PoolCase> pools = {
      {Shape{2, 4, 4, 3}, pool({2, 2}, {0, 0}, {0, 0})},  // the default: stride = kernel
      {Shape{1, 5, 5, 2}, pool({3, 3}, {1, 1}, {1, 1})},  // overlapping windows, padding
      {Shape{1, 7, 7, 2}, pool({2, 2}, {3, 3}, {0, 0})},  // stride > kernel: skipped elements
      {Shape{2, 3, 3, 2}, pool({1, 1}, {1, 1}, {0, 0})},  // 1x1 windows
      {Shape{1, 4, 5, 1}, pool({3, 3}, {2, 2}, {1, 1})},  // batch 1, one channel, partial windows
      {Shape{2, 4, 6, 2}, pool({2, 3}, {1, 2}, {1, 1})},  // rectangular kernel and stride
      {Shape{2, 4, 6, 16}, pool({2, 2}, {0, 0}, {0, 0})}, // 2 x 2 tiles, whole vectors of channels
  };
  for (const auto& p : pools) {
    // Rank 3, zero channels, and an input one smaller than the padded window in each direction.
    const Index h = std::max<Index>(1, p.o.kernel[0] - 2 * p.o.padding[0] - 1);
    const Index w = std::max<Index>(1, p.o.kernel[1] - 2 * p.o.padding[1] - 1);
    std::vector<S> bad_pool = {{Shape{3, 4, 4}}, {Shape{1, 4, 4, 0}}};
    if (p.o.kernel[0] > 2 * p.o.padding[0] + 1 || p.o.kernel[1] > 2 * p.o.padding[1] + 1) {
      bad_pool.push_back({Shape{1, h, w, 2}});
    }
    cs.push_back(ad_case(
        "max_pool2d", pool_label("max_pool2d", p.x, p.o), {{p.x, Domain::separated}},
        [o = p.o](auto x) { return amari::max_pool2d(x[0], o); }, bad_pool));
    cs.push_back(ad_case(
        "relu_max_pool2d", pool_label("relu_max_pool2d", p.x, p.o), {{p.x, Domain::separated}},
        [o = p.o](auto x) { return amari::relu_max_pool2d(x[0], o); }, bad_pool));
    for (bool include : {true, false}) {
      if (!include && p.o.padding == std::array<Index, 2>{0, 0}) continue;
      Pool2dOptions o = p.o;
      o.count_include_pad = include;
      cs.push_back(ad_case(
          "avg_pool2d", pool_label("avg_pool2d", p.x, o), {{p.x}},
          [o](auto x) { return amari::avg_pool2d(x[0], o); }, bad_pool));
    }
  }
  for (const auto& s : S{Shape{2, 3, 4, 5}, Shape{1, 1, 1, 3}, Shape{3, 2, 1, 1}})
    cs.push_back(ad_case("global_avg_pool2d", "global_avg_pool2d " + s.str(), {{s}},
                         [](auto x) { return amari::global_avg_pool2d(x[0]); },
                         {{Shape{3, 4}}, {Shape{2, 0, 3, 2}}}));

  struct PermCase {
    Shape x;
    std::vector<int> perm;
  };
  for (const auto& p : std::vector<PermCase>{{Shape{2, 3, 4}, {2, 0, 1}},
                                             {Shape{2, 3, 4, 5}, {0, 2, 3, 1}},
                                             {Shape{2, 3, 4, 5}, {0, 3, 1, 2}},
                                             {Shape{3, 4}, {1, 0}},
                                             {Shape{5}, {0}}}) {
    std::string l = "permute " + p.x.str() + " {";
    for (int a : p.perm) l += std::to_string(a) + " ";
    // A shape of another rank than perm.
    const Shape bad = p.x.rank() == 2 ? Shape{2, 3, 4} : Shape{2, 3};
    cs.push_back(ad_case("permute", l + "}", {{p.x}},
                         [perm = p.perm](auto x) { return amari::permute(x[0], perm); }, {{bad}}));
  }

  struct ConcatCase {
    S shapes;
    int axis;
  };
  for (const auto& c : std::vector<ConcatCase>{{{Shape{2, 3}, Shape{4, 3}}, 0},
                                               {{Shape{2, 3}, Shape{2, 5}}, 1},
                                               {{Shape{2, 3}, Shape{2, 1}}, -1},
                                               {{Shape{2, 3, 4}, Shape{1, 3, 4}}, 0},
                                               {{Shape{2, 3, 4}, Shape{2, 2, 4}}, 1},
                                               {{Shape{2, 3, 4}, Shape{2, 3, 2}}, 2},
                                               {{Shape{3}, Shape{0}}, 0}}) {
    std::vector<Input> in;
    for (const auto& s : c.shapes) in.push_back({s});
    cs.push_back(ad_case(
        "concat",
        "concat " + c.shapes[0].str() + " " + c.shapes[1].str() + " axis " + std::to_string(c.axis),
        in, [axis = c.axis](auto x) { return amari::concat(x[0], x[1], axis); },
        {{Shape{4, 3, 2}, Shape{5, 4, 1}}, {Shape{4, 3, 2}, Shape{4, 3, 2, 1}}}));
  }
  // The list form: 2 and 3 inputs (one record), 5 (a tree), on each axis.
  for (int axis : {0, 1}) {
    for (std::size_t n : {2, 3, 5}) {
      std::vector<Input> in;
      for (std::size_t i = 0; i < n; ++i)
        in.push_back({axis == 0 ? Shape{Index(i % 3) + 1, 2} : Shape{2, Index(i % 3) + 1}});
      cs.push_back(ad_case("concat",
                           "concat list of " + std::to_string(n) + " axis " + std::to_string(axis),
                           in, [axis](auto x) {
                             using V = std::remove_cvref_t<decltype(x[0])>;
                             return amari::concat(std::vector<V>(x.begin(), x.end()), axis);
                           }));
    }
  }
  cs.push_back(ad_case("concat", "concat list with a bad shape",
                       {{Shape{2, 2}}, {Shape{2, 2}}, {Shape{2, 2}}},
                       [](auto x) {
                         using V = std::remove_cvref_t<decltype(x[0])>;
                         return amari::concat(std::vector<V>(x.begin(), x.end()), 0);
                       },
                       {{Shape{2, 2}, Shape{2, 3}, Shape{2, 2}}}));

  struct SliceCase {
    Shape x;
    int axis;
    Index start, stop;
  };
  for (const auto& s : std::vector<SliceCase>{{Shape{4, 5}, 0, 1, 3},
                                              {Shape{4, 5}, 1, 0, 5},
                                              {Shape{4, 5}, -1, 2, 2},  // empty range
                                              {Shape{2, 5, 3}, 1, 3, 5},
                                              {Shape{7}, 0, 6, 7}}) {
    // The same shape with the sliced axis one shorter than stop.
    std::vector<Index> dims(s.x.dims().begin(), s.x.dims().end());
    dims[static_cast<std::size_t>(s.x.normalize_axis(s.axis, "test"))] = s.stop - 1;
    const Shape shorter(dims);
    cs.push_back(ad_case(
        "slice",
        "slice " + s.x.str() + " axis " + std::to_string(s.axis) + " [" + std::to_string(s.start) +
            ", " + std::to_string(s.stop) + ")",
        {{s.x}}, [s](auto x) { return amari::slice(x[0], s.axis, s.start, s.stop); }, {{shorter}}));
  }

  struct EmbCase {
    Shape weight;
    std::vector<Index> idx;
    Shape index_shape;
  };
  for (const auto& e :
       std::vector<EmbCase>{{Shape{5, 3}, {0, 3, 3, 1, 4, 0}, Shape{6}},  // repeated indices
                            {Shape{4, 2}, {1, 1, 0, 3, 2, 1}, Shape{2, 3}},
                            {Shape{3, 4}, {2}, Shape{}},
                            {Shape{2, 3}, {}, Shape{0}}}) {
    cs.push_back(ad_case(
        "embedding", "embedding weight " + e.weight.str() + " indices " + e.index_shape.str(),
        {{e.weight}}, [e](auto x) { return amari::embedding(x[0], e.idx, e.index_shape); },
        {{Shape{5}}, {Shape{5, 3, 1}}}));
  }
  return cs;
}

}  // namespace amari::test

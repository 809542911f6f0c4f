// conv2d against the definition: a direct 7-loop convolution (and its two adjoints) written here,
// over a grid of geometries, at sizes that split the batch into uneven chunks and go parallel, and
// at 1 and 2 OpenMP threads. The registry (cases_conv.cpp) checks the derivative rules themselves.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <omp.h>

#include <amari/autodiff/autodiff.hpp>

#include "support/random.hpp"

using namespace amari;

namespace {

struct Geometry {
  Index n, h, w, c_in, kh, kw, c_out;
  Conv2dOptions o;
  bool bias = true;

  Index out(Index in, int axis, Index k) const {
    const auto a = static_cast<std::size_t>(axis);
    return (in + 2 * o.padding[a] - o.dilation[a] * (k - 1) - 1) / o.stride[a] + 1;
  }
  Index oh() const { return out(h, 0, kh); }
  Index ow() const { return out(w, 1, kw); }
  Shape x_shape() const { return Shape{n, h, w, c_in}; }
  Shape w_shape() const { return Shape{kh, kw, c_in / o.groups, c_out}; }
  Shape y_shape() const { return Shape{n, oh(), ow(), c_out}; }
  std::string str() const {
    return "x " + x_shape().str() + ", w " + w_shape().str() + ", stride " +
           std::to_string(o.stride[0]) + "," + std::to_string(o.stride[1]) + ", padding " +
           std::to_string(o.padding[0]) + "," + std::to_string(o.padding[1]) + ", dilation " +
           std::to_string(o.dilation[0]) + "," + std::to_string(o.dilation[1]) + ", groups " +
           std::to_string(o.groups) + (bias ? "" : ", no bias");
  }
};

// Calls f(n, p, q, o, i, j, c, input row, input column) for every term x[n, r, s, channel] *
// w[i, j, c, o] of the sum that defines y[n, p, q, o], in-image terms only (padding reads zeros).
template <class F>
void for_each_term(const Geometry& g, F f) {
  const Index cig = g.c_in / g.o.groups, cog = g.c_out / g.o.groups;
  for (Index n = 0; n < g.n; ++n)
    for (Index p = 0; p < g.oh(); ++p)
      for (Index q = 0; q < g.ow(); ++q)
        for (Index o = 0; o < g.c_out; ++o)
          for (Index i = 0; i < g.kh; ++i)
            for (Index j = 0; j < g.kw; ++j)
              for (Index c = 0; c < cig; ++c) {
                const Index r = p * g.o.stride[0] - g.o.padding[0] + i * g.o.dilation[0];
                const Index s = q * g.o.stride[1] - g.o.padding[1] + j * g.o.dilation[1];
                if (r < 0 || r >= g.h || s < 0 || s >= g.w) continue;
                f(n, p, q, o, i, j, c, r, s, (o / cog) * cig + c);
              }
}

Tensor<double> reference(const Geometry& g, const Tensor<double>& x, const Tensor<double>& w,
                         const Tensor<double>& b) {
  Tensor<double> y(g.y_shape());
  for_each_term(g,
                [&](Index n, Index p, Index q, Index o, Index i, Index j, Index c, Index r, Index s,
                    Index ch) { y.at(n, p, q, o) += x.at(n, r, s, ch) * w.at(i, j, c, o); });
  if (g.bias) {
    for (Index k = 0; k < y.size(); ++k) y[k] += b[k % g.c_out];
  }
  return y;
}

// The adjoints of the reference: xbar = d<ybar, y>/dx, wbar = d<ybar, y>/dw, bbar = d<ybar, y>/db.
struct Adjoints {
  Tensor<double> x, w, b;
};
Adjoints reference_adjoints(const Geometry& g, const Tensor<double>& x, const Tensor<double>& w,
                            const Tensor<double>& ybar) {
  Adjoints a{Tensor<double>(x.shape()), Tensor<double>(w.shape()), Tensor<double>(Shape{g.c_out})};
  for_each_term(g, [&](Index n, Index p, Index q, Index o, Index i, Index j, Index c, Index r,
                       Index s, Index ch) {
    a.x.at(n, r, s, ch) += w.at(i, j, c, o) * ybar.at(n, p, q, o);
    a.w.at(i, j, c, o) += x.at(n, r, s, ch) * ybar.at(n, p, q, o);
  });
  for (Index k = 0; k < ybar.size(); ++k) a.b[k % g.c_out] += ybar[k];
  return a;
}

template <Real T>
struct Result {
  Tensor<T> y, xbar, wbar, bbar;
};

// conv2d's output and its VJP (x, w and b) through the tape.
template <Real T>
Result<T> run(const Geometry& g, const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b,
              const Tensor<T>& ybar) {
  Tape<T> tape;
  const Var<T> xv = tape.variable(x), wv = tape.variable(w), bv = tape.variable(b);
  const Var<T> y = g.bias ? conv2d(xv, wv, bv, g.o) : conv2d(xv, wv, g.o);
  std::vector<Var<T>> inputs{xv, wv};
  if (g.bias) inputs.push_back(bv);
  const auto grads =
      tape.vjp(std::span<const Var<T>>(&y, 1), std::span<const Tensor<T>>(&ybar, 1), inputs);
  Result<T> r{y.value(), grads[0], grads[1], g.bias ? grads[2] : Tensor<T>()};
  // The plain-tensor mode gives the same output.
  const Tensor<T> plain = g.bias ? conv2d(x, w, b, g.o) : conv2d(x, w, g.o);
  CHECK(std::memcmp(plain.data(), r.y.data(), static_cast<std::size_t>(plain.size()) * sizeof(T)) ==
        0);
  return r;
}

double max_rel(const Tensor<double>& a, const Tensor<double>& b) {
  REQUIRE(a.shape() == b.shape());
  double err = 0, scale = 1e-300;
  for (Index i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return err / scale;
}

struct Inputs {
  Tensor<double> x, w, b, ybar;
};
Inputs sample(const Geometry& g, std::uint64_t seed) {
  test::Rng rng(seed);
  return {test::uniform_tensor<double>(g.x_shape(), rng),
          test::uniform_tensor<double>(g.w_shape(), rng),
          test::uniform_tensor<double>(Shape{g.c_out}, rng),
          test::uniform_tensor<double>(g.y_shape(), rng)};
}

// conv2d (double) and its VJP equal the reference to `tol` relative to the largest entry.
// The adjoints added onto buffers that already hold a value: x, w and b also feed a reshape
// recorded after the convolution, so the reverse sweep reaches their adjoints there first (with
// cotangents x, w, b themselves) and conv2d's rule then adds to them instead of overwriting fresh
// ones (autodiff/ops/primitive.hpp, "Overwrite"). Returns the sums minus those cotangents.
Result<double> run_onto_values(const Geometry& g, const Inputs& in) {
  Tape<double> tape;
  const Var<double> xv = tape.variable(in.x), wv = tape.variable(in.w), bv = tape.variable(in.b);
  const Var<double> y = g.bias ? conv2d(xv, wv, bv, g.o) : conv2d(xv, wv, g.o);
  std::vector<Var<double>> inputs{xv, wv}, outputs{y, reshape(xv, in.x.shape()), reshape(wv, in.w.shape())};
  std::vector<Tensor<double>> cotangents{in.ybar, in.x, in.w};
  if (g.bias) {
    inputs.push_back(bv);
    outputs.push_back(reshape(bv, in.b.shape()));
    cotangents.push_back(in.b);
  }
  auto grads = tape.vjp(outputs, cotangents, inputs);
  for (std::size_t i = 0; i < grads.size(); ++i)
    for (Index k = 0; k < grads[i].size(); ++k) grads[i][k] -= cotangents[i + 1][k];
  return {y.value(), grads[0], grads[1], g.bias ? grads[2] : Tensor<double>()};
}

void check_against_reference(const Geometry& g, std::uint64_t seed, double tol) {
  INFO(g.str());
  const Inputs in = sample(g, seed);
  const Result<double> r = run(g, in.x, in.w, in.b, in.ybar);
  const Adjoints a = reference_adjoints(g, in.x, in.w, in.ybar);
  CHECK(max_rel(r.y, reference(g, in.x, in.w, in.b)) < tol);
  CHECK(max_rel(r.xbar, a.x) < tol);
  CHECK(max_rel(r.wbar, a.w) < tol);
  if (g.bias) CHECK(max_rel(r.bbar, a.b) < tol);
  const Result<double> onto = run_onto_values(g, in);
  CHECK(max_rel(onto.xbar, a.x) < tol);
  CHECK(max_rel(onto.wbar, a.w) < tol);
  if (g.bias) CHECK(max_rel(onto.bbar, a.b) < tol);
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}
bool same_bits(const Tensor<double>& a, const Tensor<double>& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(double)) == 0;
}

struct OmpThreads {
  int saved = omp_get_max_threads();
  explicit OmpThreads(int n) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved); }
};

// Sizes past the parallel thresholds whose batch of 9 splits into uneven chunks of images (the
// column budget holds a few of these images), plus a 1x1 grouped layer (no im2col, big GEMMs). In
// double the second one has 5 chunks of 2 images, which 2 threads share chunk by chunk; the others
// have fewer chunks than that and run them in order with parallel GEMMs (kernels/conv.cpp).
std::vector<Geometry> large_geometries() {
  return {
      {9, 16, 16, 28, 3, 3, 16, {.padding = {1, 1}}},
      {9, 30, 30, 16, 3, 3, 8, {.stride = {1, 2}, .padding = {2, 1}, .dilation = {2, 1}}},
      {9, 20, 18, 12, 3, 3, 12, {.padding = {1, 1}, .groups = 3}, false},
      {9, 12, 12, 64, 1, 1, 32, {.groups = 2}},
      // 64 output channels: whole slivers of the wide weight tile in float and double.
      {9, 10, 10, 5, 3, 3, 64, {.padding = {1, 1}}},
  };
}

}  // namespace

TEST_CASE(
    "conv2d: output and VJP equal a direct 7-loop convolution on a grid of geometries (double, "
    "1e-12)",
    "[autodiff][conv2d]") {
  std::uint64_t seed = 100;
  int checked = 0;
  for (Index n : {1, 3})
    for (Index stride : {1, 2, 3})
      for (Index padding : {0, 1, 2})
        for (Index dilation : {1, 2})
          for (Index groups : {1, 2})
            for (bool bias : {true, false}) {
              // A non-square 3x2 kernel on a non-square 7x6 image, 4 -> 6 channels; the strides
              // and paddings differ per axis too.
              Geometry g{n,
                         7,
                         6,
                         4,
                         3,
                         2,
                         6,
                         {.stride = {stride, stride == 1 ? 2 : 1},
                          .padding = {padding, padding / 2},
                          .dilation = {dilation, 1},
                          .groups = groups},
                         bias};
              check_against_reference(g, ++seed, 1e-12);
              ++checked;
              // The same with a 1x1 kernel (the pointwise path when stride 1 and padding 0).
              g.kh = g.kw = 1;
              g.o.stride = {stride, stride};
              g.o.padding = {padding, padding};
              check_against_reference(g, ++seed, 1e-12);
              ++checked;
            }
  CHECK(checked == 288);
}

namespace {

// A 3 x 2 kernel over an h x w image with `in` -> `out` channels for one group (twice as many for
// two), at strides 1 and 2, paddings 0, 1 and 3 (beyond the kernel), dilations 1 and 2 and batches
// of 1 (with a bias) and 3: 48 geometries against the 7-loop reference. Returns how many.
int check_channel_grid(Index h, Index w, Index in, Index out, std::uint64_t seed) {
  int checked = 0;
  for (Index n : {1, 3})
    for (Index stride : {1, 2})
      for (Index padding : {0, 1, 3})
        for (Index dilation : {1, 2})
          for (Index groups : {1, 2}) {
            const Geometry g{n,
                             h,
                             w,
                             in * groups,
                             3,
                             2,
                             out * groups,
                             {.stride = {stride, stride},
                              .padding = {padding, padding / 2 + 1},
                              .dilation = {dilation, 1},
                              .groups = groups},
                             n == 1};
            check_against_reference(g, ++seed, 1e-12);
            ++checked;
          }
  return checked;
}

}  // namespace

TEST_CASE(
    "conv2d: with wide channels (several register tiles, partial ones included) the output and VJP "
    "equal the 7-loop convolution (double, 1e-12)",
    "[autodiff][conv2d]") {
  // 20 -> 40 channels with one group, 10 -> 20 per group with two: reductions of several runs of
  // taps and output widths that leave partial register tiles in the direct forward kernel, where
  // the padded copy of x is cut or widened.
  CHECK(check_channel_grid(7, 6, 10, 20, 300) == 48);
  CHECK(check_channel_grid(7, 6, 20, 40, 350) == 48);
}

TEST_CASE(
    "conv2d: with 32 input and 16 output channels per group (the direct adjoint kernels) the output "
    "and VJP equal the 7-loop convolution (double, 1e-12)",
    "[autodiff][conv2d]") {
  // 32 input channels per group fill the register tiles of the direct xbar kernel (stride 1) in
  // float and double, 16 output channels half-fill those of the direct wbar kernel (any stride):
  // kernels/conv.cpp takes the direct paths here, at paddings that cut the padded copy of ybar
  // (3, beyond the kernel) and dilations that widen it.
  CHECK(check_channel_grid(6, 5, 32, 16, 400) == 48);
}

TEST_CASE(
    "conv2d: layers with few taps (one tile of taps and the bias) equal the 7-loop convolution "
    "(double, 1e-12)",
    "[autodiff][conv2d]") {
  // One input channel under a 3 x 3 kernel (9 taps, + 1 row for the bias adjoint: the 10-row
  // wbar tile), 32 output channels (whole slivers, read in place) and 20 (a packed partial one),
  // with and without bias, one and two groups, strides 1 and 2.
  std::uint64_t seed = 480;
  int checked = 0;
  for (Index c_out : {32, 20})
    for (Index groups : {1, 2})
      for (Index stride : {1, 2})
        for (bool bias : {true, false}) {
          check_against_reference({3, 9, 8, groups, 3, 3, c_out * groups,
                                   {.stride = {stride, stride}, .padding = {1, 1}, .groups = groups},
                                   bias},
                                  ++seed, 1e-12);
          ++checked;
        }
  // 10 taps (a 2 x 5 kernel): the tile without the bias, the 8-row tiles with it.
  for (bool bias : {true, false}) {
    check_against_reference({2, 6, 9, 1, 2, 5, 32, {.padding = {1, 2}}, bias}, ++seed, 1e-12);
    ++checked;
  }
  CHECK(checked == 18);
}

TEST_CASE(
    "conv2d: with output channels in whole 4-batch slivers (the wide wbar tile) the output and VJP "
    "equal the 7-loop convolution (double, 1e-12)",
    "[autodiff][conv2d]") {
  // 32 and 64 output channels per group are whole slivers of the 6-tap x 4-batch wbar tile in
  // double (4 x 8 lanes with AVX-512), 64 in float too; the 3 x 2 kernel of the grid gives
  // 6 C_in taps, and the 3 x 3 kernels below, 45 and 27, leave partial tiles of taps.
  CHECK(check_channel_grid(6, 5, 4, 32, 450) == 48);
  std::uint64_t seed = 460;
  for (Index groups : {1, 2})
    for (Index stride : {1, 2}) {
      check_against_reference({2, 7, 6, 5 * groups, 3, 3, 64 * groups,
                               {.stride = {stride, stride}, .padding = {1, 1}, .groups = groups}},
                              ++seed, 1e-12);
      check_against_reference({3, 6, 6, 3 * groups, 3, 3, 32 * groups,
                               {.stride = {stride, 1}, .padding = {2, 1}, .dilation = {2, 1}, .groups = groups}},
                              ++seed, 1e-12);
    }
}

TEST_CASE(
    "conv2d: padding and strides far beyond the kernel, where the forward map forms im2col columns, "
    "equal the 7-loop convolution (double, 1e-12)",
    "[autodiff][conv2d]") {
  // A 3 x 4 image padded by (6, 5) and read at strides (5, 4) by a 2 x 2 kernel: the padded copy
  // the direct kernel would make (12 x 14 pixels) is larger than the column matrix (3 x 4 output
  // pixels x 4 taps), so the forward map takes the im2col path instead.
  std::uint64_t seed = 500;
  for (Index groups : {1, 3}) {
    const Geometry g{2, 3, 4, 3, 2, 2, 6, {.stride = {5, 4}, .padding = {6, 5}, .groups = groups}, true};
    check_against_reference(g, ++seed, 1e-12);
  }
}

TEST_CASE("conv2d: large layers (uneven chunks of images, parallel paths) equal the reference",
          "[autodiff][conv2d]") {
  std::uint64_t seed = 7;
  for (const auto& g : large_geometries()) check_against_reference(g, ++seed, 1e-12);
}

TEST_CASE("conv2d: float agrees with double", "[autodiff][conv2d]") {
  std::vector<Geometry> gs = large_geometries();
  gs.push_back({2, 5, 5, 3, 3, 3, 4, {.padding = {1, 1}}});
  gs.push_back({2, 7, 6, 10, 3, 3, 128, {.padding = {1, 1}, .groups = 2}});
  gs.push_back({2,
                8,
                8,
                4,
                3,
                3,
                4,
                {.stride = {2, 2}, .padding = {1, 1}, .dilation = {2, 2}, .groups = 4}});
  std::uint64_t seed = 21;
  for (const auto& g : gs) {
    INFO(g.str());
    const Inputs in = sample(g, ++seed);
    const Result<double> d = run(g, in.x, in.w, in.b, in.ybar);
    const Result<float> f = run(g, test::convert<float>(in.x), test::convert<float>(in.w),
                                test::convert<float>(in.b), test::convert<float>(in.ybar));
    CHECK(max_rel(test::convert<double>(f.y), d.y) < 1e-5);
    CHECK(max_rel(test::convert<double>(f.xbar), d.xbar) < 1e-5);
    CHECK(max_rel(test::convert<double>(f.wbar), d.wbar) < 1e-5);
    if (g.bias) CHECK(max_rel(test::convert<double>(f.bbar), d.bbar) < 1e-5);
  }
}

TEST_CASE("conv2d: results are bitwise identical with 1 and 2 OpenMP threads",
          "[autodiff][conv2d][openmp]") {
  std::uint64_t seed = 50;
  for (const auto& g : large_geometries()) {
    INFO(g.str());
    const Inputs in = sample(g, ++seed);
    const Tensor<float> xf = test::convert<float>(in.x), wf = test::convert<float>(in.w),
                        bf = test::convert<float>(in.b), yf = test::convert<float>(in.ybar);
    Result<double> d1, d2;
    Result<float> f1, f2;
    {
      const OmpThreads one(1);
      d1 = run(g, in.x, in.w, in.b, in.ybar);
      f1 = run(g, xf, wf, bf, yf);
    }
    {
      const OmpThreads two(2);
      d2 = run(g, in.x, in.w, in.b, in.ybar);
      f2 = run(g, xf, wf, bf, yf);
    }
    CHECK(same_bits(d1.y, d2.y));
    CHECK(same_bits(d1.xbar, d2.xbar));
    CHECK(same_bits(d1.wbar, d2.wbar));
    CHECK(same_bits(f1.y, f2.y));
    CHECK(same_bits(f1.xbar, f2.xbar));
    CHECK(same_bits(f1.wbar, f2.wbar));
    if (g.bias) {
      CHECK(same_bits(d1.bbar, d2.bbar));
      CHECK(same_bits(f1.bbar, f2.bbar));
    }
  }
}

TEST_CASE("conv2d: bad geometries raise ShapeError naming conv2d, the shapes and the options",
          "[autodiff][conv2d][errors]") {
  struct Bad {
    std::string what;
    Shape x, w;
    Conv2dOptions o;
    std::string expect;  // part of the message
  };
  const std::vector<Bad> bad = {
      {"kernel larger than the padded input",
       Shape{1, 4, 4, 2},
       Shape{5, 5, 2, 3},
       {.padding = {0, 0}},
       "larger"},
      {"dilated kernel larger than the padded input",
       Shape{1, 4, 4, 2},
       Shape{3, 3, 2, 3},
       {.dilation = {3, 1}},
       "dilation {3, 1}"},
      {"zero input channels", Shape{1, 4, 4, 0}, Shape{3, 3, 0, 3}, {}, "zero channels"},
      {"zero output channels", Shape{1, 4, 4, 2}, Shape{3, 3, 2, 0}, {}, "zero channels"},
      {"empty kernel", Shape{1, 4, 4, 2}, Shape{0, 3, 2, 3}, {}, "empty kernel"},
      {"mismatched channels", Shape{1, 4, 4, 3}, Shape{3, 3, 2, 3}, {}, "mismatched channels"},
      {"groups do not divide C_in",
       Shape{1, 4, 4, 3},
       Shape{3, 3, 1, 4},
       {.groups = 2},
       "groups 2"},
      {"groups do not divide C_out",
       Shape{1, 4, 4, 4},
       Shape{3, 3, 2, 3},
       {.groups = 2},
       "groups 2"},
      {"zero groups", Shape{1, 4, 4, 4}, Shape{3, 3, 2, 3}, {.groups = 0}, "groups 0"},
      {"zero stride", Shape{1, 4, 4, 2}, Shape{3, 3, 2, 3}, {.stride = {1, 0}}, "stride {1, 0}"},
      {"negative stride",
       Shape{1, 4, 4, 2},
       Shape{3, 3, 2, 3},
       {.stride = {-1, 1}},
       "stride {-1, 1}"},
      {"zero dilation",
       Shape{1, 4, 4, 2},
       Shape{3, 3, 2, 3},
       {.dilation = {0, 1}},
       "dilation {0, 1}"},
      {"negative padding",
       Shape{1, 4, 4, 2},
       Shape{3, 3, 2, 3},
       {.padding = {-1, 0}},
       "padding {-1, 0}"},
      {"huge padding",
       Shape{1, 4, 4, 2},
       Shape{3, 3, 2, 3},
       {.padding = {Index{1} << 62, 0}},
       "padding"},
      {"huge dilation",
       Shape{1, 4, 4, 2},
       Shape{3, 3, 2, 3},
       {.dilation = {Index{1} << 47, 1}},
       "larger"},
      {"x of rank 3", Shape{4, 4, 2}, Shape{3, 3, 2, 3}, {}, "expects x (N, H, W, C_in)"},
      {"w of rank 2", Shape{1, 4, 4, 2}, Shape{9, 6}, {}, "expects x (N, H, W, C_in)"},
  };
  for (const auto& c : bad) {
    INFO(c.what);
    const Tensor<double> x(c.x), w(c.w), b(Shape{c.w.rank() == 4 ? c.w[3] : 3});
    const auto expect_error = [&](auto f) {
      try {
        f();
        FAIL("no ShapeError");
      } catch (const ShapeError& e) {
        const std::string m = e.what();
        INFO(m);
        CHECK(m.rfind("conv2d: ", 0) == 0);
        CHECK(m.find(c.expect) != std::string::npos);
        CHECK(m.find(c.x.str()) != std::string::npos);
        CHECK(m.find(c.w.str()) != std::string::npos);
      }
    };
    expect_error([&] { (void)conv2d(x, w, b, c.o); });
    expect_error([&] { (void)conv2d(x, w, c.o); });
    expect_error([&] { (void)conv2d(Dual<double>(x, x), Dual<double>(w), c.o); });
    Tape<double> tape;
    expect_error([&] { (void)conv2d(tape.variable(x), tape.variable(w), tape.variable(b), c.o); });
  }
  // A bias whose length is not C_out.
  try {
    (void)conv2d(Tensor<double>(Shape{1, 4, 4, 2}), Tensor<double>(Shape{3, 3, 2, 3}),
                 Tensor<double>(Shape{4}));
    FAIL("no ShapeError");
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()).rfind("conv2d: b must have C_out = w.shape[3] = 3 entries", 0) ==
          0);
  }
}

TEST_CASE("conv2d: the output size follows PyTorch's formula", "[autodiff][conv2d]") {
  // (in + 2 padding - dilation (k - 1) - 1) / stride + 1, floor: 28x28, 3x3, pad 1 -> 28x28;
  // 7x6 with kernel 3x2, stride 3, dilation 2 -> (7 - 4 - 1) / 3 + 1 = 1 by (6 - 1 - 1) / 3 + 1
  // = 2.
  CHECK(conv2d(Tensor<float>(Shape{2, 28, 28, 1}), Tensor<float>(Shape{3, 3, 1, 32}),
               {.padding = {1, 1}})
            .shape() == Shape{2, 28, 28, 32});
  CHECK(conv2d(Tensor<float>(Shape{1, 7, 6, 2}), Tensor<float>(Shape{3, 2, 2, 5}),
               {.stride = {3, 3}, .dilation = {2, 1}})
            .shape() == Shape{1, 1, 2, 5});
  CHECK(conv2d(Tensor<float>(Shape{1, 1, 1, 2}), Tensor<float>(Shape{2, 2, 2, 5}),
               {.padding = {4, 4}})
            .shape() == Shape{1, 8, 8, 5});
}

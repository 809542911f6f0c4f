// Tests of the PyTorch layout conversions: each one against an explicit index loop written from
// the layouts' definitions, inverses composing to the identity, and the shape errors.
#include <amari/nn/torch_layout.hpp>

#include <catch2/catch.hpp>

#include "support/matchers.hpp"

namespace {

using amari::Index;
using amari::Shape;
using amari::Tensor;
using amari::nn::TorchLayout;
using amari::test::MessageContains;

// 0, 1, 2, ... in row-major order, so every element is distinct.
template <class T>
Tensor<T> iota(const Shape& s) {
  Tensor<T> t(s);
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<T>(i);
  return t;
}

}  // namespace

TEMPLATE_TEST_CASE("nchw_to_nhwc: out[n, h, w, c] = x[n, c, h, w], and nhwc_to_nchw inverts it",
                   "[torch_layout]", float, double) {
  const Tensor<TestType> x = iota<TestType>(Shape{2, 3, 4, 5});  // (N, C, H, W)
  const Tensor<TestType> y = amari::nn::nchw_to_nhwc(x);
  REQUIRE(y.shape() == Shape{2, 4, 5, 3});
  for (Index n = 0; n < 2; ++n)
    for (Index c = 0; c < 3; ++c)
      for (Index h = 0; h < 4; ++h)
        for (Index w = 0; w < 5; ++w) CHECK(y.at(n, h, w, c) == x.at(n, c, h, w));
  const Tensor<TestType> back = amari::nn::nhwc_to_nchw(y);
  REQUIRE(back.shape() == x.shape());
  CHECK(back.to_vector() == x.to_vector());
}

TEMPLATE_TEST_CASE("oihw_to_hwio: out[kh, kw, i, o] = w[o, i, kh, kw], and hwio_to_oihw inverts it",
                   "[torch_layout]", float, double) {
  const Tensor<TestType> w = iota<TestType>(Shape{5, 2, 3, 4});  // (O, I, KH, KW)
  const Tensor<TestType> v = amari::nn::oihw_to_hwio(w);
  REQUIRE(v.shape() == Shape{3, 4, 2, 5});
  for (Index o = 0; o < 5; ++o)
    for (Index i = 0; i < 2; ++i)
      for (Index kh = 0; kh < 3; ++kh)
        for (Index kw = 0; kw < 4; ++kw) CHECK(v.at(kh, kw, i, o) == w.at(o, i, kh, kw));
  const Tensor<TestType> back = amari::nn::hwio_to_oihw(v);
  REQUIRE(back.shape() == w.shape());
  CHECK(back.to_vector() == w.to_vector());
}

TEST_CASE("to_torch_layout / from_torch_layout: transposed, hwio and same, as copies",
          "[torch_layout]") {
  using amari::nn::from_torch_layout;
  using amari::nn::to_torch_layout;
  const Tensor<double> lin = iota<double>(Shape{3, 2});  // amari (in, out)
  const Tensor<double> t = to_torch_layout(lin, TorchLayout::transposed);
  REQUIRE(t.shape() == Shape{2, 3});
  for (Index i = 0; i < 3; ++i)
    for (Index o = 0; o < 2; ++o) CHECK(t.at(o, i) == lin.at(i, o));
  CHECK(from_torch_layout(t, TorchLayout::transposed, Shape{3, 2}).to_vector() == lin.to_vector());

  const Tensor<double> conv = iota<double>(Shape{3, 2, 1, 4});  // amari (KH, KW, I, O)
  const Tensor<double> c = to_torch_layout(conv, TorchLayout::hwio);
  REQUIRE(c.shape() == Shape{4, 1, 3, 2});
  CHECK(c.to_vector() == amari::nn::hwio_to_oihw(conv).to_vector());
  CHECK(from_torch_layout(c, TorchLayout::hwio, conv.shape()).to_vector() == conv.to_vector());

  const Tensor<double> bias = iota<double>(Shape{4});
  const Tensor<double> same = to_torch_layout(bias, TorchLayout::same);
  CHECK(same.to_vector() == bias.to_vector());
  CHECK_FALSE(same.same_storage(bias));

  CHECK(amari::nn::torch_shape(Shape{3, 2}, TorchLayout::transposed) == Shape{2, 3});
  CHECK(amari::nn::torch_shape(Shape{3, 2, 1, 4}, TorchLayout::hwio) == Shape{4, 1, 3, 2});
  CHECK(amari::nn::torch_shape(Shape{7}, TorchLayout::same) == Shape{7});
}

TEST_CASE("torch layout conversions: wrong ranks and shapes are ShapeErrors naming the shapes",
          "[torch_layout]") {
  const Tensor<float> v = iota<float>(Shape{6});
  CHECK_THROWS_MATCHES(amari::nn::nchw_to_nhwc(v), amari::ShapeError,
                       MessageContains({"nchw_to_nhwc", "rank-4", "(6)"}));
  CHECK_THROWS_MATCHES(amari::nn::oihw_to_hwio(v), amari::ShapeError,
                       MessageContains({"oihw_to_hwio", "(6)"}));
  CHECK_THROWS_MATCHES(amari::nn::to_torch_layout(v, TorchLayout::transposed), amari::ShapeError,
                       MessageContains({"transposed", "rank 2", "(6)"}));
  CHECK_THROWS_MATCHES(
      amari::nn::from_torch_layout(iota<float>(Shape{3, 2}), TorchLayout::transposed, Shape{3, 2}),
      amari::ShapeError, MessageContains({"(3, 2)", "(2, 3)"}));
  CHECK_THROWS_MATCHES(amari::nn::torch_shape(Shape{3, 3}, TorchLayout::hwio), amari::ShapeError,
                       MessageContains({"hwio", "rank 4"}));
}

// Registry cases of conv2d: every geometry the kernels branch on (im2col with contiguous runs or
// per tap, the pointwise path without im2col, groups, padding, dilation, strides) at tiny sizes, so
// the double-precision finite-difference sweeps stay fast.
#include "autodiff/registry.hpp"

namespace amari::test {

namespace {

using S = std::vector<Shape>;

struct ConvCase {
  std::string label;
  Shape x, w;
  Conv2dOptions options;
  bool bias = true;
  std::vector<S> bad = {};  // without the bias shape when `bias` is false
};

}  // namespace

std::vector<AdCase> conv_cases() {
  const std::vector<ConvCase> cases = {
      {"3x3, batch 2",
       Shape{2, 5, 5, 3},
       Shape{3, 3, 3, 4},
       {},
       true,
       {{Shape{2, 5, 5, 4}, Shape{3, 3, 3, 4}, Shape{4}},    // mismatched channels
        {Shape{2, 2, 2, 3}, Shape{3, 3, 3, 4}, Shape{4}},    // kernel larger than the input
        {Shape{2, 5, 5, 3}, Shape{3, 3, 3, 4}, Shape{5}},    // bias of the wrong length
        {Shape{5, 5, 3}, Shape{3, 3, 3, 4}, Shape{4}},       // x without a batch axis
        {Shape{2, 5, 5, 3}, Shape{9, 3, 4}, Shape{4}},       // w of rank 3
        {Shape{2, 5, 5, 0}, Shape{3, 3, 0, 4}, Shape{4}},    // zero input channels
        {Shape{2, 5, 5, 3}, Shape{3, 3, 3, 0}, Shape{0}}}},  // zero output channels
      {"stride 3 > kernel 2, batch 1", Shape{1, 7, 7, 2}, Shape{2, 2, 2, 3}, {.stride = {3, 3}}},
      {"padding 3 > kernel 2",
       Shape{1, 3, 3, 2},
       Shape{2, 2, 2, 2},
       {.padding = {3, 3}},
       true,
       {{Shape{1, 1, 1, 2}, Shape{9, 2, 2, 2}, Shape{2}}}},  // 9 > 1 + 2 * 3
      {"1x1 (no im2col)", Shape{2, 3, 4, 3}, Shape{1, 1, 3, 5}, {}},
      {"1x1 stride 2", Shape{2, 5, 4, 3}, Shape{1, 1, 3, 2}, {.stride = {2, 2}}},
      {"1x1 groups 2 (no im2col)", Shape{2, 3, 3, 4}, Shape{1, 1, 2, 6}, {.groups = 2}},
      {"dilation 2, padding 1",
       Shape{1, 6, 6, 2},
       Shape{3, 3, 2, 2},
       {.padding = {1, 1}, .dilation = {2, 2}},
       true,
       {{Shape{1, 2, 2, 2}, Shape{3, 3, 2, 2}, Shape{2}}}},  // dilated extent 5 > 2 + 2
      {"depthwise (groups = channels = 3), padding 1",
       Shape{2, 4, 4, 3},
       Shape{3, 3, 1, 3},
       {.padding = {1, 1}, .groups = 3},
       true,
       {{Shape{2, 4, 4, 3}, Shape{3, 3, 3, 3}, Shape{3}}}},
      {"depthwise multiplier 2", Shape{1, 4, 5, 2}, Shape{2, 2, 1, 4}, {.groups = 2}},
      {"groups 2",
       Shape{1, 5, 5, 4},
       Shape{3, 3, 2, 6},
       {.padding = {1, 1}, .groups = 2},
       true,
       {{Shape{1, 5, 5, 3}, Shape{3, 3, 1, 6}, Shape{6}},    // groups do not divide C_in
        {Shape{1, 5, 5, 4}, Shape{3, 3, 2, 5}, Shape{5}}}},  // nor C_out
      {"non-square kernel 2x3, stride (2, 1), padding (1, 0), dilation (1, 2)",
       Shape{2, 6, 7, 2},
       Shape{2, 3, 2, 3},
       {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}}},
      {"no bias, 3x3 padding 1",
       Shape{2, 4, 4, 2},
       Shape{3, 3, 2, 3},
       {.padding = {1, 1}},
       false,
       {{Shape{2, 4, 4, 3}, Shape{3, 3, 2, 3}}, {Shape{2, 4, 4, 2}, Shape{3, 3, 2}}}},
      {"no bias, groups 2, stride 2",
       Shape{1, 5, 6, 4},
       Shape{3, 2, 2, 4},
       {.stride = {2, 2}, .groups = 2},
       false},
  };
  std::vector<AdCase> cs;
  for (const auto& c : cases) {
    // No ": " in labels: Catch2 2.13 indents wrapped lines after it, and loops forever printing a
    // failure whose indent leaves no room on the line.
    const std::string label = "conv2d " + c.label + ", x " + c.x.str() + ", w " + c.w.str();
    const Conv2dOptions o = c.options;
    if (c.bias) {
      cs.push_back(ad_case(
          "conv2d", label, {{c.x}, {c.w}, {Shape{c.w[3]}}},
          [o](auto x) { return amari::conv2d(x[0], x[1], x[2], o); }, c.bad));
    } else {
      cs.push_back(ad_case(
          "conv2d", label + ", no bias", {{c.x}, {c.w}},
          [o](auto x) { return amari::conv2d(x[0], x[1], o); }, c.bad));
    }
  }
  // conv2d_relu_max_pool2d: geometries its fused rules serve (2 x 2 pooling tiling the output, one
  // group, C_out in whole SIMD vectors of float and double: 16 or 32; checked with x constant, as
  // every input alone; C_in of 16: the rules at the selected pixels) and ones they leave to the unfused kernels (odd output, overlapping
  // windows, groups, C_out of 3).
  struct FusedCase {
    std::string label;
    Shape x, w;
    Conv2dOptions conv;
    Pool2dOptions pool;
    std::vector<S> bad = {};
  };
  const std::vector<FusedCase> fused = {
      {"3x3 padding 1, 1 -> 16 channels (train_cnn's first layer)", Shape{2, 4, 4, 1}, Shape{3, 3, 1, 16},
       {.padding = {1, 1}}, {},
       {{Shape{2, 4, 4, 2}, Shape{3, 3, 1, 16}, Shape{16}},    // mismatched channels
        {Shape{2, 4, 4, 1}, Shape{3, 3, 1, 16}, Shape{15}},    // bias of the wrong length
        {Shape{2, 1, 4, 1}, Shape{3, 3, 1, 16}, Shape{16}},    // a 1 x 4 output: no 2 x 2 window
        {Shape{2, 4, 4, 1}, Shape{7, 7, 1, 16}, Shape{16}}}},  // kernel larger than the padded input
      {"3x3 padding 1, 2 -> 32 channels (two vectors a tile)", Shape{1, 4, 6, 2}, Shape{3, 3, 2, 32},
       {.padding = {1, 1}}, {}},
      {"3x3, 3 -> 16 channels (27 taps, two tiles)", Shape{1, 6, 6, 3}, Shape{3, 3, 3, 16}, {}, {}},
      {"stride 2, dilation 2, padding 2", Shape{1, 8, 8, 1}, Shape{3, 3, 1, 16},
       {.stride = {2, 2}, .padding = {2, 2}, .dilation = {2, 2}}, {}},
      // input channels in whole vectors: the tangent and xbar at the selected pixels only
      {"3x3 padding 1, 16 -> 16 channels (selected pixels)", Shape{2, 2, 4, 16}, Shape{3, 3, 16, 16},
       {.padding = {1, 1}}, {}},
      {"stride 2, dilation 2, padding 2, 16 -> 32 channels (selected pixels)", Shape{1, 7, 7, 16},
       Shape{3, 3, 16, 32}, {.stride = {2, 2}, .padding = {2, 2}, .dilation = {2, 2}}, {}},
      {"odd output 5 x 5 (unfused)", Shape{1, 5, 5, 2}, Shape{1, 1, 2, 16}, {}, {}},
      {"3 x 3 windows, stride 2 (unfused)", Shape{1, 5, 5, 1}, Shape{1, 1, 1, 3}, {},
       {.kernel = {3, 3}, .stride = {2, 2}}},
      {"groups 2 (unfused)", Shape{1, 4, 4, 2}, Shape{3, 3, 1, 16}, {.padding = {1, 1}, .groups = 2}, {}},
  };
  for (const auto& c : fused) {
    const Conv2dOptions co = c.conv;
    const Pool2dOptions po = c.pool;
    cs.push_back(ad_case(
        "conv2d_relu_max_pool2d", "conv2d_relu_max_pool2d " + c.label + ", x " + c.x.str() + ", w " + c.w.str(),
        {{c.x}, {c.w}, {Shape{c.w[3]}}},
        [co, po](auto x) { return amari::conv2d_relu_max_pool2d(x[0], x[1], x[2], co, po); }, c.bad));
  }
  // Composite: conv, relu, conv (1x1), a sum: second-order terms through a non-linearity.
  cs.push_back(ad_case(
      "composite", "conv2d -> tanh -> conv2d 1x1 (x, w1, b1, w2)",
      {{Shape{2, 4, 4, 2}}, {Shape{3, 3, 2, 3}}, {Shape{3}}, {Shape{1, 1, 3, 2}}}, [](auto x) {
        const auto h = amari::tanh(amari::conv2d(x[0], x[1], x[2], {.padding = {1, 1}}));
        return amari::conv2d(h, x[3], {.stride = {2, 2}});
      }));
  return cs;
}

}  // namespace amari::test

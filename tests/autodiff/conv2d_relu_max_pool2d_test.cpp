// conv2d_relu_max_pool2d against the pair it fuses, relu_max_pool2d(conv2d(x, w, b)): values,
// tangents and adjoints, with x constant (the fused rules of kernels/conv_pool.cpp) and with x a
// variable (where the input channels fill whole vectors, the tangent and all three adjoints at the
// selected pixels of kernels/conv_pool_selected.cpp; else the tangent of kernels/conv.cpp's
// conv2d_pool_tangent where it applies, else and for the adjoints the unfused kernels), in float
// and double, at 1 and 2 threads. With small integers as
// data every sum is exact in either order, so the fused rules must give the unfused bits; with
// random data they agree to rounding. The registry (cases_conv.cpp) checks the rules against
// finite differences and the adjoint identity.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include <omp.h>

#include <amari/autodiff/autodiff.hpp>

#include "support/random.hpp"

using namespace amari;
using namespace amari::test;

namespace {

template <Real T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

struct Geometry {
  std::string label;
  Shape x, w;
  Conv2dOptions conv;
};

// Small integers (many ties and zeros among the convolution's outputs) or uniform values.
template <Real T>
Tensor<T> data(const Shape& s, Rng& rng, bool integers) {
  if (!integers) return uniform_tensor<T>(s, rng);
  Tensor<T> t = Tensor<T>::uninitialized(s);
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<T>(static_cast<int>(rng.below(5)) - 2);
  return t;
}

// Everything the fused primitive computes, and the same through the unfused pair.
template <Real T>
struct Results {
  Tensor<T> y, tangent_w, tangent_all, wbar, bbar, xbar_all, wbar_all, bbar_all;
};

template <Real T, class F>
Results<T> run(const F& f, const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b,
               const Tensor<T>& dx, const Tensor<T>& dw, const Tensor<T>& db, const Tensor<T>& u) {
  Results<T> r;
  r.y = f(x, w, b);
  // Tangents with x constant (a first layer: its input is data) and with all three.
  r.tangent_w = f(Dual<T>(x), Dual<T>(w, dw), Dual<T>(b, db)).tangent();
  r.tangent_all = f(Dual<T>(x, dx), Dual<T>(w, dw), Dual<T>(b, db)).tangent();
  {
    Tape<T> tape;
    const Var<T> params[] = {tape.variable(w), tape.variable(b)};
    const Var<T> ys[] = {f(Var<T>(x), params[0], params[1])};
    const Tensor<T> us[] = {u};
    const auto g = tape.vjp(ys, us, params);
    r.wbar = g[0], r.bbar = g[1];
  }
  {
    Tape<T> tape;
    const Var<T> all[] = {tape.variable(x), tape.variable(w), tape.variable(b)};
    const Var<T> ys[] = {f(all[0], all[1], all[2])};
    const Tensor<T> us[] = {u};
    const auto g = tape.vjp(ys, us, all);
    r.xbar_all = g[0], r.wbar_all = g[1], r.bbar_all = g[2];
  }
  return r;
}

template <Real T>
void check_against_pair(const Geometry& geo, bool integers) {
  Rng rng(23);
  const Tensor<T> x = data<T>(geo.x, rng, integers), w = data<T>(geo.w, rng, integers);
  const Tensor<T> b = data<T>(Shape{geo.w[3]}, rng, integers);
  const Tensor<T> dx = data<T>(geo.x, rng, integers), dw = data<T>(geo.w, rng, integers);
  const Tensor<T> db = data<T>(Shape{geo.w[3]}, rng, integers);
  const Conv2dOptions co = geo.conv;
  const Pool2dOptions po{};
  const auto fused = [&](const auto& a, const auto& k, const auto& c) { return conv2d_relu_max_pool2d(a, k, c, co, po); };
  const auto pair = [&](const auto& a, const auto& k, const auto& c) { return relu_max_pool2d(conv2d(a, k, c, co), po); };
  const Tensor<T> u = data<T>(pair(x, w, b).shape(), rng, integers);
  Results<T> one_thread;
  for (int threads : {1, 2}) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    const Results<T> f = run<T>(fused, x, w, b, dx, dw, db, u);
    const Results<T> p = run<T>(pair, x, w, b, dx, dw, db, u);
    omp_set_num_threads(before);
    INFO(geo.label << ", " << (integers ? "integers" : "uniform values") << ", " << threads << " threads, "
                   << (sizeof(T) == 4 ? "float" : "double"));
    CHECK(same_bits(f.y, p.y));
    if (integers) {  // every sum exact: the fused order gives the same bits
      CHECK(same_bits(f.xbar_all, p.xbar_all));
      CHECK(same_bits(f.wbar_all, p.wbar_all));
      CHECK(same_bits(f.bbar_all, p.bbar_all));
      CHECK(same_bits(f.tangent_all, p.tangent_all));
      CHECK(same_bits(f.tangent_w, p.tangent_w));
      CHECK(same_bits(f.wbar, p.wbar));
      CHECK(same_bits(f.bbar, p.bbar));
    } else {
      const double tol = sizeof(T) == 4 ? 1e-5 : 1e-13;
      CHECK(rel_err(f.xbar_all, p.xbar_all) < tol);
      CHECK(rel_err(f.wbar_all, p.wbar_all) < tol);
      CHECK(rel_err(f.bbar_all, p.bbar_all) < tol);
      CHECK(rel_err(f.tangent_all, p.tangent_all) < tol);
      CHECK(rel_err(f.tangent_w, p.tangent_w) < tol);
      CHECK(rel_err(f.wbar, p.wbar) < tol);
      CHECK(rel_err(f.bbar, p.bbar) < tol);
    }
    if (threads == 1) {
      one_thread = f;
    } else {  // partial sums per chunk of images, added in chunk order, whatever the threads
      CHECK(same_bits(f.tangent_w, one_thread.tangent_w));
      CHECK(same_bits(f.tangent_all, one_thread.tangent_all));
      CHECK(same_bits(f.xbar_all, one_thread.xbar_all));
      CHECK(same_bits(f.wbar_all, one_thread.wbar_all));
      CHECK(same_bits(f.bbar_all, one_thread.bbar_all));
      CHECK(same_bits(f.wbar, one_thread.wbar));
      CHECK(same_bits(f.bbar, one_thread.bbar));
    }
  }
}

}  // namespace

TEST_CASE(
    "conv2d_relu_max_pool2d equals relu_max_pool2d(conv2d(...)): values bit for bit, its fused "
    "tangent and weight and bias adjoints bit for bit on exact data and to rounding otherwise, "
    "on 1 and 2 threads",
    "[autodiff][conv2d]") {
  const std::vector<Geometry> geometries = {
      // train_cnn's first layer, batch 40 (chunks of uneven size, parallel): 9 taps x 2 vectors
      {"train_cnn's first layer", Shape{40, 28, 28, 1}, Shape{3, 3, 1, 32}, {.padding = {1, 1}}},
      // train_cnn's second layer (batch 10: chunks of images, a partial one): the tangent and the
      // adjoints at the selected pixels (kernels/conv_pool_selected.cpp)
      {"train_cnn's second layer", Shape{10, 14, 14, 32}, Shape{3, 3, 32, 64}, {.padding = {1, 1}}},
      // the same rules with stride, dilation and padding; a 5 x 5 kernel over a padding of 3; 1 x 1
      {"16 input channels, stride 2, dilation 2", Shape{3, 11, 11, 16}, Shape{3, 3, 16, 32},
       {.stride = {2, 2}, .padding = {2, 2}, .dilation = {2, 2}}},
      {"5 x 5 kernel, padding 3", Shape{2, 8, 8, 32}, Shape{5, 5, 32, 16}, {.padding = {3, 3}}},
      {"1 x 1 kernel", Shape{3, 6, 6, 16}, Shape{1, 1, 16, 16}, {}},
      // 8 input channels: whole vectors of double only (float takes conv2d_pool_tangent)
      {"8 input channels", Shape{3, 6, 8, 8}, Shape{3, 3, 8, 16}, {.padding = {1, 1}}},
      // 27 taps: two tap tiles of one vector
      {"3 input channels", Shape{5, 8, 6, 3}, Shape{3, 3, 3, 16}, {.padding = {1, 1}}},
      {"stride 2, dilation 2", Shape{3, 12, 12, 2}, Shape{3, 3, 2, 48}, {.stride = {2, 2}, .padding = {2, 2}, .dilation = {2, 2}}},
      // the fused rules do not apply: C_out of 6, an odd output, two groups
      {"6 output channels", Shape{3, 6, 6, 2}, Shape{3, 3, 2, 6}, {.padding = {1, 1}}},
      {"odd output", Shape{3, 7, 7, 2}, Shape{3, 3, 2, 16}, {.padding = {1, 1}}},
      {"two groups", Shape{3, 6, 6, 4}, Shape{3, 3, 2, 32}, {.padding = {1, 1}, .groups = 2}},
  };
  for (const auto& g : geometries) {
    for (bool integers : {true, false}) {
      check_against_pair<float>(g, integers);
      check_against_pair<double>(g, integers);
    }
  }
}

TEST_CASE("conv2d_relu_max_pool2d: hostile inputs raise typed errors naming the op and the shapes",
          "[autodiff][conv2d][errors]") {
  const Tensor<double> x(Shape{2, 4, 4, 1}), w(Shape{3, 3, 1, 16}), b(Shape{16});
  const Conv2dOptions pad1{.padding = {1, 1}};
  CHECK_THROWS_WITH(conv2d_relu_max_pool2d(Tensor<double>(Shape{2, 4, 4, 2}), w, b, pad1, {}),
                    Catch::Contains("conv2d_relu_max_pool2d") && Catch::Contains("(2, 4, 4, 2)"));
  // A 3 x 3 window over the 2 x 2 output of an unpadded 3 x 3 convolution of a 4 x 4 image.
  CHECK_THROWS_AS(conv2d_relu_max_pool2d(x, w, b, {}, Pool2dOptions{.kernel = {3, 3}}), ShapeError);
  CHECK_THROWS_WITH(conv2d_relu_max_pool2d(x, w, b, {}, Pool2dOptions{.kernel = {3, 3}}),
                    Catch::Contains("conv2d_relu_max_pool2d") && Catch::Contains("x (2, 4, 4, 1)"));
  CHECK_THROWS_AS(conv2d_relu_max_pool2d(x, w, b, pad1, Pool2dOptions{.kernel = {2, 2}, .padding = {2, 2}}),
                  ValueError);
  // Undefined inputs.
  CHECK_THROWS_AS(conv2d_relu_max_pool2d(Tensor<double>(), w, b, pad1, {}), ValueError);
}

// Tests of the layers for the networks people write (nn/image_layers.hpp, nn/normalization.hpp,
// nn/residual.hpp, nn/embedding.hpp, nn/function_module.hpp) and of model mode and state
// (nn/model.hpp): what each module computes, how it names and initializes its parameters, when
// running statistics move, that dropout masks are shared by every pass of a step, and that the
// curvature checks pass on a small CNN with each head.
#include <amari/amari.hpp>

#include <cmath>
#include <memory>
#include <vector>

#include <catch2/catch.hpp>

#include "support/matchers.hpp"
#include "support/random.hpp"

namespace {

using namespace amari;
using amari::test::MessageContains;
using amari::test::Rng;
using amari::test::max_abs_diff;
using amari::test::normal_tensor;
using amari::test::uniform_tensor;

using Seq = nn::Sequential<double>;

/// A CNN small enough for dense checks (P = 53): (N, 25) -> (N, 5, 5, 1), conv 1->2 3x3 pad 1,
/// optional batch norm, ReLU, 2x2 max-pool, flatten (8), optional dropout, Linear 8 -> classes.
std::shared_ptr<Seq> tiny_cnn(bool batch_norm, double dropout, Index classes = 3) {
  auto net = std::make_shared<Seq>();
  net->emplace<nn::Reshape<double>>(std::vector<Index>{5, 5, 1});
  net->emplace<nn::Conv2d<double>>(1, 2, 3, Conv2dOptions{.padding = {1, 1}});
  if (batch_norm) net->emplace<nn::BatchNorm2d<double>>(2);
  net->emplace<nn::ReLU<double>>();
  net->emplace<nn::MaxPool2d<double>>(2);
  net->emplace<nn::Flatten<double>>();
  if (dropout > 0) net->emplace<nn::Dropout<double>>(dropout);
  net->emplace<nn::Linear<double>>(8, classes, true, nn::Init::torch_uniform);
  return net;
}

Tensor<double> batch(Index n, Index d, std::uint64_t seed) {
  Rng rng(seed);
  return normal_tensor<double>(Shape{n, d}, rng);
}

}  // namespace

TEST_CASE("Conv2d: HWIO weight with PyTorch's names, init bound 1/sqrt(fan_in), output shape", "[nn][layers]") {
  nn::Model<double> model(std::make_shared<nn::Conv2d<double>>(4, 6, std::array<Index, 2>{3, 2},
                                                               Conv2dOptions{.stride = {2, 1}, .groups = 2}),
                          7);
  REQUIRE(model.layout().size() == 2);
  CHECK(model.layout()[0].name == "weight");
  CHECK(model.layout()[0].shape == Shape{3, 2, 2, 6});
  CHECK(model.layout()[0].torch_layout == nn::TorchLayout::hwio);
  CHECK(model.layout()[1].name == "bias");
  const double bound = 1 / std::sqrt(2.0 * 3 * 2);  // fan_in = C_in / groups * KH * KW
  for (const auto& v : model.parameter_views()) {
    double biggest = 0;
    for (Index i = 0; i < v.size(); ++i) biggest = std::max(biggest, std::fabs(v[i]));
    CHECK(biggest <= bound);
    CHECK(biggest >= 0.5 * bound);  // drawn over the whole range, not a smaller one
  }
  const Tensor<double> y = model.forward(Tensor<double>(Shape{2, 7, 5, 4}));
  CHECK(y.shape() == Shape{2, 3, 4, 6});
  CHECK_THROWS_MATCHES(model.forward(Tensor<double>(Shape{2, 7, 5, 3})), ShapeError,
                       MessageContains({"Conv2d", "(2, 7, 5, 3)", "channels last"}));
  CHECK_THROWS_AS(nn::Conv2d<double>(4, 6, 3, Conv2dOptions{.groups = 3}), ValueError);
}

TEST_CASE("Conv2d keeps the options it is given (a GCC 12 AVX-512 miscompile once moved a stride into the padding)",
          "[nn][layers]") {
  const nn::Conv2d<float> c(16, 32, 1, Conv2dOptions{.stride = {2, 2}}, false);
  CHECK(c.options().stride == std::array<Index, 2>{2, 2});
  CHECK(c.options().padding == std::array<Index, 2>{0, 0});
  CHECK(c.options().dilation == std::array<Index, 2>{1, 1});
  CHECK(c.options().groups == 1);
  const nn::MaxPool2d<float> p(Pool2dOptions{.kernel = {3, 3}, .stride = {2, 2}});
  CHECK(p.describe() == "MaxPool2d(3)");
}

TEST_CASE("Linear with Init::torch_uniform draws weight and bias from U(-1/sqrt(in), 1/sqrt(in))", "[nn][layers]") {
  nn::Model<double> model(std::make_shared<nn::Linear<double>>(16, 8, true, nn::Init::torch_uniform), 3);
  CHECK(model.layout()[0].torch_layout == nn::TorchLayout::transposed);
  for (const auto& v : model.parameter_views()) {
    double biggest = 0;
    for (Index i = 0; i < v.size(); ++i) biggest = std::max(biggest, std::fabs(v[i]));
    CHECK(biggest <= 0.25);
    CHECK(biggest > 0.15);  // the bias too is drawn, not zero
  }
}

TEST_CASE("Flatten: an NHWC image flattens in PyTorch's (C, H, W) order", "[nn][layers]") {
  Rng rng(2);
  const Tensor<double> x = uniform_tensor<double>(Shape{2, 3, 4, 5}, rng);
  nn::Model<double> model(std::make_shared<nn::Flatten<double>>());
  const Tensor<double> y = model.forward(x);
  REQUIRE(y.shape() == Shape{2, 60});
  for (Index n = 0; n < 2; ++n)
    for (Index h = 0; h < 3; ++h)
      for (Index w = 0; w < 4; ++w)
        for (Index c = 0; c < 5; ++c) CHECK(y.at(n, c * 12 + h * 4 + w) == x.at(n, h, w, c));
}

TEST_CASE("Reshape and pooling layers: shapes, and a shape error names the layer", "[nn][layers]") {
  auto net = std::make_shared<Seq>();
  net->emplace<nn::Reshape<double>>(std::vector<Index>{4, 6, 2});
  net->emplace<nn::AvgPool2d<double>>(2);
  net->emplace<nn::MaxPool2d<double>>(Pool2dOptions{.kernel = {2, 3}, .stride = {1, 1}});
  net->emplace<nn::GlobalAvgPool<double>>();
  nn::Model<double> model(net);
  Rng rng(3);
  const Tensor<double> x = uniform_tensor<double>(Shape{3, 48}, rng);
  const Tensor<double> y = model.forward(x);
  CHECK(y.shape() == Shape{3, 2});
  CHECK_THROWS_MATCHES(model.forward(Tensor<double>(Shape{3, 47})), ShapeError, MessageContains({"Reshape", "(3, 47)"}));
  nn::Model<double> pool(std::make_shared<nn::MaxPool2d<double>>(2));
  CHECK_THROWS_MATCHES(pool.forward(Tensor<double>(Shape{3, 4})), ShapeError, MessageContains({"MaxPool2d", "(3, 4)"}));
}

TEST_CASE("Sequential runs a ReLU followed by a MaxPool2d as one relu_max_pool2d: the same loss, gradient and JVP",
          "[nn][layers]") {
  // The same network with a reshape to the same shape between the two layers, which keeps them
  // apart, gives the same numbers bit for bit, with and without batch norm before the ReLU.
  const auto net = [](bool batch_norm, bool apart) {
    auto seq = std::make_shared<Seq>();
    seq->emplace<nn::Reshape<double>>(std::vector<Index>{5, 5, 1});
    seq->emplace<nn::Conv2d<double>>(1, 2, 3, Conv2dOptions{.padding = {1, 1}});
    if (batch_norm) seq->emplace<nn::BatchNorm2d<double>>(2);
    seq->emplace<nn::ReLU<double>>();
    if (apart) seq->emplace<nn::Reshape<double>>(std::vector<Index>{5, 5, 2});
    seq->emplace<nn::MaxPool2d<double>>(2);
    seq->emplace<nn::Flatten<double>>();
    seq->emplace<nn::Linear<double>>(8, 3, true, nn::Init::torch_uniform);
    return seq;
  };
  const auto count = [](const std::string& text, const std::string& word) {
    std::size_t n = 0;
    for (auto at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
    return n;
  };
  for (bool batch_norm : {false, true}) {
    nn::Model<double> a(net(batch_norm, false), 3), b(net(batch_norm, true), 3);
    REQUIRE(a.parameters().to_vector() == b.parameters().to_vector());
    nn::SoftmaxCrossEntropy<double> head;
    const Tensor<double> x = batch(6, 25, 4);
    const Tensor<double> y = nn::one_hot<double>({0, 1, 2, 0, 1, 2}, 3);
    Tensor<double> ga = a.zeros_like_parameters(), gb = b.zeros_like_parameters();
    CHECK(nn::gradient_at(a, head, x, y, ga) == nn::gradient_at(b, head, x, y, gb));
    CHECK(ga.to_vector() == gb.to_vector());
    Rng rng(5);
    const Tensor<double> v = uniform_tensor<double>(a.parameters().shape(), rng);
    const Dual<double> ja = a.forward_jvp(x, v), jb = b.forward_jvp(x, v);
    CHECK(ja.primal().to_vector() == jb.primal().to_vector());
    CHECK(ja.tangent().to_vector() == jb.tangent().to_vector());
    // On a tape the pair is one node.
    Tape<double> tape;
    const Var<double> xv = tape.variable(x);
    std::vector<Var<double>> params;
    for (const auto& p : a.parameter_views()) params.push_back(tape.variable(p.clone()));
    a.forward(xv, std::span<const Var<double>>(params));
    const std::string printed = to_string(tape);
    CHECK(count(printed, "relu_max_pool2d") == 1);
    CHECK(count(printed, "relu") == 1);
    CHECK(count(printed, "max_pool2d") == 1);
  }
}

TEST_CASE(
    "Sequential runs a Conv2d, a ReLU and a MaxPool2d as one conv2d_relu_max_pool2d unless an observer "
    "takes the layer taps: the same loss, and gradient, JVP and GGN product to rounding",
    "[nn][layers]") {
  // 16 output channels and a 6 x 6 image: the fused rules of the primitive serve the first layer
  // (its input is data). The same network with a reshape between the ReLU and the pooling keeps
  // the three apart.
  const auto net = [](bool apart) {
    auto seq = std::make_shared<Seq>();
    seq->emplace<nn::Reshape<double>>(std::vector<Index>{6, 6, 1});
    seq->emplace<nn::Conv2d<double>>(1, 16, 3, Conv2dOptions{.padding = {1, 1}});
    seq->emplace<nn::ReLU<double>>();
    if (apart) seq->emplace<nn::Reshape<double>>(std::vector<Index>{6, 6, 16});
    seq->emplace<nn::MaxPool2d<double>>(2);
    seq->emplace<nn::Flatten<double>>();
    seq->emplace<nn::Linear<double>>(144, 3, true, nn::Init::torch_uniform);
    return seq;
  };
  nn::Model<double> a(net(false), 3), b(net(true), 3);
  REQUIRE(a.parameters().to_vector() == b.parameters().to_vector());
  nn::SoftmaxCrossEntropy<double> head;
  const Tensor<double> x = batch(5, 36, 4);
  const Tensor<double> y = nn::one_hot<double>({0, 1, 2, 0, 1}, 3);
  Tensor<double> ga = a.zeros_like_parameters(), gb = b.zeros_like_parameters();
  CHECK(nn::gradient_at(a, head, x, y, ga) == nn::gradient_at(b, head, x, y, gb));
  CHECK(test::rel_err(ga, gb) < 1e-14);
  Rng rng(5);
  const Tensor<double> v = uniform_tensor<double>(a.parameters().shape(), rng);
  const Dual<double> ja = a.forward_jvp(x, v), jb = b.forward_jvp(x, v);
  CHECK(ja.primal().to_vector() == jb.primal().to_vector());
  CHECK(test::rel_err(ja.tangent(), jb.tangent()) < 1e-14);
  Tensor<double> gva = a.zeros_like_parameters(), gvb = b.zeros_like_parameters();
  curvature::GgnOperator<double>(a, head, x).apply(v, gva);
  curvature::GgnOperator<double>(b, head, x).apply(v, gvb);
  CHECK(test::rel_err(gva, gvb) < 1e-13);
  // On a tape the three are one node; with an observer, three.
  const auto printed = [&](bool observed) {
    Tape<double> tape;
    std::vector<Var<double>> params;
    for (const auto& p : a.parameter_views()) params.push_back(tape.variable(p.clone()));
    struct Count final : nn::TapObserver<Var<double>> {
      int layers = 0;
      void on_layer(const nn::LayerTap<Var<double>>&) override { ++layers; }
    } observer;
    if (observed) {
      a.forward_observed(Var<double>(x), std::span<const Var<double>>(params), observer);
      CHECK(observer.layers == 2);
    } else {
      a.forward(Var<double>(x), std::span<const Var<double>>(params));
    }
    return to_string(tape);
  };
  const std::string fused = printed(false), observed = printed(true);
  CHECK(fused.find("conv2d_relu_max_pool2d") != std::string::npos);
  CHECK(observed.find("conv2d_relu_max_pool2d") == std::string::npos);
  CHECK(observed.find("conv2d") != std::string::npos);
  CHECK(observed.find("relu_max_pool2d") != std::string::npos);
}

TEST_CASE("BatchNorm: running statistics move only in the training pass, as PyTorch moves them", "[nn][layers][state]") {
  nn::Model<double> model(tiny_cnn(/*batch_norm=*/true, 0), 5);
  REQUIRE(model.state_layout().size() == 2);
  CHECK(model.state_layout()[0].name == "2.running_mean");
  CHECK(model.state_layout()[1].name == "2.running_var");
  CHECK(model.state()[0] == 0.0);
  CHECK(model.state()[2] == 1.0);
  const Tensor<double> x = batch(6, 25, 1);
  const Tensor<double> y = nn::one_hot<double>({0, 1, 2, 0, 1, 2}, 3);
  nn::SoftmaxCrossEntropy<double> head;

  // Passes that are not a training step leave the state alone: forward, JVP, gradient_at, curvature.
  const Tensor<double> before = model.state().clone();
  model.forward(x);
  model.forward_jvp(x, model.zeros_like_parameters());
  Tensor<double> g = model.zeros_like_parameters();
  nn::gradient_at(model, head, x, y, g);
  curvature::GgnOperator<double> ggn(model, head, x);
  Tensor<double> out = model.zeros_like_parameters();
  ggn.apply(model.parameters(), out);
  CHECK(max_abs_diff(model.state(), before) == 0.0);

  // The training pass: r = 0.9 r + 0.1 batch value, unbiased variance, of the conv's output.
  auto first_two = std::make_shared<Seq>();
  first_two->emplace<nn::Reshape<double>>(std::vector<Index>{5, 5, 1});
  first_two->emplace<nn::Conv2d<double>>(1, 2, 3, Conv2dOptions{.padding = {1, 1}});
  nn::Model<double> conv(first_two);
  conv.scatter(model.parameters().view(0, Shape{conv.num_parameters()}).clone());
  const Tensor<double> c = conv.forward(x);  // (6, 5, 5, 2)
  nn::loss_and_gradient(model, head, x, y, g);
  for (Index ch = 0; ch < 2; ++ch) {
    double sum = 0, sq = 0;
    const Index m = 6 * 25;
    for (Index i = 0; i < m; ++i) sum += c[i * 2 + ch];
    const double mean = sum / m;
    for (Index i = 0; i < m; ++i) sq += (c[i * 2 + ch] - mean) * (c[i * 2 + ch] - mean);
    CHECK(model.state()[ch] == Approx(0.1 * mean).epsilon(1e-12));
    CHECK(model.state()[2 + ch] == Approx(0.9 + 0.1 * sq / (m - 1)).epsilon(1e-12));
  }

  // Eval mode uses the running statistics: the output no longer depends on the rest of the batch.
  model.eval();
  const Tensor<double> all = model.forward(x);
  const Tensor<double> first = model.forward(x.view(0, Shape{1, 25}).clone());
  for (Index k = 0; k < 3; ++k) CHECK(first[k] == Approx(all[k]).epsilon(1e-13));
  model.train();
  const Tensor<double> first_train = model.forward(x.view(0, Shape{2, 25}).clone());
  CHECK(std::fabs(first_train[0] - all[0]) > 1e-6);  // train mode: batch statistics of 2 examples
  model.reset_state();
  CHECK(max_abs_diff(model.state(), before) == 0.0);
}

TEST_CASE("Dropout: one mask per step, shared by the forward pass, its JVP, its gradient and curvature",
          "[nn][layers][dropout]") {
  auto net = std::make_shared<Seq>();
  net->emplace<nn::Linear<double>>(6, 40);
  net->emplace<nn::Dropout<double>>(0.5);
  net->emplace<nn::Linear<double>>(40, 3);
  nn::Model<double> model(net, 9);
  const Tensor<double> x = batch(5, 6, 4);
  const Tensor<double> y = nn::one_hot<double>({0, 1, 2, 0, 1}, 3);
  nn::SoftmaxCrossEntropy<double> head;

  const Tensor<double> z0 = model.forward(x);
  CHECK(max_abs_diff(model.forward(x), z0) == 0.0);                     // same step, same mask
  CHECK(max_abs_diff(model.forward_jvp(x, model.zeros_like_parameters()).primal(), z0) == 0.0);
  Tensor<double> g = model.zeros_like_parameters();
  const double l0 = nn::gradient_at(model, head, x, y, g);
  CHECK(l0 == Approx(head.loss(z0, y).item()).epsilon(1e-15));

  // The gradient at this step matches finite differences of the loss at this step (same masks).
  Rng rng(5);
  const Tensor<double> v = normal_tensor<double>(Shape{model.num_parameters()}, rng);
  const Tensor<double> theta = model.parameters().clone();
  auto loss_at = [&](double t) {
    Tensor<double> p = theta.clone();
    for (Index i = 0; i < p.size(); ++i) p[i] += t * v[i];
    model.scatter(p);
    const double l = head.loss(model.forward(x), y).item();
    model.scatter(theta);
    return l;
  };
  const double h = 1e-5;
  CHECK((loss_at(h) - loss_at(-h)) / (2 * h) == Approx(amari::test::dot(g, v)).epsilon(1e-7));

  // A training pass starts a new step: new masks; eval mode: no dropout at all.
  const std::uint64_t step = model.step();
  nn::loss_and_gradient(model, head, x, y, g);
  CHECK(model.step() == step + 1);
  CHECK(max_abs_diff(model.forward(x), z0) > 1e-6);
  model.set_step(step);
  CHECK(max_abs_diff(model.forward(x), z0) == 0.0);
  const Tensor<double> ze = model.forward(x, nn::Mode::eval);
  auto no_dropout = std::make_shared<Seq>();
  no_dropout->emplace<nn::Linear<double>>(6, 40);
  no_dropout->emplace<nn::Linear<double>>(40, 3);
  nn::Model<double> reference(no_dropout);
  reference.scatter(model.parameters());
  CHECK(max_abs_diff(ze, reference.forward(x)) == 0.0);
  CHECK_THROWS_AS(nn::Dropout<double>(1.0), ValueError);
}

TEST_CASE(
    "Dropout: a pass over rows o to o + n - 1 with first_example o draws the whole batch's masks "
    "for those rows",
    "[nn][layers][dropout]") {
  auto net = std::make_shared<Seq>();
  net->emplace<nn::Linear<double>>(6, 40);
  net->emplace<nn::Dropout<double>>(0.5);
  net->emplace<nn::Reshape<double>>(std::vector<Index>{5, 8});  // masks of a (N, 5, 8) tensor
  net->emplace<nn::Dropout<double>>(0.3);
  net->emplace<nn::Flatten<double>>();
  net->emplace<nn::Linear<double>>(40, 3);
  nn::Model<double> model(net, 9);
  model.set_step(4);
  CHECK(model.first_example() == 0);
  const Tensor<double> x = batch(7, 6, 4);
  const Tensor<double> whole = model.forward(x);
  const Index o = 2, n = 4;
  model.set_first_example(o);
  const Tensor<double> part = model.forward(x.view(o * 6, Shape{n, 6}).clone());
  for (Index i = 0; i < n * 3; ++i) CHECK(part[i] == Approx(whole[o * 3 + i]).epsilon(1e-14));
  // The same rows as a batch of their own (first_example 0) see other masks.
  nn::Model<double> own = model;
  CHECK(own.first_example() == o);  // a copy keeps it
  own.set_first_example(0);
  CHECK(max_abs_diff(own.forward(x.view(o * 6, Shape{n, 6}).clone()), part) > 1e-6);
  // A single-process training step is a step on its whole batch: first_example back to 0.
  Tensor<double> g = model.zeros_like_parameters();
  nn::SoftmaxCrossEntropy<double> head;
  nn::loss_and_gradient(model, head, x, nn::one_hot<double>({0, 1, 2, 0, 1, 2, 0}, 3), g);
  CHECK(model.first_example() == 0);
  CHECK_THROWS_MATCHES(model.set_first_example(-1), ValueError,
                       MessageContains({"set_first_example", "-1"}));
}

TEST_CASE(
    "ForwardContext: a dropout mask starts at first_example times the values per example, and a "
    "tensor that is not per example is refused once first_example > 0",
    "[nn][layers][dropout][errors]") {
  const std::vector<Tensor<double>> none;
  std::vector<Tensor<double>> state;
  auto context = [&](std::uint64_t first, Index examples) {
    return nn::ForwardContext<Tensor<double>>(std::span<const Tensor<double>>(none),
                                              std::span<Tensor<double>>(state), nn::Mode::train,
                                              false, nn::RandomKey{1, 2, first, examples});
  };
  CHECK(context(3, 4).dropout_first_element(4 * 10) == 30);  // (N = 4, 10): example 3 starts at 30
  CHECK(context(0, 4).dropout_first_element(7) == 0);        // one process: any shape
  CHECK(context(3, 0).dropout_first_element(0) == 0);        // a rank without rows
  CHECK_THROWS_MATCHES(context(3, 4).dropout_first_element(10), ValueError,
                       MessageContains({"dropout", "10 values", "4 examples"}));
}

TEST_CASE("Residual: x + f(x), with a projection when the shapes differ, named body. and projection.",
          "[nn][layers]") {
  auto body = std::make_shared<Seq>();
  body->emplace<nn::Linear<double>>(4, 4);
  body->emplace<nn::Tanh<double>>();
  nn::Model<double> block(std::make_shared<nn::Residual<double>>(body), 2);
  CHECK(block.layout()[0].name == "body.0.weight");
  const Tensor<double> x = batch(3, 4, 6);
  nn::Model<double> only_body(body);
  only_body.scatter(block.parameters());
  const Tensor<double> fx = only_body.forward(x);
  const Tensor<double> y = block.forward(x);
  for (Index i = 0; i < y.size(); ++i) CHECK(y[i] == x[i] + fx[i]);

  auto wide = std::make_shared<nn::Linear<double>>(4, 5);
  nn::Model<double> bad(std::make_shared<nn::Residual<double>>(wide));
  CHECK_THROWS_MATCHES(bad.forward(x), ShapeError, MessageContains({"Residual", "(3, 5)", "(3, 4)", "projection"}));
  nn::Model<double> projected(
      std::make_shared<nn::Residual<double>>(wide, std::make_shared<nn::Linear<double>>(4, 5, false)), 3);
  CHECK(projected.layout().back().name == "projection.weight");
  CHECK(projected.forward(x).shape() == Shape{3, 5});
}

TEST_CASE("FunctionModule: a forward function gives the model, gradient and GGN of the equivalent Sequential",
          "[nn][layers][function]") {
  auto seq = nn::mlp<double>({5, 7, 3}, nn::Act::tanh);
  nn::Model<double> reference(seq, 4);
  auto fn = nn::function_module<double>(
      "tanh MLP as a function",
      {{"w1", Shape{5, 7}, nn::Init::xavier_uniform, 5, 7}, {"b1", Shape{7}}, {"w2", Shape{7, 3}, nn::Init::xavier_uniform, 7, 3},
       {"b2", Shape{3}}},
      [](const auto& x, auto& c) {
        const auto& w1 = c.next();
        const auto& b1 = c.next();
        const auto h = amari::tanh(amari::linear(x, w1, b1));
        const auto& w2 = c.next();
        return amari::linear(h, w2, c.next());
      });
  nn::Model<double> model(fn, 1);
  REQUIRE(model.num_parameters() == reference.num_parameters());
  model.scatter(reference.parameters());
  const Tensor<double> x = batch(4, 5, 8);
  const Tensor<double> y = nn::one_hot<double>({0, 1, 2, 1}, 3);
  CHECK(max_abs_diff(model.forward(x), reference.forward(x)) == 0.0);
  nn::SoftmaxCrossEntropy<double> head;
  Tensor<double> g1 = model.zeros_like_parameters(), g2 = model.zeros_like_parameters();
  nn::loss_and_gradient(model, head, x, y, g1);
  nn::loss_and_gradient(reference, head, x, y, g2);
  CHECK(max_abs_diff(g1, g2) == 0.0);
  curvature::GgnOperator<double> a(model, head, x), b(reference, head, x);
  Rng rng(1);
  const Tensor<double> v = normal_tensor<double>(Shape{model.num_parameters()}, rng);
  Tensor<double> av = model.zeros_like_parameters(), bv = model.zeros_like_parameters();
  a.apply(v, av);
  b.apply(v, bv);
  CHECK(max_abs_diff(av, bv) == 0.0);
  CHECK(model.summary().find("tanh MLP as a function") != std::string::npos);
}

TEST_CASE("Embedding: rows of the table, and a bad index is a ValueError naming it", "[nn][layers]") {
  nn::Model<double> model(std::make_shared<nn::Embedding<double>>(5, 3), 2);
  const Tensor<double> idx = Tensor<double>::from(Shape{2, 2}, {4, 0, 4, 2});
  const Tensor<double> y = model.forward(idx);
  REQUIRE(y.shape() == Shape{2, 2, 3});
  const Tensor<double>& w = model.parameters();
  for (Index k = 0; k < 3; ++k) {
    CHECK(y.at(0, 0, k) == w[4 * 3 + k]);
    CHECK(y.at(1, 1, k) == w[2 * 3 + k]);
  }
  CHECK_THROWS_MATCHES(model.forward(Tensor<double>::from(Shape{2}, {1, 5})), ValueError,
                       MessageContains({"Embedding", "5"}));
  CHECK_THROWS_AS(model.forward(Tensor<double>::from(Shape{2}, {1, 0.5})), ValueError);
}

TEST_CASE("curvature::verify passes on a small CNN (conv, batch norm, pooling, dropout) with each head",
          "[nn][layers][curvature]") {
  const Tensor<double> x = batch(4, 25, 11);
  const nn::SoftmaxCrossEntropy<double> softmax;
  const nn::SigmoidBernoulli<double> bernoulli;
  const nn::Gaussian<double> gaussian(0.7);
  const std::vector<const nn::Head<double>*> heads = {&softmax, &bernoulli, &gaussian};
  for (bool batch_norm : {false, true}) {
    for (const auto* head : heads) {
      nn::Model<double> model(tiny_cnn(batch_norm, batch_norm ? 0.3 : 0), 3);
      REQUIRE(model.num_parameters() <= 300);  // the dense checks run
      curvature::GgnOperator<double> ggn(model, *head, x);
      const auto report = curvature::verify(ggn);
      INFO(report.str());
      CHECK(report.ok());
      CHECK(report.checks.size() >= 5);
    }
  }
}

TEST_CASE("Taps: every Linear and Conv2d reports its input, output and weight index, at any depth",
          "[nn][layers][taps]") {
  struct Recorder final : nn::TapObserver<Var<double>> {
    std::vector<nn::LayerTap<Var<double>>::Kind> kinds;
    std::vector<std::size_t> weights;
    std::vector<Shape> inputs, outputs;
    std::vector<bool> active;
    void on_layer(const nn::LayerTap<Var<double>>& t) override {
      kinds.push_back(t.kind);
      weights.push_back(t.weight_index);
      inputs.push_back(t.input->shape());
      outputs.push_back(t.output->shape());
      active.push_back(t.output->is_active());
    }
  };
  auto net = tiny_cnn(true, 0);
  net->emplace<nn::Residual<double>>(std::make_shared<nn::Linear<double>>(3, 3));
  nn::Model<double> model(net, 1);
  Tape<double> tape;
  const auto params = model.variables(tape);
  Recorder r;
  const Var<double> z = model.forward_observed(Var<double>(batch(2, 25, 3)), std::span<const Var<double>>(params), r);
  using Kind = nn::LayerTap<Var<double>>::Kind;
  REQUIRE(r.kinds.size() == 3);
  CHECK(r.kinds[0] == Kind::conv2d);
  CHECK(r.kinds[1] == Kind::linear);
  CHECK(r.kinds[2] == Kind::linear);
  CHECK(model.layout()[r.weights[0]].name == "1.weight");
  CHECK(model.layout()[r.weights[1]].name == "6.weight");
  CHECK(model.layout()[r.weights[2]].name == "7.body.weight");
  CHECK(r.inputs[0] == Shape{2, 5, 5, 1});
  CHECK(r.outputs[0] == Shape{2, 5, 5, 2});
  CHECK(r.outputs[2] == Shape{2, 3});
  CHECK(r.active == std::vector<bool>{true, true, true});
  CHECK(max_abs_diff(z.value(), model.forward(batch(2, 25, 3))) == 0.0);
}

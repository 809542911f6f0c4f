// Train a 784-256-256-10 tanh MLP with Adam on Fashion-MNIST (Debian's dataset-fashion-mnist).
//
// One progress line per epoch (epoch, mean training loss, test accuracy, seconds) and a last line
// "final test accuracy: 0.8812". The whole run is deterministic for a given seed and thread count.
#include <chrono>
#include <cstdio>

#include "example_support.hpp"

int main(int argc, char** argv) {
  using namespace amari;
  const example::Options opt(argc, argv,
                             {{"epochs", "5"}, {"batch", "128"}, {"lr", "0.001"}, {"seed", "1"},
                              {"data", nn::kFashionMnistDir}, {"train-subset", "0"}},
                             "train_mlp: Adam on Fashion-MNIST with a 784-256-256-10 tanh MLP");
  try {
    const auto data = example::load_fashion_mnist(opt.str("data"), opt.integer("train-subset"));
    const auto seed = static_cast<std::uint64_t>(opt.integer("seed"));
    nn::Model<float> model(nn::mlp<float>({784, 256, 256, 10}, nn::Act::tanh), seed);
    nn::SoftmaxCrossEntropy<float> head;
    nn::Adam<float> adam({.learning_rate = opt.real("lr")});
    Tensor<float> grad = model.zeros_like_parameters();
    Tape<float> tape;
    std::printf("%s", model.summary().c_str());
    std::printf("%lld training and %lld test examples, batch %ld, Adam lr %g\n",
                static_cast<long long>(data.train.size()), static_cast<long long>(data.test.size()),
                opt.integer("batch"), opt.real("lr"));
    double accuracy = 0;
    for (long epoch = 1; epoch <= opt.integer("epochs"); ++epoch) {
      const auto t0 = std::chrono::steady_clock::now();
      double loss_sum = 0;
      long steps = 0;
      for (const auto& b : nn::Batches<float>(data.train, opt.integer("batch"), seed, static_cast<std::uint64_t>(epoch),
                                              nn::LastBatch::drop)) {
        loss_sum += nn::loss_and_gradient(model, head, b.inputs, nn::one_hot<float>(b.labels, 10), grad, tape);
        adam.step(model.parameters(), grad);
        ++steps;
      }
      const auto eval = nn::evaluate(model, head, data.test.inputs, data.test.labels, 10);
      accuracy = eval.accuracy;
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("epoch %ld  train loss %.4f  test accuracy %.4f  %.1f s\n", epoch, loss_sum / steps, eval.accuracy,
                  seconds);
    }
    std::printf("final test accuracy: %.4f\n", accuracy);
  } catch (const amari::Error& e) {
    std::fprintf(stderr, "train_mlp: %s\n", e.what());
    return 1;
  }
  return 0;
}

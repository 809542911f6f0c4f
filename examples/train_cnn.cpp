// Train a convolutional network with Adam on Fashion-MNIST (Debian's dataset-fashion-mnist).
//
//   train_cnn                          the small CNN of examples/cnn_models.hpp, 5 epochs
//   train_cnn --batch-norm 1 --dropout 0.25
//   train_cnn --arch resnet            a small residual network with batch norm
//
// One progress line per epoch (epoch, mean training loss, test accuracy, seconds) and a last line
// "final test accuracy: 0.9150". Batch norm's running statistics move during training (train
// mode); the test set is evaluated in eval mode. Deterministic for a given seed and thread count.
#include <chrono>
#include <cstdio>

#include "cnn_models.hpp"
#include "example_support.hpp"

int main(int argc, char** argv) {
  using namespace amari;
  const example::Options opt(argc, argv,
                             {{"epochs", "5"},
                              {"batch", "128"},
                              {"lr", "0.001"},
                              {"seed", "1"},
                              {"arch", "cnn"},
                              {"batch-norm", "0"},
                              {"dropout", "0"},
                              {"data", nn::kFashionMnistDir},
                              {"train-subset", "0"}},
                             "train_cnn: Adam on Fashion-MNIST with a small CNN (--arch cnn) or ResNet (--arch resnet)");
  try {
    const std::string arch = opt.str("arch");
    if (arch != "cnn" && arch != "resnet") throw ValueError("--arch must be cnn or resnet, got " + arch);
    const auto data = example::load_fashion_mnist(opt.str("data"), opt.integer("train-subset"));
    const auto seed = static_cast<std::uint64_t>(opt.integer("seed"));
    const example::CnnOptions cnn{.batch_norm = opt.integer("batch-norm") != 0, .dropout = opt.real("dropout")};
    nn::Model<float> model(arch == "cnn" ? std::shared_ptr<const nn::Module<float>>(example::small_cnn<float>(cnn))
                                         : example::small_resnet<float>(),
                           seed);
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
      model.train();
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
      std::fflush(stdout);
    }
    std::printf("final test accuracy: %.4f\n", accuracy);
  } catch (const amari::Error& e) {
    std::fprintf(stderr, "train_cnn: %s\n", e.what());
    return 1;
  }
  return 0;
}

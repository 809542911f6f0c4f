// Train a 784-256-256-10 tanh MLP with Adam on Fashion-MNIST (Debian's dataset-fashion-mnist).
//
// One progress line per epoch (epoch, mean training loss, test accuracy, seconds) and a last line
// "final test accuracy: 0.8812". The whole run is deterministic for a given seed and thread count.
// --log-csv FILE / --log-json FILE record every step (examples/training_log.hpp); on a terminal a
// progress bar shows the current epoch.
#include <cstdio>

#include "example_support.hpp"

int main(int argc, char** argv) {
  using namespace amari;
  const example::Options opt(argc, argv,
                             example::with_log_options({{"epochs", "5"},
                                                        {"batch", "128"},
                                                        {"lr", "0.001"},
                                                        {"seed", "1"},
                                                        {"data", nn::kFashionMnistDir},
                                                        {"train-subset", "0"}}),
                             "train_mlp: Adam on Fashion-MNIST with a 784-256-256-10 tanh MLP");
  try {
    example::TrainingLog log = example::open_training_log(opt);
    const auto data = example::load_fashion_mnist(opt.str("data"), opt.integer("train-subset"));
    const auto seed = static_cast<std::uint64_t>(opt.integer("seed"));
    nn::Model<float> model(nn::mlp<float>({784, 256, 256, 10}, nn::Act::tanh), seed);
    nn::SoftmaxCrossEntropy<float> head;
    nn::Adam<float> adam({.learning_rate = opt.real("lr")});
    Tensor<float> grad = model.zeros_like_parameters();
    std::printf("%s", model.summary().c_str());
    std::printf("%lld training and %lld test examples, batch %ld, Adam lr %g\n",
                static_cast<long long>(data.train.size()), static_cast<long long>(data.test.size()),
                opt.integer("batch"), opt.real("lr"));
    double accuracy = 0;
    example::Progress progress("train_mlp");
    example::TrainingClock clock;
    long total_steps = 0;
    const long per_epoch = static_cast<long>(data.train.size()) / opt.integer("batch");
    for (long epoch = 1; epoch <= opt.integer("epochs"); ++epoch) {
      const double epoch_start = clock.seconds();
      clock.resume();
      progress.start(epoch, per_epoch);
      double loss_sum = 0;
      long steps = 0;
      for (const auto& b : nn::Batches<float>(data.train, opt.integer("batch"), seed, static_cast<std::uint64_t>(epoch),
                                              nn::LastBatch::drop)) {
        const double loss =
            nn::loss_and_gradient(model, head, b.inputs, nn::one_hot<float>(b.labels, 10), grad);
        adam.step(model.parameters(), grad);
        loss_sum += loss;
        ++steps, ++total_steps;
        log.write({.optimizer = "adam", .epoch = epoch, .step = total_steps, .seconds = clock.seconds(), .loss = loss});
        progress.update(steps, loss);
      }
      clock.pause();
      progress.finish();
      const auto eval = nn::evaluate(model, head, data.test.inputs, data.test.labels, 10);
      accuracy = eval.accuracy;
      log.write({.record = "epoch", .optimizer = "adam", .epoch = epoch, .step = total_steps,
                 .seconds = clock.seconds(), .loss = loss_sum / steps, .test_loss = eval.loss,
                 .test_accuracy = eval.accuracy});
      std::printf("epoch %ld  train loss %.4f  test accuracy %.4f  %.1f s\n", epoch, loss_sum / steps, eval.accuracy,
                  clock.seconds() - epoch_start);
    }
    std::printf("final test accuracy: %.4f\n", accuracy);
  } catch (const amari::Error& e) {
    std::fprintf(stderr, "train_mlp: %s\n", e.what());
    return 1;
  }
  return 0;
}

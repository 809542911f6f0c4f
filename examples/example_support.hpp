// Shared by the examples: command-line options and data loading.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <amari/amari.hpp>

#include "training_log.hpp"

namespace example {

/// What the options most examples share mean; `--help` prints these next to the defaults.
inline const std::map<std::string, std::string>& common_option_help() {
  static const std::map<std::string, std::string> help = {
      {"epochs", "passes over the training set"},
      {"batch", "minibatch size"},
      {"lr", "learning rate"},
      {"seed", "seed of the initial parameters and of the batch order"},
      {"data", "directory of the Fashion-MNIST files"},
      {"data-dir", "directory of the Fashion-MNIST files"},
      {"train-subset", "use only the first N training examples (0: all)"},
      {"log-csv", "write one CSV record per optimizer step (and per epoch) to FILE"},
      {"log-json", "the same records as JSON Lines (one JSON object per line) to FILE"},
  };
  return help;
}

/// "--name value" options with defaults; "--help" prints them with their meaning. Unknown options
/// are an error (exit status 2). `positional` names options that may also be given as bare
/// arguments, in that order (e.g. "cost_ratios 3 double").
class Options {
 public:
  Options(int argc, char** argv, std::map<std::string, std::string> defaults, const char* usage,
          std::map<std::string, std::string> help = {}, std::vector<std::string> positional = {})
      : values_(std::move(defaults)) {
    for (const auto& [k, h] : common_option_help()) help.try_emplace(k, h);
    std::size_t next_positional = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        print_help(usage, help, positional);
        std::exit(0);
      }
      if (arg.rfind("-", 0) != 0 && next_positional < positional.size()) {
        values_[positional[next_positional++]] = arg;
        continue;
      }
      if (arg.rfind("--", 0) != 0 || i + 1 >= argc || !values_.count(arg.substr(2))) {
        std::fprintf(stderr, "unknown or incomplete option '%s' (see --help)\n", arg.c_str());
        std::exit(2);
      }
      values_[arg.substr(2)] = argv[++i];
    }
  }
  std::string str(const std::string& k) const { return values_.at(k); }
  long integer(const std::string& k) const { return std::strtol(values_.at(k).c_str(), nullptr, 10); }
  double real(const std::string& k) const { return std::strtod(values_.at(k).c_str(), nullptr); }

 private:
  void print_help(const char* usage, const std::map<std::string, std::string>& help,
                  const std::vector<std::string>& positional) const {
    std::printf("%s\n", usage);
    if (values_.empty()) {
      std::printf("no options (besides --help)\n");
      return;
    }
    if (!positional.empty()) {
      std::printf("positional arguments:");
      for (const auto& p : positional) std::printf(" [%s]", p.c_str());
      std::printf("\n");
    }
    std::printf("options (default):\n");
    for (const auto& [k, v] : values_) {
      const auto h = help.find(k);
      const std::string shown = v.empty() ? "(none)" : v;
      std::printf("  --%-20s %-14s %s\n", k.c_str(), shown.c_str(), h != help.end() ? h->second.c_str() : "");
    }
  }

  std::map<std::string, std::string> values_;
};

/// `defaults` plus the training-log options --log-csv FILE and --log-json FILE (empty: not written).
inline std::map<std::string, std::string> with_log_options(std::map<std::string, std::string> defaults) {
  defaults.emplace("log-csv", "");
  defaults.emplace("log-json", "");
  return defaults;
}

/// The training log that --log-csv / --log-json ask for (see training_log.hpp for the records).
inline TrainingLog open_training_log(const Options& opt) {
  return TrainingLog(opt.str("log-csv"), opt.str("log-json"));
}

/// Fashion-MNIST, standardized per feature with training-set statistics; optionally only the first
/// `train_subset` training examples (0: all).
struct FashionMnist {
  amari::nn::Dataset<float> train, test;
};

inline FashionMnist load_fashion_mnist(const std::string& dir, long train_subset) {
  using namespace amari::nn;
  Dataset<float> train = amari::nn::load_fashion_mnist<float>(Split::train, dir);
  Dataset<float> test = amari::nn::load_fashion_mnist<float>(Split::test, dir);
  if (train_subset > 0 && train_subset < train.size()) train = take(train, train_subset);
  const auto standardize = Standardizer<float>::fit(train);
  return {standardize.apply(train), standardize.apply(test)};
}

using Clock = std::chrono::steady_clock;

/// Wall seconds since t0.
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// The command line with a bare "--quick" (last, or followed by another option) given the value
/// "1", so Options (which takes "--name value" pairs) accepts the flag with or without a value.
inline std::vector<std::string> normalize_flags(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--quick" && (i + 1 == args.size() || args[i + 1].rfind("--", 0) == 0)) {
      args.insert(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, "1");
    }
  }
  return args;
}

}  // namespace example

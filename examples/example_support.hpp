// Shared by the Fashion-MNIST examples: command-line options and data loading.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include <amari/amari.hpp>

namespace example {

/// "--name value" options with defaults; "--help" prints them. Unknown options are an error.
class Options {
 public:
  Options(int argc, char** argv, std::map<std::string, std::string> defaults, const char* usage)
      : values_(std::move(defaults)) {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        std::printf("%s\noptions (default):\n", usage);
        for (const auto& [k, v] : values_) std::printf("  --%-18s %s\n", k.c_str(), v.c_str());
        std::exit(0);
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
  std::map<std::string, std::string> values_;
};

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

}  // namespace example

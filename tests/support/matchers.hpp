// Catch2 matchers shared by the tests.
#pragma once

#include <algorithm>
#include <cctype>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

namespace amari::test {

/// Matches an exception whose message contains every given part (case-insensitive): error tests
/// check that a message names the op and the shapes or values involved.
class MessageContains : public Catch::MatcherBase<std::exception> {
 public:
  explicit MessageContains(std::vector<std::string> parts) : parts_(std::move(parts)) {}
  bool match(const std::exception& e) const override {
    const std::string what = lower(e.what());
    return std::all_of(parts_.begin(), parts_.end(),
                       [&](const std::string& p) { return what.find(lower(p)) != std::string::npos; });
  }
  std::string describe() const override {
    std::string s = "has a message containing";
    for (const auto& p : parts_) s += " \"" + p + "\"";
    return s;
  }

 private:
  static std::string lower(std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  }
  std::vector<std::string> parts_;
};

}  // namespace amari::test

#include "autodiff/registry.hpp"

namespace amari::test {

std::vector<AdCase> conv_cases() { return {}; }

}  // namespace amari::test

#include "autodiff/registry.hpp"

namespace amari::test {

std::vector<AdCase> shape_cases() { return {}; }

}  // namespace amari::test

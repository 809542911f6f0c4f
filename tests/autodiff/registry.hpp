// The registry of derivative checks is split by family of primitives, one file each; the test
// cases in primitives_test.cpp run every family through the same expect_ad / expect_errors.
#pragma once

#include <vector>

#include "support/ad_check.hpp"

namespace amari::test {

/// conv2d (cases_conv.cpp).
std::vector<AdCase> conv_cases();
/// max_pool2d, avg_pool2d, global_avg_pool2d, permute, concat, slice, embedding (cases_shape.cpp).
std::vector<AdCase> shape_cases();
/// layer_norm, batch_norm, dropout (cases_norm.cpp).
std::vector<AdCase> norm_cases();

}  // namespace amari::test

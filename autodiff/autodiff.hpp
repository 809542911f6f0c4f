// amari autodiff: tensors, reverse mode (tape), forward mode (dual numbers), and the primitives.
#pragma once
#include <amari/autodiff/error.hpp>
#include <amari/autodiff/shape.hpp>
#include <amari/autodiff/tensor.hpp>
#include <amari/autodiff/dual.hpp>
#include <amari/autodiff/tape.hpp>
#include <amari/autodiff/tape_print.hpp>
#include <amari/autodiff/value.hpp>
#include <amari/autodiff/ops.hpp>
#include <amari/autodiff/transforms.hpp>
#include <amari/autodiff/jacobian.hpp>
#include <amari/autodiff/custom_primitive.hpp>
#include <amari/autodiff/check_rules.hpp>

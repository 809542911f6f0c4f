// amari curvature: matrix-free Fisher/GGN/Hessian products, conjugate gradient, damping.
#pragma once
#include <amari/curvature/cg.hpp>
#include <amari/curvature/damping.hpp>
#include <amari/curvature/fisher.hpp>
#include <amari/curvature/ggn.hpp>
#include <amari/curvature/hessian.hpp>
#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/linearization.hpp>
#include <amari/curvature/vector_ops.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/curvature/verify.hpp>
#include <amari/curvature/cost.hpp>
#include <amari/curvature/dense_solve.hpp>
#include <amari/curvature/kfac.hpp>

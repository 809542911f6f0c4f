// Levenberg-Marquardt adaptation of the damping lambda (SEED-NOTES 5; Martens 2010, sec. 4.1).
//
// After a step d computed by CG on (A + lambda I) d = -g, compare the loss decrease actually
// obtained with the decrease the quadratic model promised:
//   rho = actual_reduction / predicted_reduction,
//   actual_reduction    = f(theta) - f(theta + d)          (> 0 when the loss went down),
//   predicted_reduction = q(0) - q(d) = -phi(d)             (> 0 when CG made progress; phi is
//                                                            CgResult::model_value).
// rho near 1 means the model is trusted at this step size: damp less. rho small or negative means
// the model overstated the decrease: damp more, which shortens the next step.
#pragma once

#include <amari/autodiff/error.hpp>

namespace amari::curvature {

/// rho = actual_reduction / predicted_reduction, with the failure cases mapped to -infinity so
/// that they always count as "the model was wrong":
///  - actual_reduction not finite (the loss became NaN or +-inf at the trial point);
///  - predicted_reduction <= 0 or not finite: the model promised no decrease, which CG started
///    from 0 on a positive definite system never does for g != 0, so the curvature product or the
///    solve failed (at a stationary point, g = 0, the step is 0 and damping more is harmless).
/// Cost O(1).
double reduction_ratio(double actual_reduction, double predicted_reduction);

/// Levenberg-Marquardt rule for the damping lambda (Martens 2010, sec. 4.1): with
/// rho = reduction_ratio(actual, predicted), rho < low multiplies lambda by `increase`, rho > high
/// multiplies it by `decrease`, otherwise lambda is unchanged; the result is clamped to
/// [min_lambda, max_lambda]. Aggregate: LevenbergMarquardt lm{.lambda = 1.0};
/// min_lambda > 0 by default because a multiplicative rule can never leave lambda = 0.
struct LevenbergMarquardt {
  double lambda = 1.0;
  double decrease = 2.0 / 3.0;
  double increase = 1.5;
  double low = 0.25;
  double high = 0.75;
  double min_lambda = 1e-8;
  double max_lambda = 1e8;

  /// Updates lambda from one step's actual and predicted reductions and returns rho (see
  /// reduction_ratio). Throws ValueError (lambda unchanged) if the settings are inconsistent:
  /// lambda, min_lambda, max_lambda not finite or min_lambda < 0 or min_lambda > max_lambda,
  /// increase < 1, decrease not in (0, 1], low > high or either not finite.
  double update(double actual_reduction, double predicted_reduction);
  /// Throws ValueError describing the first inconsistent setting, as update() does.
  void validate() const;
};

}  // namespace amari::curvature

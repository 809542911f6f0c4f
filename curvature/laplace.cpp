#include <amari/curvature/laplace.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include <amari/curvature/detail/format.hpp>
#include <utility>

namespace amari::curvature {

namespace {

template <Real T>
void check_data(const char* who, const Tensor<T>& inputs, const Tensor<T>& targets,
                Index batch_size) {
  if (!inputs.defined() || !targets.defined() || inputs.rank() < 1 || targets.rank() != 2 ||
      inputs.dim(0) != targets.dim(0)) {
    throw ShapeError(std::string(who) + ": inputs (N, ...) and targets (N, C) must agree on N, got " +
                     inputs.shape().str() + " and " + targets.shape().str());
  }
  if (inputs.dim(0) == 0) throw ShapeError(std::string(who) + ": no training examples (N = 0)");
  if (batch_size < 1) {
    throw ValueError(std::string(who) + ": batch_size must be >= 1, got " +
                     std::to_string(batch_size));
  }
}

}  // namespace

const char* to_string(LaplaceLikelihood likelihood) {
  switch (likelihood) {
    case LaplaceLikelihood::categorical:
      return "categorical";
    case LaplaceLikelihood::bernoulli:
      return "bernoulli";
    case LaplaceLikelihood::gaussian:
      return "gaussian";
  }
  return "unknown";
}

template <Real T>
LaplaceLikelihood likelihood_of(const nn::Head<T>& head) {
  // The three heads are the exponential families of SEED-NOTES 3; the likelihood's constant and
  // the predictive's link belong to the family, which the Head interface does not name.
  if (dynamic_cast<const nn::SoftmaxCrossEntropy<T>*>(&head)) return LaplaceLikelihood::categorical;
  if (dynamic_cast<const nn::SigmoidBernoulli<T>*>(&head)) return LaplaceLikelihood::bernoulli;
  if (dynamic_cast<const nn::Gaussian<T>*>(&head)) return LaplaceLikelihood::gaussian;
  throw ValueError("Laplace: the head '" + head.name() +
                   "' is not one of softmax cross-entropy, sigmoid Bernoulli or Gaussian");
}

template <Real T>
double log_likelihood(const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& inputs,
                      const Tensor<T>& targets, Index batch_size) {
  check_data("log_likelihood", inputs, targets, batch_size);
  const LaplaceLikelihood kind = likelihood_of(head);
  const Index n = inputs.dim(0), c = targets.dim(1);
  double sum = 0;  // of the per-example NLL
  for (Index begin = 0; begin < n; begin += batch_size) {
    const Index count = std::min(batch_size, n - begin);
    const Tensor<T> z = model.forward(batch_rows(inputs, begin, count));
    const double mean = static_cast<double>(head.loss(z, batch_rows(targets, begin, count)).item());
    sum += mean * static_cast<double>(count);
  }
  if (kind == LaplaceLikelihood::gaussian) {
    sum += static_cast<double>(n) * dynamic_cast<const nn::Gaussian<T>&>(head).nll_constant(c);
  }
  return -sum;
}

// ---- Laplace --------------------------------------------------------------------------------------

template <Real T>
void Laplace<T>::check_delta(const char* who, double delta) {
  if (!(delta > 0) || !std::isfinite(delta)) {
    throw ValueError(std::string(who) + ": the prior precision must be finite and > 0, got " +
                     detail::format_precise(delta));
  }
}

namespace {

// One group per parameter tensor of the model inside [offset, offset + size).
template <Real T>
std::vector<PriorGroup> tensor_groups(const nn::Model<T>& model, Index offset, Index size) {
  std::vector<PriorGroup> groups;
  for (const nn::ParamInfo& p : model.layout()) {
    const Index begin = std::max(p.offset, offset), end = std::min(p.offset + p.shape.numel(), offset + size);
    if (begin < end) groups.push_back({p.name, begin - offset, end - begin});
  }
  return groups;
}

// The groups must partition [0, size): sorted by offset, each non-empty, no gap, no overlap.
void check_groups(const char* who, std::vector<PriorGroup>& groups, Index size) {
  std::sort(groups.begin(), groups.end(), [](const PriorGroup& a, const PriorGroup& b) { return a.offset < b.offset; });
  Index next = 0;
  for (const PriorGroup& g : groups) {
    if (g.size < 1 || g.offset != next) {
      throw ValueError(std::string(who) + ": the prior groups do not partition the " + std::to_string(size) +
                       " parameters (group '" + g.name + "' at offset " + std::to_string(g.offset) + " of size " +
                       std::to_string(g.size) + ", expected offset " + std::to_string(next) + ")");
    }
    next += g.size;
  }
  if (next != size) {
    throw ValueError(std::string(who) + ": the prior groups cover " + std::to_string(next) + " of the " +
                     std::to_string(size) + " parameters");
  }
}

}  // namespace

template <Real T>
Laplace<T>::Laplace(const char* who, const nn::Model<T>& model, const nn::Head<T>& head,
                    const Tensor<T>& inputs, const Tensor<T>& targets,
                    const LaplaceOptions& options, Index offset, Index size, std::vector<PriorGroup> groups)
    : model_(&model), head_(&head), likelihood_(likelihood_of(head)), offset_(offset), size_(size) {
  check_data(who, inputs, targets, options.batch_size);
  check_delta(who, options.prior_precision);
  if (offset < 0 || size < 0 || offset + size > model.num_parameters()) {
    throw ValueError(std::string(who) + ": parameters [" + std::to_string(offset) + ", " +
                     std::to_string(offset + size) + ") outside the model's " +
                     std::to_string(model.num_parameters()));
  }
  groups_ = groups.empty() ? tensor_groups(model, offset, size) : std::move(groups);
  check_groups(who, groups_, size);
  precisions_ = options.prior_precisions.empty()
                    ? std::vector<double>(groups_.size(), options.prior_precision)
                    : options.prior_precisions;
  prior_diagonal_ = prior_diagonal(who, precisions_);
  num_data_ = static_cast<double>(inputs.dim(0));
  log_likelihood_ = curvature::log_likelihood(model, head, inputs, targets, options.batch_size);
  if (!std::isfinite(log_likelihood_)) {
    throw ValueError(std::string(who) + ": the training log likelihood " + detail::format_precise(log_likelihood_) +
                     " is not finite");
  }
  theta_ = model.gather();
  mean_ = Tensor<double>::uninitialized(Shape{size});
  for (Index i = 0; i < size; ++i) mean_[i] = static_cast<double>(theta_[offset + i]);
  for (const PriorGroup& g : groups_) {
    double sq = 0;
    for (Index i = g.offset; i < g.offset + g.size; ++i) sq += mean_[i] * mean_[i];
    group_norms_.push_back(sq);
  }
}

template <Real T>
Tensor<double> Laplace<T>::prior_diagonal(const char* who, const std::vector<double>& deltas) const {
  if (deltas.size() != groups_.size()) {
    throw ValueError(std::string(who) + ": " + std::to_string(deltas.size()) + " prior precisions for " +
                     std::to_string(groups_.size()) + " prior groups");
  }
  for (double d : deltas) check_delta(who, d);
  Tensor<double> out = Tensor<double>::uninitialized(Shape{size_});
  for (std::size_t g = 0; g < groups_.size(); ++g)
    for (Index i = groups_[g].offset; i < groups_[g].offset + groups_[g].size; ++i) out[i] = deltas[g];
  return out;
}

template <Real T>
bool Laplace<T>::all_equal(const std::vector<double>& deltas) {
  return std::all_of(deltas.begin(), deltas.end(), [&](double d) { return d == deltas.front(); });
}

template <Real T>
double Laplace<T>::prior_precision() const {
  if (!all_equal(precisions_)) {
    throw ValueError("Laplace::prior_precision: the " + std::to_string(precisions_.size()) +
                     " prior groups have different precisions; read prior_precisions()");
  }
  return precisions_.front();
}

template <Real T>
void Laplace<T>::set_prior_precision(double delta) {
  check_delta("Laplace::set_prior_precision", delta);
  set_prior_precisions(std::vector<double>(groups_.size(), delta));
}

template <Real T>
void Laplace<T>::set_prior_precisions(const std::vector<double>& deltas) {
  Tensor<double> diagonal = prior_diagonal("Laplace::set_prior_precisions", deltas);
  precisions_ = deltas;
  prior_diagonal_ = std::move(diagonal);
  prior_precision_changed();
}

template <Real T>
double Laplace<T>::log_det_posterior_precision(double delta) const {
  check_delta("Laplace::log_det_posterior_precision", delta);
  return log_det_posterior_precision(std::vector<double>(groups_.size(), delta));
}

template <Real T>
double Laplace<T>::log_marginal_likelihood(double delta) const {
  check_delta("Laplace::log_marginal_likelihood", delta);
  return log_marginal_likelihood(std::vector<double>(groups_.size(), delta));
}

template <Real T>
double Laplace<T>::log_marginal_likelihood(const std::vector<double>& deltas) const {
  prior_diagonal("Laplace::log_marginal_likelihood", deltas);  // checks the count and the values
  // log p(theta*) + (P/2) log 2 pi = sum_g [(n_g/2) log delta_g - (delta_g/2) |theta*_g|^2].
  double prior = 0;
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    prior += 0.5 * static_cast<double>(groups_[g].size) * std::log(deltas[g]) - 0.5 * deltas[g] * group_norms_[g];
  }
  return log_likelihood_ - 0.5 * log_det_posterior_precision(deltas) + prior;
}

namespace {

void check_fit_options(const char* who, const PriorFitOptions& o) {
  if (!std::isfinite(o.log10_min) || !std::isfinite(o.log10_max) || !(o.log10_min < o.log10_max)) {
    throw ValueError(std::string(who) + ": the range [" + detail::format_precise(o.log10_min) + ", " +
                     detail::format_precise(o.log10_max) + "] of log10 delta must be finite and non-empty");
  }
  if (o.grid_points < 3) {
    throw ValueError(std::string(who) + ": grid_points must be >= 3, got " +
                     std::to_string(o.grid_points));
  }
  if (!(o.tolerance > 0) || !std::isfinite(o.tolerance)) {
    throw ValueError(std::string(who) + ": tolerance must be finite and > 0, got " +
                     detail::format_precise(o.tolerance));
  }
  if (o.max_iterations < 0) {
    throw ValueError(std::string(who) + ": max_iterations must be >= 0, got " +
                     std::to_string(o.max_iterations));
  }
}

// Golden-section search for the maximum of f on [a, b] until the bracket is narrower than
// `tolerance` or after max_iterations; returns the better of the last two interior points.
template <class F>
std::pair<double, double> golden_section_max(F& f, double a, double b, double tolerance,
                                             int max_iterations) {
  const double r = (std::sqrt(5.0) - 1.0) / 2.0;
  double c = b - r * (b - a), d = a + r * (b - a);
  double fc = f(c), fd = f(d);
  for (int it = 0; it < max_iterations && b - a > tolerance; ++it) {
    if (fc >= fd) {  // the maximum is in [a, d]
      b = d;
      d = c;
      fd = fc;
      c = b - r * (b - a);
      fc = f(c);
    } else {  // in [c, b]
      a = c;
      c = d;
      fc = fd;
      d = a + r * (b - a);
      fd = f(d);
    }
  }
  return fc >= fd ? std::pair{c, fc} : std::pair{d, fd};
}

// The maximum over t in [lo, hi] of f(t): a log-spaced grid, then golden section between the
// best grid point's neighbours (for a concave f: its one maximum). The grid values go to `grid`
// and `grid_values` when given.
template <class F>
std::pair<double, double> maximize_1d(F& f, const PriorFitOptions& o, std::vector<double>* grid,
                                      std::vector<double>* grid_values) {
  const double lo = o.log10_min * std::log(10.0), hi = o.log10_max * std::log(10.0);
  const int g = o.grid_points;
  std::vector<double> ts(static_cast<std::size_t>(g));
  double best_t = lo, best_f = -std::numeric_limits<double>::infinity();
  int best_g = 0;
  for (int k = 0; k < g; ++k) {
    const double t = k == g - 1 ? hi : lo + (hi - lo) * k / (g - 1);
    const double v = f(t);
    ts[static_cast<std::size_t>(k)] = t;
    if (grid) grid->push_back(std::exp(t));
    if (grid_values) grid_values->push_back(v);
    if (v > best_f) {
      best_f = v;
      best_t = t;
      best_g = k;
    }
  }
  const auto [t, v] = golden_section_max(f, ts[static_cast<std::size_t>(std::max(best_g - 1, 0))],
                                         ts[static_cast<std::size_t>(std::min(best_g + 1, g - 1))],
                                         o.tolerance, o.max_iterations);
  if (v > best_f) return {t, v};
  return {best_t, best_f};
}

bool at_boundary(double t, const PriorFitOptions& o) {
  const double lo = o.log10_min * std::log(10.0), hi = o.log10_max * std::log(10.0);
  return t - lo <= o.tolerance || hi - t <= o.tolerance;
}

}  // namespace

template <Real T>
PriorFit Laplace<T>::fit_prior_precision(const PriorFitOptions& o) {
  const char* who = "Laplace::fit_prior_precision";
  check_fit_options(who, o);
  PriorFit fit;
  // The objective in t = log delta; non-finite values rank below every finite one. A delta at
  // which the posterior precision is not numerically positive definite (ValueError from a
  // structure) counts as -infinity too.
  auto objective = [&](double t) {
    ++fit.evaluations;
    double v = -std::numeric_limits<double>::infinity();
    try {
      v = log_marginal_likelihood(std::exp(t));
    } catch (const ValueError&) {
    }
    return std::isfinite(v) ? v : -std::numeric_limits<double>::infinity();
  };
  const auto [best_t, best_f] = maximize_1d(objective, o, &fit.grid, &fit.grid_log_marginal_likelihood);
  if (!std::isfinite(best_f)) {
    throw ValueError(std::string(who) + ": the log marginal likelihood is not finite anywhere in " +
                     "delta in [1e" + detail::format_precise(o.log10_min) + ", 1e" + detail::format_precise(o.log10_max) + "]");
  }
  fit.prior_precision = std::exp(best_t);
  fit.prior_precisions.assign(groups_.size(), fit.prior_precision);
  fit.log_marginal_likelihood = best_f;
  fit.at_boundary = at_boundary(best_t, o);
  set_prior_precision(fit.prior_precision);
  return fit;
}

template <Real T>
PriorFit Laplace<T>::fit_prior_precisions(const PriorFitOptions& o) {
  const char* who = "Laplace::fit_prior_precisions";
  check_fit_options(who, o);
  if (o.max_sweeps < 1) {
    throw ValueError(std::string(who) + ": max_sweeps must be >= 1, got " + std::to_string(o.max_sweeps));
  }
  PriorFit fit = fit_prior_precision(o);
  std::vector<double> t(groups_.size(), std::log(fit.prior_precision));
  double best = fit.log_marginal_likelihood;
  auto deltas_of = [](const std::vector<double>& ts) {
    std::vector<double> d;
    for (double x : ts) d.push_back(std::exp(x));
    return d;
  };
  for (int sweep = 0; sweep < o.max_sweeps; ++sweep) {
    const double before = best;
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      // Group g's log delta, the others fixed.
      auto objective = [&](double tg) {
        ++fit.evaluations;
        std::vector<double> ts = t;
        ts[g] = tg;
        double v = -std::numeric_limits<double>::infinity();
        try {
          v = log_marginal_likelihood(deltas_of(ts));
        } catch (const ValueError&) {
        }
        return std::isfinite(v) ? v : -std::numeric_limits<double>::infinity();
      };
      const auto [tg, v] = maximize_1d(objective, o, nullptr, nullptr);
      if (v > best) {  // never step down: the current point is kept on ties
        best = v;
        t[g] = tg;
      }
    }
    ++fit.sweeps;
    if (best - before <= 1e-9 * (1.0 + std::fabs(best))) break;
  }
  fit.prior_precisions = deltas_of(t);
  fit.log_marginal_likelihood = best;
  fit.at_boundary = std::any_of(t.begin(), t.end(), [&](double x) { return at_boundary(x, o); });
  set_prior_precisions(fit.prior_precisions);
  return fit;
}

template <Real T>
void Laplace<T>::check_parameters_unchanged(const char* who) const {
  const Tensor<T>& now = model_->parameters();
  if (now.size() != theta_.size() || !std::equal(now.begin(), now.end(), theta_.begin())) {
    throw ValueError(std::string(who) + ": the model's parameters changed since the Laplace " +
                     "approximation was built at theta*");
  }
}

template <Real T>
bool Laplace<T>::layerwise_covariance(BatchJacobians<T>&, Tensor<double>&) const {
  return false;
}

template <Real T>
void Laplace<T>::chunk_functional(const Tensor<T>& inputs, const PredictiveOptions& options,
                                  Tensor<double>& mean, Tensor<double>& covariance) const {
  BatchJacobians<T> jac(*model_, inputs);
  const Tensor<T>& z = jac.logits();
  for (Index q = 0; q < z.size(); ++q) mean[q] = static_cast<double>(z[q]);
  if (options.jacobians == PredictiveJacobians::automatic && jac.layerwise() &&
      layerwise_covariance(jac, covariance)) {
    return;
  }
  // Per example: the C rows of J_i restricted to the posterior's parameters, Sigma times each.
  const Index b = jac.batch_size(), c = jac.num_outputs(), p = model_->num_parameters();
  std::vector<Tensor<double>> rows, products;
  for (Index k = 0; k < c; ++k) {
    rows.push_back(Tensor<double>::uninitialized(Shape{size_}));
    products.push_back(Tensor<double>::uninitialized(Shape{size_}));
  }
  for (Index i = 0; i < b; ++i) {
    const Tensor<double> j = jac.example_jacobian(i);
    for (Index k = 0; k < c; ++k) {
      std::copy(j.data() + k * p + offset_, j.data() + k * p + offset_ + size_, rows[static_cast<std::size_t>(k)].data());
      covariance_product(rows[static_cast<std::size_t>(k)], products[static_cast<std::size_t>(k)]);
    }
    double* ci = covariance.data() + i * c * c;
    for (Index x = 0; x < c; ++x) {
      for (Index y = x; y < c; ++y) {
        const double* rx = rows[static_cast<std::size_t>(x)].data();
        const double* py = products[static_cast<std::size_t>(y)].data();
        double s = 0;
        for (Index q = 0; q < size_; ++q) s += rx[q] * py[q];
        ci[x * c + y] = s;
        ci[y * c + x] = s;
      }
    }
  }
}

template <Real T>
FunctionalPosterior Laplace<T>::functional_posterior(const Tensor<T>& inputs,
                                                     const PredictiveOptions& options) const {
  const char* who = "Laplace::functional_posterior";
  check_parameters_unchanged(who);
  if (!inputs.defined() || inputs.rank() < 1 || inputs.dim(0) == 0) {
    throw ShapeError(std::string(who) + ": expects a non-empty batch of inputs (B, ...), got " +
                     inputs.shape().str());
  }
  if (options.batch_size < 1) {
    throw ValueError(std::string(who) + ": batch_size must be >= 1, got " +
                     std::to_string(options.batch_size));
  }
  const Index n = inputs.dim(0);
  FunctionalPosterior out;
  for (Index begin = 0; begin < n; begin += options.batch_size) {
    const Index count = std::min(options.batch_size, n - begin);
    const Tensor<T> chunk = batch_rows(inputs, begin, count);
    // The number of outputs is known after the first chunk's forward pass.
    Tensor<double> mean, cov;
    if (out.mean.defined()) {
      const Index c = out.mean.dim(1);
      mean = out.mean.view(begin * c, Shape{count, c});
      cov = out.covariance.view(begin * c * c, Shape{count, c, c});
      chunk_functional(chunk, options, mean, cov);
      continue;
    }
    const Index c = model_->forward(batch_rows(inputs, 0, 1)).dim(1);
    out.mean = Tensor<double>(Shape{n, c});
    out.covariance = Tensor<double>(Shape{n, c, c});
    mean = out.mean.view(0, Shape{count, c});
    cov = out.covariance.view(0, Shape{count, c, c});
    chunk_functional(chunk, options, mean, cov);
  }
  return out;
}

template <Real T>
Tensor<double> Laplace<T>::predict_probit(const Tensor<T>& inputs,
                                          const PredictiveOptions& options) const {
  if (likelihood_ == LaplaceLikelihood::gaussian) {
    throw ValueError("Laplace::predict_probit: the Gaussian head predicts means and variances " +
                     std::string("(predict_regression), not class probabilities"));
  }
  const FunctionalPosterior f = functional_posterior(inputs, options);
  return likelihood_ == LaplaceLikelihood::categorical ? probit_softmax(f) : probit_sigmoid(f);
}

template <Real T>
Tensor<double> Laplace<T>::predict_monte_carlo(const Tensor<T>& inputs,
                                               const PredictiveOptions& options) const {
  if (likelihood_ == LaplaceLikelihood::gaussian) {
    throw ValueError("Laplace::predict_monte_carlo: the Gaussian head predicts means and " +
                     std::string("variances (predict_regression), not class probabilities"));
  }
  if (options.samples < 1) {
    throw ValueError("Laplace::predict_monte_carlo: samples must be >= 1, got " +
                     std::to_string(options.samples));
  }
  const FunctionalPosterior f = functional_posterior(inputs, options);
  return likelihood_ == LaplaceLikelihood::categorical
             ? monte_carlo_softmax(f, options.samples, options.seed)
             : monte_carlo_sigmoid(f, options.samples, options.seed);
}

template <Real T>
RegressionPredictive Laplace<T>::predict_regression(const Tensor<T>& inputs,
                                                    const PredictiveOptions& options) const {
  if (likelihood_ != LaplaceLikelihood::gaussian) {
    throw ValueError(std::string("Laplace::predict_regression: needs the Gaussian head, got '") +
                     head_->name() + "'");
  }
  FunctionalPosterior f = functional_posterior(inputs, options);
  const double s = dynamic_cast<const nn::Gaussian<T>&>(*head_).sigma();
  const Index b = f.mean.dim(0), c = f.mean.dim(1);
  RegressionPredictive out{f.mean, Tensor<double>::uninitialized(f.mean.shape())};
  for (Index i = 0; i < b; ++i)
    for (Index k = 0; k < c; ++k) out.variance[i * c + k] = f.covariance[(i * c + k) * c + k] + s * s;
  return out;
}

template class Laplace<float>;
template class Laplace<double>;
template LaplaceLikelihood likelihood_of<float>(const nn::Head<float>&);
template LaplaceLikelihood likelihood_of<double>(const nn::Head<double>&);
template double log_likelihood<float>(const nn::Model<float>&, const nn::Head<float>&,
                                      const Tensor<float>&, const Tensor<float>&, Index);
template double log_likelihood<double>(const nn::Model<double>&, const nn::Head<double>&,
                                       const Tensor<double>&, const Tensor<double>&, Index);

}  // namespace amari::curvature

#include <amari/curvature/verify.hpp>

#include <cmath>
#include <cstdio>
#include <limits>

#include <amari/curvature/hessian.hpp>
#include <amari/curvature/jtmj_operator.hpp>
#include <amari/curvature/vector_ops.hpp>
#include <amari/nn/random.hpp>

namespace amari::curvature {

bool VerifyReport::ok() const {
  for (const auto& c : checks)
    if (!c.passed) return false;
  return true;
}

std::string VerifyReport::str() const {
  std::string s = "verify " + subject + ": " + (ok() ? "all checks passed" : "FAILED") + "\n";
  char buf[512];
  for (const auto& c : checks) {
    std::snprintf(buf, sizeof buf, "  %s %-22s %.3e (tolerance %.1e)%s%s\n", c.passed ? "PASS" : "FAIL",
                  c.name.c_str(), c.value, c.tolerance, c.detail.empty() ? "" : "  ", c.detail.c_str());
    s += buf;
  }
  return s;
}

namespace {

template <Real T>
double default_tolerance(const VerifyOptions& o) {
  if (o.tolerance > 0) return o.tolerance;
  return std::is_same_v<T, double> ? 1e-9 : 2e-3;
}

template <Real T>
Tensor<T> probe(Index n, nn::Rng& rng) {
  Tensor<T> v = Tensor<T>::uninitialized(Shape{n});
  for (Index i = 0; i < n; ++i) v[i] = static_cast<T>(rng.normal());
  return v;
}

template <Real T>
void operator_checks(LinearOperator<T>& op, const VerifyOptions& o, VerifyReport& rep) {
  const double tol = default_tolerance<T>(o);
  const Index n = op.size();
  nn::Rng rng(o.seed);
  Tensor<T> au = Tensor<T>::uninitialized(Shape{n}), av = Tensor<T>::uninitialized(Shape{n});
  double worst_sym = 0, min_quad = std::numeric_limits<double>::infinity();
  bool finite = true;
  for (int k = 0; k < o.probes; ++k) {
    const Tensor<T> u = probe<T>(n, rng), v = probe<T>(n, rng);
    op.apply(u, au);
    op.apply(v, av);
    finite = finite && all_finite(au) && all_finite(av);
    const double a = dot(u, av), b = dot(v, au);
    const double scale = norm(u) * norm(av) + norm(v) * norm(au) + 1e-300;
    worst_sym = std::fmax(worst_sym, std::fabs(a - b) / scale);
    min_quad = std::fmin(min_quad, dot(v, av) / (norm(v) * norm(av) + 1e-300));
  }
  rep.checks.push_back({"finite products", finite, finite ? 0.0 : 1.0, 0.0, ""});
  rep.checks.push_back({"symmetry", worst_sym <= tol, worst_sym, tol, "max |u'Av - v'Au| / scale"});
  if (o.expect_psd) {
    // v^T A v / (|v| |A v|) is a cosine; allow rounding below zero only.
    rep.checks.push_back({"positivity", min_quad >= -tol, min_quad, tol, "min v'Av / (|v| |Av|)"});
  }
  if (n <= o.dense_limit) {
    Tensor<T> dense(Shape{n, n}), e(Shape{n}), col = Tensor<T>::uninitialized(Shape{n});
    for (Index j = 0; j < n; ++j) {
      e.fill(T(0));
      e[j] = T(1);
      op.apply(e, col);
      for (Index i = 0; i < n; ++i) dense[i * n + j] = col[i];
    }
    double asym = 0, mag = 0;
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        asym = std::fmax(asym, std::fabs(static_cast<double>(dense[i * n + j]) - dense[j * n + i]));
        mag = std::fmax(mag, std::fabs(static_cast<double>(dense[i * n + j])));
      }
    rep.checks.push_back({"dense symmetry", asym <= tol * (mag + 1e-300), asym / (mag + 1e-300), tol,
                          "max |A_ij - A_ji| / max |A_ij| over " + std::to_string(n) + " columns"});
  }
}

template <Real T>
void linearization_checks(nn::RecordedModel<T>& lin, const VerifyOptions& o, VerifyReport& rep) {
  const double tol = default_tolerance<T>(o);
  nn::Rng rng(o.seed + 1000);
  const Index p = lin.num_parameters();
  const Shape zs = lin.logits().shape();
  Tensor<T> jv = Tensor<T>::uninitialized(zs), jtb = Tensor<T>::uninitialized(Shape{p});
  double worst_adj = 0, worst_fd = 0;
  const auto& model = lin.model();
  for (int k = 0; k < o.probes; ++k) {
    const Tensor<T> v = probe<T>(p, rng);
    Tensor<T> b = Tensor<T>::uninitialized(zs);
    for (Index i = 0; i < b.size(); ++i) b[i] = static_cast<T>(rng.normal());
    lin.jvp(v, jv);
    lin.vjp(b, jtb);
    const double lhs = dot(b.reshaped(Shape{b.size()}), jv.reshaped(Shape{jv.size()})), rhs = dot(jtb, v);
    worst_adj = std::fmax(worst_adj, std::fabs(lhs - rhs) / (std::fabs(lhs) + std::fabs(rhs) + 1e-300));
    // Central differences of the logits along v, in double arithmetic on T parameters.
    const double h = std::is_same_v<T, double> ? 1e-5 : 1e-2;
    auto logits_at = [&](double s) {
      Tensor<T> theta = lin.parameters().clone();
      axpy(s, v, theta);
      const std::vector<Tensor<T>> views = model.split(theta);
      return model.forward(lin.inputs(), std::span<const Tensor<T>>(views));
    };
    const Tensor<T> zp = logits_at(h), zm = logits_at(-h);
    double err = 0, mag = 0;
    for (Index i = 0; i < jv.size(); ++i) {
      const double fd = (static_cast<double>(zp[i]) - zm[i]) / (2 * h);
      err += (fd - jv[i]) * (fd - jv[i]);
      mag += static_cast<double>(jv[i]) * jv[i];
    }
    worst_fd = std::fmax(worst_fd, std::sqrt(err / (mag + 1e-300)));
  }
  rep.checks.push_back({"adjoint identity", worst_adj <= tol, worst_adj, tol, "<b, J v> vs <J^T b, v>"});
  // Finite differences are only as good as their truncation and rounding errors.
  const double fd_tol = std::is_same_v<T, double> ? 1e-6 : 5e-2;
  rep.checks.push_back({"finite differences", worst_fd <= fd_tol, worst_fd, fd_tol, "J v vs central differences"});
}


// Dense (1/N) sum_i J_i^T M_i J_i from the columns J e_j and the operator's own logit-space
// matrix, against the operator's products: C_jk = (1/N) <J e_j, M J e_k>. P JVPs, P products.
template <Real T>
void dense_jtmj_check(JtMJOperator<T>& op, const VerifyOptions& options, VerifyReport& rep) {
  ModelLinearization<T>& lin = op.linearization();
  const Index p = lin.num_parameters();
  const Shape zs = lin.logits().shape();
  std::vector<Tensor<T>> cols;
  Tensor<T> e(Shape{p});
  for (Index j = 0; j < p; ++j) {
    e.fill(T(0));
    e[j] = T(1);
    Tensor<T> c = Tensor<T>::uninitialized(zs);
    lin.jvp(e, c);
    cols.push_back(c);
  }
  Tensor<T> mc = Tensor<T>::uninitialized(zs), ccol = Tensor<T>::uninitialized(Shape{p});
  double err = 0, mag = 0;
  const double inv_n = 1.0 / static_cast<double>(zs[0]);
  for (Index k = 0; k < p; ++k) {
    op.logit_matrix_product(cols[static_cast<std::size_t>(k)], mc);
    e.fill(T(0));
    e[k] = T(1);
    op.apply(e, ccol);
    for (Index j = 0; j < p; ++j) {
      const Tensor<T>& cj = cols[static_cast<std::size_t>(j)];
      double g = 0;
      for (Index i = 0; i < cj.size(); ++i) g += static_cast<double>(cj[i]) * mc[i];
      g *= inv_n;
      err = std::fmax(err, std::fabs(g - ccol[j]));
      mag = std::fmax(mag, std::fabs(g));
    }
  }
  const double tol = default_tolerance<T>(options);
  rep.checks.push_back({"dense J^T M J", err <= tol * (mag + 1e-300), err / (mag + 1e-300), tol,
                        "products vs the matrix assembled from JVPs and the logit-space M"});
}

}  // namespace

template <Real T>
VerifyReport verify(LinearOperator<T>& op, const VerifyOptions& options) {
  VerifyReport rep;
  rep.subject = op.name();
  operator_checks(op, options, rep);
  // The model-level checks, chosen from what the operator is at run time.
  if (auto* jtmj = dynamic_cast<JtMJOperator<T>*>(&op)) {
    linearization_checks(jtmj->linearization().record(), options, rep);
    if (jtmj->size() <= options.dense_limit) dense_jtmj_check(*jtmj, options, rep);
  } else if (auto* hessian = dynamic_cast<HessianOperator<T>*>(&op)) {
    linearization_checks(hessian->record(), options, rep);
  }
  return rep;
}

template VerifyReport verify<float>(LinearOperator<float>&, const VerifyOptions&);
template VerifyReport verify<double>(LinearOperator<double>&, const VerifyOptions&);

}  // namespace amari::curvature

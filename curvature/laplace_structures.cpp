#include <amari/curvature/laplace_structures.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <amari/curvature/detail/format.hpp>

#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/dense_solve.hpp>

namespace amari::curvature {

namespace {

using kernels::Trans;

// C (m, n) = op(A) op(B) in double, row-major with tight strides.
void matmul(Trans ta, Trans tb, Index m, Index n, Index k, const double* a, const double* b,
            double* c) {
  kernels::gemm<double>(ta, tb, m, n, k, 1.0, a, ta == Trans::no ? k : m, b,
                        tb == Trans::no ? n : k, 0.0, c, n);
}

// A copy of a diagonal argument (P) in double: finite and >= 0.
template <Real T>
Tensor<double> checked_diagonal(const char* who, const Tensor<T>& d, Index p) {
  if (!d.defined() || d.rank() != 1 || d.size() != p) {
    throw ShapeError(std::string(who) + ": the curvature diagonal must have shape (" +
                     std::to_string(p) + "), got " + d.shape().str());
  }
  Tensor<double> out = Tensor<double>::uninitialized(Shape{p});
  for (Index i = 0; i < p; ++i) {
    const double x = static_cast<double>(d[i]);
    if (!(x >= 0) || !std::isfinite(x)) {
      throw ValueError(std::string(who) + ": curvature diagonal entry " + std::to_string(i) +
                       " is " + detail::format_precise(x) + ", expected finite and >= 0");
    }
    out[i] = x;
  }
  return out;
}

Tensor<double> to_double(const auto& t) {
  Tensor<double> out = Tensor<double>::uninitialized(t.shape());
  for (Index i = 0; i < t.size(); ++i) out[i] = static_cast<double>(t[i]);
  return out;
}

// The layer's block of a flat diagonal-like vector as (rows, out) values f(x).
template <class F>
Tensor<double> block_of(const Tensor<double>& flat, Index offset, Index rows, Index out, F f) {
  Tensor<double> s = Tensor<double>::uninitialized(Shape{rows, out});
  for (Index q = 0; q < rows * out; ++q) s[q] = f(flat[offset + q]);
  return s;
}

// log det of an SPD k x k matrix from its Cholesky factor (overwrites `a`); ValueError naming
// `who` if it is not positive definite.
double spd_log_det(const char* who, Tensor<double>& a) {
  const Index pivot = cholesky_in_place(a);
  if (pivot >= 0) {
    throw ValueError(std::string(who) + ": the matrix is not positive definite (pivot " +
                     std::to_string(pivot) + ")");
  }
  const Index k = a.dim(0);
  double s = 0;
  for (Index i = 0; i < k; ++i) s += 2.0 * std::log(a[i * k + i]);
  return s;
}

}  // namespace

// ---- diagonal --------------------------------------------------------------------------------------

template <Real T>
DiagonalLaplace<T>::DiagonalLaplace(const nn::Model<T>& model, const nn::Head<T>& head,
                                    const Tensor<T>& inputs, const Tensor<T>& targets,
                                    const Tensor<T>& diagonal, const LaplaceOptions& options)
    : Laplace<T>("DiagonalLaplace", model, head, inputs, targets, options, 0,
                 model.num_parameters()),
      d_(checked_diagonal("DiagonalLaplace", diagonal, model.num_parameters())) {}

template <Real T>
std::string DiagonalLaplace<T>::name() const {
  return "Laplace(diagonal, P=" + std::to_string(this->size()) + ")";
}

template <Real T>
double DiagonalLaplace<T>::log_det_posterior_precision(const std::vector<double>& deltas) const {
  const Tensor<double> prior = this->prior_diagonal("DiagonalLaplace::log_det_posterior_precision", deltas);
  const double n = this->num_data();
  double s = 0;
  for (Index i = 0; i < d_.size(); ++i) s += std::log(prior[i] + n * d_[i]);
  return s;
}

template <Real T>
void DiagonalLaplace<T>::covariance_product(const Tensor<double>& v, Tensor<double>& out) const {
  if (v.size() != d_.size() || out.size() != d_.size()) {
    throw ShapeError("DiagonalLaplace::covariance_product: v " + v.shape().str() + " and out " +
                     out.shape().str() + ", expected (" + std::to_string(d_.size()) + ")");
  }
  const Tensor<double>& prior = this->prior_diagonal();
  const double n = this->num_data();
  for (Index i = 0; i < d_.size(); ++i) out[i] = v[i] / (prior[i] + n * d_[i]);
}

template <Real T>
void DiagonalLaplace<T>::covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const {
  const Index p = this->size();
  if (eps.size() != p || out.size() != p) {
    throw ShapeError("DiagonalLaplace::covariance_sqrt_product: eps " + eps.shape().str() + " and out " +
                     out.shape().str() + ", expected (" + std::to_string(p) + ")");
  }
  const Tensor<double>& prior = this->prior_diagonal();
  const double n = this->num_data();
  for (Index i = 0; i < p; ++i) out[i] = eps[i] / std::sqrt(prior[i] + n * d_[i]);
}

template <Real T>
bool DiagonalLaplace<T>::layerwise_covariance(BatchJacobians<T>& jac,
                                              Tensor<double>& covariance) const {
  const Tensor<double>& prior = this->prior_diagonal();
  const double n = this->num_data();
  for (const LinearLayerJacobian& l : jac.layers()) {
    Tensor<double> s = Tensor<double>::uninitialized(Shape{l.rows(), l.out});
    for (Index q = 0; q < l.rows() * l.out; ++q) s[q] = 1.0 / (prior[l.offset + q] + n * d_[l.offset + q]);
    add_layer_quadratic(l.inputs, l.errors, s, covariance);
  }
  return true;
}

// ---- K-FAC -----------------------------------------------------------------------------------------

namespace {

// The prior groups of K-FAC: one per layer block [W; b] (one Kronecker block needs one delta), one
// per parameter tensor (or its part) in the untapped ranges. Checks the factors first.
template <Real T>
std::vector<PriorGroup> kfac_groups(const nn::Model<T>& model, const KroneckerFactors<T>& factors) {
  if (factors.updates() == 0) {
    throw ValueError("KfacLaplace: the Kronecker factors have had no update (call update() on " +
                     std::string("the training data first)"));
  }
  if (factors.num_parameters() != model.num_parameters()) {
    throw ValueError("KfacLaplace: the factors are of a model with " +
                     std::to_string(factors.num_parameters()) + " parameters, this one has " +
                     std::to_string(model.num_parameters()));
  }
  std::vector<PriorGroup> groups;
  for (const KfacLayer& l : factors.layers()) groups.push_back({l.name, l.offset, l.rows() * l.out});
  for (const auto& [offset, length] : factors.untapped()) {
    for (const nn::ParamInfo& p : model.layout()) {
      const Index begin = std::max(p.offset, offset), end = std::min(p.offset + p.shape.numel(), offset + length);
      if (begin < end) groups.push_back({p.name, begin, end - begin});
    }
  }
  return groups;
}

}  // namespace

template <Real T>
KfacLaplace<T>::KfacLaplace(const nn::Model<T>& model, const nn::Head<T>& head,
                            const Tensor<T>& inputs, const Tensor<T>& targets,
                            const KroneckerFactors<T>& factors, const LaplaceOptions& options)
    : Laplace<T>("KfacLaplace", model, head, inputs, targets, options, 0, model.num_parameters(),
                 kfac_groups(model, factors)) {
  auto clamped = [](std::vector<double> v) {
    for (double& x : v) x = std::max(x, 0.0);
    return v;
  };
  for (std::size_t l = 0; l < factors.layers().size(); ++l) {
    const KfacLayer& layer = factors.layers()[l];
    SymmetricEigen a = symmetric_eigen(to_double(factors.factor_a(l)));
    SymmetricEigen g = symmetric_eigen(to_double(factors.factor_g(l)));
    blocks_.push_back({layer.offset, layer.rows(), layer.out, clamped(std::move(a.values)),
                       clamped(std::move(g.values)), std::move(a.vectors), std::move(g.vectors)});
  }
  untapped_ = factors.untapped();
  for (const auto& [offset, length] : untapped_) untapped_count_ += length;
  untapped_curvature_ = factors.options().untapped_curvature;
}

template <Real T>
std::string KfacLaplace<T>::name() const {
  return "Laplace(K-FAC, " + std::to_string(blocks_.size()) + " layers, P=" +
         std::to_string(this->size()) + ")";
}

template <Real T>
double KfacLaplace<T>::log_det_posterior_precision(const std::vector<double>& deltas) const {
  const Tensor<double> prior = this->prior_diagonal("KfacLaplace::log_det_posterior_precision", deltas);
  const double n = this->num_data();
  double s = 0;
  for (const auto& [offset, length] : untapped_)
    for (Index i = offset; i < offset + length; ++i) s += std::log(n * untapped_curvature_ + prior[i]);
  for (const Block& b : blocks_) {
    const double delta = prior[b.offset];  // one precision per block (its prior group)
    for (double a : b.a_values)
      for (double g : b.g_values) s += std::log(n * a * g + delta);
  }
  return s;
}

template <Real T>
void KfacLaplace<T>::covariance_product(const Tensor<double>& v, Tensor<double>& out) const {
  const Index p = this->size();
  if (v.size() != p || out.size() != p) {
    throw ShapeError("KfacLaplace::covariance_product: v " + v.shape().str() + " and out " +
                     out.shape().str() + ", expected (" + std::to_string(p) + ")");
  }
  const Tensor<double>& prior = this->prior_diagonal();
  const double n = this->num_data();
  for (const auto& [offset, length] : untapped_) {
    for (Index i = offset; i < offset + length; ++i) out[i] = v[i] / (n * untapped_curvature_ + prior[i]);
  }
  for (const Block& b : blocks_) {
    const Index r = b.rows, o = b.out;
    const double delta = prior[b.offset];
    std::vector<double> x1(static_cast<std::size_t>(r * o)), x2(x1.size());
    // x2 = Q_A^T X Q_G, scaled by 1 / (N a_i g_j + delta), then out = Q_A x2 Q_G^T.
    matmul(Trans::yes, Trans::no, r, o, r, b.a_vectors.data(), v.data() + b.offset, x1.data());
    matmul(Trans::no, Trans::no, r, o, o, x1.data(), b.g_vectors.data(), x2.data());
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < o; ++j)
        x2[static_cast<std::size_t>(i * o + j)] /=
            n * b.a_values[static_cast<std::size_t>(i)] * b.g_values[static_cast<std::size_t>(j)] + delta;
    matmul(Trans::no, Trans::no, r, o, r, b.a_vectors.data(), x2.data(), x1.data());
    matmul(Trans::no, Trans::yes, r, o, o, x1.data(), b.g_vectors.data(), out.data() + b.offset);
  }
}

template <Real T>
void KfacLaplace<T>::covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const {
  const Index p = this->size();
  if (eps.size() != p || out.size() != p) {
    throw ShapeError("KfacLaplace::covariance_sqrt_product: eps " + eps.shape().str() + " and out " +
                     out.shape().str() + ", expected (" + std::to_string(p) + ")");
  }
  const Tensor<double>& prior = this->prior_diagonal();
  const double n = this->num_data();
  for (const auto& [offset, length] : untapped_) {
    for (Index i = offset; i < offset + length; ++i) out[i] = eps[i] / std::sqrt(n * untapped_curvature_ + prior[i]);
  }
  for (const Block& b : blocks_) {
    const Index r = b.rows, o = b.out;
    const double delta = prior[b.offset];
    std::vector<double> x1(static_cast<std::size_t>(r * o)), x2(x1.size());
    // S_l = (Q_A (x) Q_G) diag(lambda)^{-1/2}: S_l S_l^T = Sigma_l as Q_A (x) Q_G is orthogonal,
    // and eps's distribution is rotation invariant, so the rotation into the eigenbasis that
    // covariance_product starts with is not needed (two GEMMs instead of four).
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < o; ++j)
        x2[static_cast<std::size_t>(i * o + j)] = eps[b.offset + i * o + j] / std::sqrt(
            n * b.a_values[static_cast<std::size_t>(i)] * b.g_values[static_cast<std::size_t>(j)] + delta);
    matmul(Trans::no, Trans::no, r, o, r, b.a_vectors.data(), x2.data(), x1.data());
    matmul(Trans::no, Trans::yes, r, o, o, x1.data(), b.g_vectors.data(), out.data() + b.offset);
  }
}

template <Real T>
bool KfacLaplace<T>::layerwise_covariance(BatchJacobians<T>& jac,
                                          Tensor<double>& covariance) const {
  if (untapped_count_ > 0) return false;  // their Jacobian is not in the per-layer factors
  const std::vector<LinearLayerJacobian>& layers = jac.layers();
  if (layers.size() != blocks_.size()) return false;
  const double n = this->num_data();
  for (const LinearLayerJacobian& l : layers) {
    const auto it = std::find_if(blocks_.begin(), blocks_.end(),
                                 [&](const Block& b) { return b.offset == l.offset; });
    if (it == blocks_.end() || it->rows != l.rows() || it->out != l.out) return false;
  }
  for (const LinearLayerJacobian& l : layers) {
    const Block& b = *std::find_if(blocks_.begin(), blocks_.end(),
                                   [&](const Block& x) { return x.offset == l.offset; });
    const Index batch = l.inputs.dim(0), r = b.rows, o = b.out;
    const double delta = this->prior_diagonal()[b.offset];
    // In the eigenbases: a Q_A, e_c Q_G, and the eigenvalues 1 / (N a_j g_k + delta).
    Tensor<double> a = Tensor<double>::uninitialized(Shape{batch, r});
    matmul(Trans::no, Trans::no, batch, r, r, l.inputs.data(), b.a_vectors.data(), a.data());
    std::vector<Tensor<double>> e;
    for (const Tensor<double>& ec : l.errors) {
      Tensor<double> rotated = Tensor<double>::uninitialized(Shape{batch, o});
      matmul(Trans::no, Trans::no, batch, o, o, ec.data(), b.g_vectors.data(), rotated.data());
      e.push_back(std::move(rotated));
    }
    Tensor<double> s = Tensor<double>::uninitialized(Shape{r, o});
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < o; ++j)
        s[i * o + j] = 1.0 / (n * b.a_values[static_cast<std::size_t>(i)] *
                                  b.g_values[static_cast<std::size_t>(j)] + delta);
    add_layer_quadratic(a, e, s, covariance);
  }
  return true;
}

// ---- low rank + diagonal -----------------------------------------------------------------------------

template <Real T>
LowRankLaplace<T>::LowRankLaplace(const nn::Model<T>& model, const nn::Head<T>& head,
                                  const Tensor<T>& inputs, const Tensor<T>& targets,
                                  LinearOperator<T>& curvature, int rank,
                                  const LanczosOptions& lanczos_options, const Tensor<T>* diagonal,
                                  const LaplaceOptions& options)
    : Laplace<T>("LowRankLaplace", model, head, inputs, targets, options, 0,
                 model.num_parameters()) {
  const Index p = model.num_parameters();
  if (rank < 1) {
    throw ValueError("LowRankLaplace: the rank must be >= 1, got " + std::to_string(rank));
  }
  if (curvature.size() != p) {
    throw ValueError("LowRankLaplace: the curvature operator " + curvature.name() + " has size " +
                     std::to_string(curvature.size()) + ", the model " + std::to_string(p) +
                     " parameters");
  }
  LanczosOptions o = lanczos_options;
  o.which = SpectrumEnd::largest;
  const LanczosResult<T> r = lanczos(curvature, rank, o);
  status_ = r.status;
  message_ = r.message;
  take_pairs(r.largest, diagonal);
  prior_precision_changed();
}

template <Real T>
LowRankLaplace<T>::LowRankLaplace(const nn::Model<T>& model, const nn::Head<T>& head,
                                  const Tensor<T>& inputs, const Tensor<T>& targets,
                                  const RitzPairs<T>& pairs, const Tensor<T>* diagonal,
                                  const LaplaceOptions& options)
    : Laplace<T>("LowRankLaplace", model, head, inputs, targets, options, 0,
                 model.num_parameters()) {
  message_ = "eigenpairs given";
  take_pairs(pairs, diagonal);
  prior_precision_changed();
}

template <Real T>
void LowRankLaplace<T>::take_pairs(const RitzPairs<T>& pairs, const Tensor<T>* diagonal) {
  const Index p = this->size();
  if (pairs.eigenvalues.empty() || pairs.eigenvalues.size() != pairs.eigenvectors.size()) {
    throw ValueError("LowRankLaplace: needs at least one eigenpair, got " +
                     std::to_string(pairs.eigenvalues.size()) + " values and " +
                     std::to_string(pairs.eigenvectors.size()) + " vectors");
  }
  for (std::size_t i = 0; i < pairs.eigenvalues.size(); ++i) {
    const Tensor<T>& u = pairs.eigenvectors[i];
    if (u.size() != p) {
      throw ShapeError("LowRankLaplace: eigenvector " + std::to_string(i) + " has shape " +
                       u.shape().str() + ", expected (" + std::to_string(p) + ")");
    }
    values_.push_back(std::max(pairs.eigenvalues[i], 0.0));
    vectors_.push_back(to_double(u));
  }
  if (diagonal) {
    d_ = checked_diagonal("LowRankLaplace", *diagonal, p);
    has_diagonal_ = true;
  } else {
    d_ = Tensor<double>(Shape{p});
  }
}

template <Real T>
std::string LowRankLaplace<T>::name() const {
  return "Laplace(low rank " + std::to_string(values_.size()) +
         (has_diagonal_ ? " + diagonal" : "") + ", P=" + std::to_string(this->size()) + ")";
}

template <Real T>
typename LowRankLaplace<T>::Factored LowRankLaplace<T>::factor(const Tensor<double>& prior) const {
  const Index p = this->size(), k = static_cast<Index>(values_.size());
  const double n = this->num_data();
  Factored f;
  f.b_inverse = Tensor<double>::uninitialized(Shape{p});
  for (Index i = 0; i < p; ++i) f.b_inverse[i] = 1.0 / (prior[i] + n * d_[i]);
  // V = B^{-1} W, W_m = sqrt(N l_m) u_m; K = I + W^T B^{-1} W = I + W^T V.
  for (Index m = 0; m < k; ++m) {
    const double w = std::sqrt(n * values_[static_cast<std::size_t>(m)]);
    Tensor<double> v = Tensor<double>::uninitialized(Shape{p});
    const Tensor<double>& u = vectors_[static_cast<std::size_t>(m)];
    for (Index i = 0; i < p; ++i) v[i] = w * u[i] * f.b_inverse[i];
    f.v.push_back(std::move(v));
  }
  f.k_factor = Tensor<double>(Shape{k, k});
  for (Index x = 0; x < k; ++x) {
    const double wx = std::sqrt(n * values_[static_cast<std::size_t>(x)]);
    const Tensor<double>& ux = vectors_[static_cast<std::size_t>(x)];
    for (Index y = 0; y <= x; ++y) {
      const Tensor<double>& vy = f.v[static_cast<std::size_t>(y)];
      double s = 0;
      for (Index i = 0; i < p; ++i) s += ux[i] * vy[i];
      f.k_factor[x * k + y] = f.k_factor[y * k + x] = wx * s + (x == y ? 1.0 : 0.0);
    }
  }
  return f;
}

template <Real T>
void LowRankLaplace<T>::prior_precision_changed() {
  current_ = factor(this->prior_diagonal());
  // K's eigendecomposition for covariance_sqrt_product (its eigenvalues are >= 1 in exact
  // arithmetic; rounding below 1 is clamped).
  {
    SymmetricEigen e = symmetric_eigen(current_.k_factor);
    current_.k_vectors = std::move(e.vectors);
    for (double kappa : e.values) {
      const double s = std::sqrt(std::max(kappa, 1.0));
      current_.sqrt_coefficients.push_back(-1.0 / (s * (s + 1.0)));
    }
    current_.b_inverse_sqrt = Tensor<double>::uninitialized(current_.b_inverse.shape());
    for (Index i = 0; i < current_.b_inverse.size(); ++i) current_.b_inverse_sqrt[i] = std::sqrt(current_.b_inverse[i]);
  }
  const Index pivot = cholesky_in_place(current_.k_factor);
  if (pivot >= 0) {
    throw ValueError("LowRankLaplace: I + W^T B^{-1} W is not positive definite (pivot " +
                     std::to_string(pivot) + ")");
  }
  v_model_.clear();
  for (const Tensor<double>& v : current_.v) {
    Tensor<T> t = Tensor<T>::uninitialized(v.shape());
    for (Index i = 0; i < v.size(); ++i) t[i] = static_cast<T>(v[i]);
    v_model_.push_back(std::move(t));
  }
}

template <Real T>
double LowRankLaplace<T>::log_det_posterior_precision(const std::vector<double>& deltas) const {
  Factored f = factor(this->prior_diagonal("LowRankLaplace::log_det_posterior_precision", deltas));
  double s = 0;
  for (Index i = 0; i < f.b_inverse.size(); ++i) s -= std::log(f.b_inverse[i]);
  return s + spd_log_det("LowRankLaplace::log_det_posterior_precision", f.k_factor);
}

template <Real T>
void LowRankLaplace<T>::covariance_product(const Tensor<double>& v, Tensor<double>& out) const {
  const Index p = this->size(), k = static_cast<Index>(values_.size());
  if (v.size() != p || out.size() != p) {
    throw ShapeError("LowRankLaplace::covariance_product: v " + v.shape().str() + " and out " +
                     out.shape().str() + ", expected (" + std::to_string(p) + ")");
  }
  // Sigma v = B^{-1} v - V K^{-1} V^T v.
  Tensor<double> c = Tensor<double>::uninitialized(Shape{k});
  for (Index m = 0; m < k; ++m) {
    const Tensor<double>& vm = current_.v[static_cast<std::size_t>(m)];
    double s = 0;
    for (Index i = 0; i < p; ++i) s += vm[i] * v[i];
    c[m] = s;
  }
  cholesky_solve_in_place(current_.k_factor, c);
  for (Index i = 0; i < p; ++i) out[i] = current_.b_inverse[i] * v[i];
  for (Index m = 0; m < k; ++m) {
    const Tensor<double>& vm = current_.v[static_cast<std::size_t>(m)];
    for (Index i = 0; i < p; ++i) out[i] -= c[m] * vm[i];
  }
}

template <Real T>
void LowRankLaplace<T>::covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const {
  const Index p = this->size(), k = static_cast<Index>(values_.size());
  if (eps.size() != p || out.size() != p) {
    throw ShapeError("LowRankLaplace::covariance_sqrt_product: eps " + eps.shape().str() + " and out " +
                     out.shape().str() + ", expected (" + std::to_string(p) + ")");
  }
  // y = B^{-1/2} eps (into out), c = W^T y, c <- V diag(coefficients) V^T c, out = y + V_w c.
  for (Index i = 0; i < p; ++i) out[i] = current_.b_inverse_sqrt[i] * eps[i];
  std::vector<double> c(static_cast<std::size_t>(k)), t(c.size());
  for (Index m = 0; m < k; ++m) {
    const Tensor<double>& u = vectors_[static_cast<std::size_t>(m)];
    double s = 0;
    for (Index i = 0; i < p; ++i) s += u[i] * out[i];
    c[static_cast<std::size_t>(m)] = std::sqrt(this->num_data() * values_[static_cast<std::size_t>(m)]) * s;
  }
  const Tensor<double>& v = current_.k_vectors;
  for (Index m = 0; m < k; ++m) {  // t = diag(coefficients) V^T c
    double s = 0;
    for (Index q = 0; q < k; ++q) s += v[q * k + m] * c[static_cast<std::size_t>(q)];
    t[static_cast<std::size_t>(m)] = current_.sqrt_coefficients[static_cast<std::size_t>(m)] * s;
  }
  for (Index q = 0; q < k; ++q) {  // c = V t
    double s = 0;
    for (Index m = 0; m < k; ++m) s += v[q * k + m] * t[static_cast<std::size_t>(m)];
    c[static_cast<std::size_t>(q)] = s;
  }
  for (Index m = 0; m < k; ++m) {
    const Tensor<double>& vm = current_.v[static_cast<std::size_t>(m)];
    const double cm = c[static_cast<std::size_t>(m)];
    for (Index i = 0; i < p; ++i) out[i] += cm * vm[i];
  }
}

template <Real T>
bool LowRankLaplace<T>::layerwise_covariance(BatchJacobians<T>& jac,
                                             Tensor<double>& covariance) const {
  // J B^{-1} J^T per layer ...
  for (const LinearLayerJacobian& l : jac.layers()) {
    const Tensor<double> s = block_of(current_.b_inverse, l.offset, l.rows(), l.out,
                                      [](double b) { return b; });
    add_layer_quadratic(l.inputs, l.errors, s, covariance);
  }
  // ... minus (J V) K^{-1} (J V)^T, with J V from k tangent sweeps.
  const Index b = jac.batch_size(), c = jac.num_outputs(), k = static_cast<Index>(values_.size());
  std::vector<Tensor<T>> jv;
  for (const Tensor<T>& v : v_model_) {
    Tensor<T> a = Tensor<T>::uninitialized(Shape{b, c});
    jac.jvp(v, a);
    jv.push_back(std::move(a));
  }
  Tensor<double> z = Tensor<double>::uninitialized(Shape{k, c});  // L^{-1} (J_i V)^T
  for (Index i = 0; i < b; ++i) {
    for (Index m = 0; m < k; ++m)
      for (Index x = 0; x < c; ++x) z[m * c + x] = static_cast<double>(jv[static_cast<std::size_t>(m)][i * c + x]);
    // Forward substitution with the lower factor L of K: z <- L^{-1} z.
    for (Index m = 0; m < k; ++m) {
      for (Index q = 0; q < m; ++q) {
        const double l = current_.k_factor[m * k + q];
        for (Index x = 0; x < c; ++x) z[m * c + x] -= l * z[q * c + x];
      }
      const double d = current_.k_factor[m * k + m];
      for (Index x = 0; x < c; ++x) z[m * c + x] /= d;
    }
    double* ci = covariance.data() + i * c * c;
    for (Index x = 0; x < c; ++x) {
      for (Index y = 0; y < c; ++y) {
        double s = 0;
        for (Index m = 0; m < k; ++m) s += z[m * c + x] * z[m * c + y];
        ci[x * c + y] -= s;
      }
    }
  }
  return true;
}

template class DiagonalLaplace<float>;
template class DiagonalLaplace<double>;
template class KfacLaplace<float>;
template class KfacLaplace<double>;
template class LowRankLaplace<float>;
template class LowRankLaplace<double>;

}  // namespace amari::curvature

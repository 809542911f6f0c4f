#include <amari/curvature/laplace_last_layer.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/dense_solve.hpp>

namespace amari::curvature {

namespace {

using kernels::Trans;

// Rows of the predictive processed per GEMM: bounds the (rows, C n) intermediate.
constexpr Index kPredictiveRows = 64;

// Keeps the last tapped layer of a plain forward pass.
template <Real T>
class LastTap final : public nn::TapObserver<Tensor<T>> {
 public:
  bool seen = false;
  bool linear = false;
  std::size_t weight_index = 0;
  bool bias = false;
  Tensor<T> input, output;
  void on_layer(const nn::LayerTap<Tensor<T>>& t) override {
    seen = true;
    linear = t.kind == nn::LayerTap<Tensor<T>>::Kind::linear;
    weight_index = t.weight_index;
    bias = t.has_bias;
    input = *t.input;
    output = *t.output;
  }
};

template <Real T>
Tensor<T> forward_with_tap(const nn::Model<T>& model, const Tensor<T>& x, LastTap<T>& tap) {
  const std::vector<Tensor<T>>& params = model.parameter_views();
  return model.forward_observed(x, std::span<const Tensor<T>>(params), tap);
}

// The head of the same output family in double (likelihood_of refuses other heads).
template <Real T>
std::unique_ptr<nn::Head<double>> double_head(const nn::Head<T>& head) {
  switch (likelihood_of(head)) {
    case LaplaceLikelihood::categorical:
      return std::make_unique<nn::SoftmaxCrossEntropy<double>>();
    case LaplaceLikelihood::bernoulli:
      return std::make_unique<nn::SigmoidBernoulli<double>>();
    case LaplaceLikelihood::gaussian:
      return std::make_unique<nn::Gaussian<double>>(dynamic_cast<const nn::Gaussian<T>&>(head).sigma());
  }
  throw Error("LastLayerLaplace: unknown likelihood");
}

}  // namespace

template <Real T>
LastLayerInfo find_last_layer(const nn::Model<T>& model, const Tensor<T>& inputs,
                              Index max_parameters) {
  const std::string who = "LastLayerLaplace(" + model.module().describe() + ")";
  if (!inputs.defined() || inputs.rank() < 1 || inputs.dim(0) == 0) {
    throw ShapeError(who + ": expects a non-empty batch of inputs, got " + inputs.shape().str());
  }
  LastTap<T> tap;
  const Tensor<T> z = forward_with_tap(model, batch_rows(inputs, 0, 1), tap);
  if (!tap.seen || !tap.linear) {
    throw ValueError(who + ": the last layer the forward pass taps must be Linear (" +
                     (tap.seen ? "it is a convolution" : "no layer was tapped") + ")");
  }
  const bool same = tap.output.shape() == z.shape() &&
                    std::equal(z.begin(), z.end(), tap.output.begin());
  if (!same) {
    throw ValueError(who + ": the model's output is not the output of its last Linear layer " +
                     "(something follows it), so the last-layer Jacobian is not phi~ (x) I");
  }
  const std::vector<nn::ParamInfo>& layout = model.layout();
  const nn::ParamInfo& w = layout.at(tap.weight_index);
  LastLayerInfo info{tap.weight_index, w.offset, w.shape[0], w.shape[1], tap.bias};
  if (tap.bias) {
    const nn::ParamInfo& b = layout.at(tap.weight_index + 1);
    if (b.offset != w.offset + info.in * info.out) {
      throw ValueError(who + ": the last layer's bias does not follow its weight in the layout");
    }
  }
  if (max_parameters < 1) {
    throw ValueError(who + ": max_parameters must be >= 1, got " + std::to_string(max_parameters));
  }
  if (info.num_parameters() > max_parameters) {
    throw ValueError(who + ": the last layer has " + std::to_string(info.num_parameters()) +
                     " parameters ((" + std::to_string(info.in) + (info.bias ? " + 1" : "") +
                     ") x " + std::to_string(info.out) + "), above the limit of " +
                     std::to_string(max_parameters) + " for a dense " +
                     std::to_string(info.num_parameters()) + " x " +
                     std::to_string(info.num_parameters()) + " matrix");
  }
  return info;
}

template <Real T>
LastLayerLaplace<T>::LastLayerLaplace(const nn::Model<T>& model, const nn::Head<T>& head,
                                      const Tensor<T>& inputs, const Tensor<T>& targets,
                                      const LaplaceOptions& options, Index max_parameters)
    : LastLayerLaplace(model, head, inputs, targets, options,
                       find_last_layer(model, inputs, max_parameters)) {}

template <Real T>
LastLayerLaplace<T>::LastLayerLaplace(const nn::Model<T>& model, const nn::Head<T>& head,
                                      const Tensor<T>& inputs, const Tensor<T>& targets,
                                      const LaplaceOptions& options, LastLayerInfo info)
    : Laplace<T>("LastLayerLaplace", model, head, inputs, targets, options, info.offset,
                 info.num_parameters()),
      info_(info) {
  build_ggn(inputs, options.batch_size);
  // C is positive semi-definite: eigenvalues below 0 are rounding (at most about eps ||C||).
  eigenvalues_ = symmetric_eigenvalues(ggn_);
  for (double& l : eigenvalues_) l = std::max(l, 0.0);
  prior_precision_changed();
}

template <Real T>
std::string LastLayerLaplace<T>::name() const {
  return "Laplace(last layer, " + std::to_string(info_.in) + " -> " + std::to_string(info_.out) +
         ", P=" + std::to_string(this->size()) + ")";
}

template <Real T>
void LastLayerLaplace<T>::features(const Tensor<T>& inputs, Tensor<double>& phi,
                                   Tensor<T>& logits) const {
  LastTap<T> tap;
  logits = forward_with_tap(this->model(), inputs, tap);
  const Index b = inputs.dim(0), in = info_.in, rows = info_.in + (info_.bias ? 1 : 0);
  if (!tap.seen || !(tap.input.shape() == Shape{b, in})) {
    throw ValueError("LastLayerLaplace: the last tapped layer's input is " +
                     tap.input.shape().str() + ", expected " + Shape{b, in}.str());
  }
  phi = Tensor<double>::uninitialized(Shape{b, rows});
  for (Index i = 0; i < b; ++i) {
    for (Index j = 0; j < in; ++j) phi[i * rows + j] = static_cast<double>(tap.input[i * in + j]);
    if (info_.bias) phi[i * rows + in] = 1.0;
  }
}

template <Real T>
void LastLayerLaplace<T>::build_ggn(const Tensor<T>& inputs, Index batch_size) {
  const Index n_data = inputs.dim(0), c = info_.out, rows = info_.in + (info_.bias ? 1 : 0);
  const Index n = rows * c;
  // One (rows, rows) Gram block per pair c <= c': sum_n H_L(z_n)[c, c'] phi~_n phi~_n^T.
  const std::unique_ptr<nn::Head<double>> head = double_head(this->head());
  std::vector<Tensor<double>> blocks;
  for (Index x = 0; x < c; ++x)
    for (Index y = x; y < c; ++y) blocks.push_back(Tensor<double>(Shape{rows, rows}));
  for (Index begin = 0; begin < n_data; begin += batch_size) {
    const Index b = std::min(batch_size, n_data - begin);
    Tensor<double> phi;
    Tensor<T> z;
    features(batch_rows(inputs, begin, b), phi, z);
    // h[i][x][y] = H_L(z_i)[x, y], column y from H_L applied to the unit vector e_y in every row,
    // by the double-precision head of the same family: softmax's H_L = diag(p) - p p^T has the
    // null vector 1, which a float p keeps only to 1e-7 relative, enough to make N C indefinite.
    Tensor<double> zd = Tensor<double>::uninitialized(z.shape());
    for (Index q = 0; q < z.size(); ++q) zd[q] = static_cast<double>(z[q]);
    Tensor<double> h = Tensor<double>::uninitialized(Shape{b, c, c});
    Tensor<double> unit(Shape{b, c}), column = Tensor<double>::uninitialized(Shape{b, c});
    for (Index y = 0; y < c; ++y) {
      for (Index i = 0; i < b; ++i) unit[i * c + y] = 1.0;
      head->hessian_product(zd, unit, column);
      for (Index i = 0; i < b; ++i) unit[i * c + y] = 0.0;
      for (Index i = 0; i < b; ++i)
        for (Index x = 0; x < c; ++x) h[(i * c + x) * c + y] = column[i * c + x];
    }
    Tensor<double> weighted = Tensor<double>::uninitialized(Shape{b, rows});
    std::size_t block = 0;
    for (Index x = 0; x < c; ++x) {
      for (Index y = x; y < c; ++y, ++block) {
        for (Index i = 0; i < b; ++i) {
          const double w = 0.5 * (h[(i * c + x) * c + y] + h[(i * c + y) * c + x]);
          for (Index j = 0; j < rows; ++j) weighted[i * rows + j] = w * phi[i * rows + j];
        }
        kernels::gemm<double>(Trans::yes, Trans::no, rows, rows, b, 1.0, phi.data(), rows,
                              weighted.data(), rows, 1.0, blocks[block].data(), rows);
      }
    }
  }
  // C[(j, x), (j', y)] = block(x, y)[j, j'] / N; block(y, x) = block(x, y)^T.
  ggn_ = Tensor<double>::uninitialized(Shape{n, n});
  const double inv_n = 1.0 / static_cast<double>(n_data);
  std::size_t block = 0;
  for (Index x = 0; x < c; ++x) {
    for (Index y = x; y < c; ++y, ++block) {
      const Tensor<double>& g = blocks[block];
      for (Index j = 0; j < rows; ++j) {
        for (Index k = 0; k < rows; ++k) {
          const double v = g[j * rows + k] * inv_n;
          ggn_[(j * c + x) * n + k * c + y] = v;
          ggn_[(k * c + y) * n + j * c + x] = v;
        }
      }
    }
  }
}

template <Real T>
void LastLayerLaplace<T>::prior_precision_changed() {
  precision_factor_ = factored_precision("LastLayerLaplace", this->prior_diagonal());
  sigma_ = precision_factor_.clone();
  cholesky_inverse_in_place(sigma_);
}

template <Real T>
Tensor<double> LastLayerLaplace<T>::factored_precision(const char* who, const Tensor<double>& prior) const {
  const Index n = this->size();
  const double nd = this->num_data();
  Tensor<double> a = Tensor<double>::uninitialized(Shape{n, n});
  for (Index q = 0; q < n * n; ++q) a[q] = nd * ggn_[q];
  for (Index i = 0; i < n; ++i) a[i * n + i] += prior[i];
  const Index pivot = cholesky_in_place(a);
  if (pivot >= 0) {
    throw ValueError(std::string(who) + ": Lambda + N C is not positive definite at the prior precisions given (pivot " +
                     std::to_string(pivot) + ", precision there " + std::to_string(prior[pivot]) + ")");
  }
  return a;
}

template <Real T>
double LastLayerLaplace<T>::log_det_posterior_precision(const std::vector<double>& deltas) const {
  const char* who = "LastLayerLaplace::log_det_posterior_precision";
  const Tensor<double> prior = this->prior_diagonal(who, deltas);
  double s = 0;
  if (this->all_equal(deltas)) {  // one delta: from the eigenvalues of C, O(n)
    const double nd = this->num_data();
    for (double l : eigenvalues_) s += std::log(nd * l + deltas.front());
    return s;
  }
  const Tensor<double> l = factored_precision(who, prior);
  const Index n = this->size();
  for (Index i = 0; i < n; ++i) s += 2.0 * std::log(l[i * n + i]);
  return s;
}

template <Real T>
void LastLayerLaplace<T>::covariance_product(const Tensor<double>& v, Tensor<double>& out) const {
  const Index n = this->size();
  if (v.size() != n || out.size() != n) {
    throw ShapeError("LastLayerLaplace::covariance_product: v " + v.shape().str() + " and out " +
                     out.shape().str() + ", expected (" + std::to_string(n) + ")");
  }
  kernels::gemm<double>(Trans::no, Trans::no, n, 1, n, 1.0, sigma_.data(), n, v.data(), 1, 0.0,
                        out.data(), 1);
}

template <Real T>
void LastLayerLaplace<T>::covariance_sqrt_product(const Tensor<double>& eps, Tensor<double>& out) const {
  const Index n = this->size();
  if (eps.size() != n || out.size() != n) {
    throw ShapeError("LastLayerLaplace::covariance_sqrt_product: eps " + eps.shape().str() + " and out " +
                     out.shape().str() + ", expected (" + std::to_string(n) + ")");
  }
  // Back substitution L^T x = eps, by rows of L (contiguous): x_j is final once the rows below j
  // have been subtracted, then row j of L removes x_j L[j, i] from every i < j.
  const double* l = precision_factor_.data();
  double* x = out.data();
  std::copy(eps.data(), eps.data() + n, x);
  for (Index j = n - 1; j >= 0; --j) {
    const double* lj = l + j * n;
    const double xj = x[j] / lj[j];
    x[j] = xj;
#pragma omp simd
    for (Index i = 0; i < j; ++i) x[i] -= lj[i] * xj;
  }
}

template <Real T>
void LastLayerLaplace<T>::chunk_functional(const Tensor<T>& inputs,
                                           const PredictiveOptions& options,
                                           Tensor<double>& mean, Tensor<double>& covariance) const {
  if (options.jacobians == PredictiveJacobians::per_example) {
    Laplace<T>::chunk_functional(inputs, options, mean, covariance);
    return;
  }
  Tensor<double> phi;
  Tensor<T> z;
  features(inputs, phi, z);
  for (Index q = 0; q < z.size(); ++q) mean[q] = static_cast<double>(z[q]);
  const Index b = inputs.dim(0), c = info_.out, rows = phi.dim(1), n = this->size();
  // Y = phi~ S2 with S2 = Sigma viewed as (rows, C n): Y[i, x, j', y] = sum_j phi~_ij
  // Sigma[(j, x), (j', y)]; then cov[i, x, y] = sum_j' phi~_ij' Y[i, x, j', y].
  Tensor<double> y = Tensor<double>::uninitialized(Shape{std::min(b, kPredictiveRows), c * n});
  for (Index begin = 0; begin < b; begin += kPredictiveRows) {
    const Index m = std::min(kPredictiveRows, b - begin);
    kernels::gemm<double>(Trans::no, Trans::no, m, c * n, rows, 1.0, phi.data() + begin * rows,
                          rows, sigma_.data(), c * n, 0.0, y.data(), c * n);
    for (Index i = 0; i < m; ++i) {
      const double* pi = phi.data() + (begin + i) * rows;
      const double* yi = y.data() + i * c * n;
      double* ci = covariance.data() + (begin + i) * c * c;
      for (Index x = 0; x < c; ++x) {
        for (Index w = 0; w < c; ++w) {
          double s = 0;
          for (Index j = 0; j < rows; ++j) s += pi[j] * yi[x * n + j * c + w];
          ci[x * c + w] = s;
        }
      }
    }
  }
}

template class LastLayerLaplace<float>;
template class LastLayerLaplace<double>;
template LastLayerInfo find_last_layer<float>(const nn::Model<float>&, const Tensor<float>&, Index);
template LastLayerInfo find_last_layer<double>(const nn::Model<double>&, const Tensor<double>&,
                                               Index);

}  // namespace amari::curvature

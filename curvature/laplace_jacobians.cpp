#include <amari/curvature/laplace_jacobians.hpp>

#include <string>

#include <amari/autodiff/kernels/gemm.hpp>

namespace amari::curvature {

namespace {

// Keeps every tapped layer of one recorded forward pass: its input value and output variable.
template <Real T>
class Collector final : public nn::TapObserver<Var<T>> {
 public:
  struct Seen {
    bool linear = false;
    std::size_t weight_index = 0;
    bool bias = false;
    Tensor<T> input;
    Var<T> output;
  };
  std::vector<Seen> seen;
  void on_layer(const nn::LayerTap<Var<T>>& t) override {
    seen.push_back({t.kind == nn::LayerTap<Var<T>>::Kind::linear, t.weight_index, t.has_bias,
                    t.input->value(), *t.output});
  }
};

}  // namespace

template <Real T>
Tensor<T> batch_rows(const Tensor<T>& x, Index begin, Index count) {
  if (!x.defined() || x.rank() < 1 || begin < 0 || count < 0 || begin + count > x.dim(0)) {
    throw ValueError("batch_rows: rows [" + std::to_string(begin) + ", " +
                     std::to_string(begin + count) + ") of a batch of shape " + x.shape().str());
  }
  std::vector<Index> dims(x.shape().dims().begin(), x.shape().dims().end());
  const Index per = x.shape().partial_numel(1, x.rank());
  dims[0] = count;
  return x.view(begin * per, Shape(std::span<const Index>(dims)));
}

template <Real T>
nn::RecordedModel<T> BatchJacobians<T>::record_with_taps(const nn::Model<T>& model,
                                                         Tensor<T> inputs,
                                                         std::vector<Tapped>& tapped,
                                                         bool& layerwise) {
  Collector<T> taps;
  nn::RecordOptions<T> options;
  options.taps = &taps;
  nn::RecordedModel<T> record(model, std::move(inputs), options);
  // Whole-Jacobian check: every parameter in exactly one tapped Linear layer, [W; b] contiguous.
  const std::vector<nn::ParamInfo>& layout = model.layout();
  std::vector<int> covered(layout.size(), 0);
  layerwise = true;
  for (const auto& s : taps.seen) {
    Tapped t{s.input, s.output, 0, 0, 0, s.bias};
    const bool in_range = s.weight_index + (s.bias ? 1 : 0) < layout.size();
    if (!s.linear || !in_range || layout[s.weight_index].shape.rank() != 2) {
      layerwise = false;
      continue;
    }
    const nn::ParamInfo& w = layout[s.weight_index];
    t.offset = w.offset;
    t.in = w.shape[0];
    t.out = w.shape[1];
    if (s.bias) {
      const nn::ParamInfo& b = layout[s.weight_index + 1];
      if (!(b.shape == Shape{t.out}) || b.offset != w.offset + t.in * t.out) layerwise = false;
      ++covered[s.weight_index + 1];
    }
    ++covered[s.weight_index];
    tapped.push_back(std::move(t));
  }
  for (int c : covered) layerwise = layerwise && c == 1;
  if (!layerwise) tapped.clear();  // only the per-example form will be used
  return record;
}

template <Real T>
BatchJacobians<T>::BatchJacobians(const nn::Model<T>& model, Tensor<T> inputs)
    : model_(&model), record_(record_with_taps(model, std::move(inputs), tapped_, layerwise_)) {}

template <Real T>
const std::vector<LinearLayerJacobian>& BatchJacobians<T>::layers() {
  if (!layerwise_) {
    throw ValueError("BatchJacobians::layers: the parameters of " + model_->module().describe() +
                     " are not all in tapped Linear layers; use example_jacobian()");
  }
  if (computed_) return layers_;
  const Index b = batch_size(), c = num_outputs();
  std::vector<Var<T>> outs;
  std::vector<Tensor<T>> deltas;
  for (const Tapped& t : tapped_) {
    outs.push_back(t.output);
    deltas.push_back(Tensor<T>::uninitialized(t.output.shape()));
    LinearLayerJacobian l;
    l.offset = t.offset;
    l.in = t.in;
    l.out = t.out;
    l.bias = t.bias;
    const Index rows = l.rows();
    l.inputs = Tensor<double>::uninitialized(Shape{b, rows});
    for (Index i = 0; i < b; ++i) {
      for (Index j = 0; j < t.in; ++j) l.inputs[i * rows + j] = static_cast<double>(t.input[i * t.in + j]);
      if (t.bias) l.inputs[i * rows + t.in] = 1.0;
    }
    layers_.push_back(std::move(l));
  }
  // Output c back-propagated to every tapped output s_l at once: rows do not interact, so row i of
  // the result is dz_{i,c}/ds_{l,i}.
  Tensor<T> cotangent(Shape{b, c});
  const Var<T>& z = record_.logits_variable();
  for (Index k = 0; k < c; ++k) {
    for (Index i = 0; i < b; ++i) cotangent[i * c + k] = T(1);
    record_.tape().vjp_into(std::span<const Var<T>>(&z, 1),
                            std::span<const Tensor<T>>(&cotangent, 1), outs, deltas);
    for (Index i = 0; i < b; ++i) cotangent[i * c + k] = T(0);
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      Tensor<double> e = Tensor<double>::uninitialized(Shape{b, layers_[l].out});
      for (Index q = 0; q < e.size(); ++q) e[q] = static_cast<double>(deltas[l][q]);
      layers_[l].errors.push_back(std::move(e));
    }
  }
  computed_ = true;
  return layers_;
}

template <Real T>
Tensor<double> BatchJacobians<T>::example_jacobian(Index i) const {
  const Index b = batch_size(), c = num_outputs(), p = model_->num_parameters();
  if (i < 0 || i >= b) {
    throw ValueError("BatchJacobians::example_jacobian: example " + std::to_string(i) +
                     " of a batch of " + std::to_string(b));
  }
  nn::RecordedModel<T> one(*model_, batch_rows(record_.inputs(), i, 1));
  Tensor<double> rows = Tensor<double>::uninitialized(Shape{c, p});
  Tensor<T> cotangent(Shape{1, c});
  Tensor<T> g = Tensor<T>::uninitialized(Shape{p});
  for (Index k = 0; k < c; ++k) {
    cotangent[k] = T(1);
    one.vjp(cotangent, g);
    cotangent[k] = T(0);
    for (Index q = 0; q < p; ++q) rows[k * p + q] = static_cast<double>(g[q]);
  }
  return rows;
}

void add_layer_quadratic(const Tensor<double>& a, const std::vector<Tensor<double>>& e,
                         const Tensor<double>& s, Tensor<double>& cov) {
  if (a.rank() != 2 || s.rank() != 2 || cov.rank() != 3 || a.dim(1) != s.dim(0) ||
      cov.dim(0) != a.dim(0) || cov.dim(1) != cov.dim(2) ||
      static_cast<Index>(e.size()) != cov.dim(1)) {
    throw ShapeError("add_layer_quadratic: inputs " + a.shape().str() + ", diagonal " +
                     s.shape().str() + ", " + std::to_string(e.size()) + " error tensors and " +
                     "covariance " + cov.shape().str() + " do not fit (B, rows), (rows, out), " +
                     "C x (B, out), (B, C, C)");
  }
  const Index b = a.dim(0), rows = a.dim(1), out = s.dim(1), c = cov.dim(1);
  for (const Tensor<double>& ec : e) {
    if (!(ec.shape() == Shape{b, out})) {
      throw ShapeError("add_layer_quadratic: an error tensor of shape " + ec.shape().str() +
                       ", expected " + Shape{b, out}.str());
    }
  }
  // w = (a * a) s: w[i, k] = sum_j a_ij^2 s_jk.
  Tensor<double> a2 = Tensor<double>::uninitialized(a.shape());
  for (Index q = 0; q < a.size(); ++q) a2[q] = a[q] * a[q];
  Tensor<double> w = Tensor<double>::uninitialized(Shape{b, out});
  kernels::gemm<double>(kernels::Trans::no, kernels::Trans::no, b, out, rows, 1.0, a2.data(), rows,
                        s.data(), out, 0.0, w.data(), out);
  for (Index i = 0; i < b; ++i) {
    const double* wi = w.data() + i * out;
    double* ci = cov.data() + i * c * c;
    for (Index x = 0; x < c; ++x) {
      const double* ex = e[static_cast<std::size_t>(x)].data() + i * out;
      for (Index y = x; y < c; ++y) {
        const double* ey = e[static_cast<std::size_t>(y)].data() + i * out;
        double sum = 0;
        for (Index k = 0; k < out; ++k) sum += ex[k] * ey[k] * wi[k];
        ci[x * c + y] += sum;
        if (y != x) ci[y * c + x] += sum;
      }
    }
  }
}

template Tensor<float> batch_rows<float>(const Tensor<float>&, Index, Index);
template Tensor<double> batch_rows<double>(const Tensor<double>&, Index, Index);
template class BatchJacobians<float>;
template class BatchJacobians<double>;

}  // namespace amari::curvature

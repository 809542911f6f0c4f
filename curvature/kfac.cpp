#include <amari/curvature/kfac.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/dense_solve.hpp>
#include <amari/curvature/vector_ops.hpp>

namespace amari::curvature {

namespace {

using kernels::Trans;

// Retries of a failed factorization, each with 10x the damping of both factors of the layer.
constexpr int kDampingRetries = 6;

void check_option(bool ok, const char* option, double value, const char* expected) {
  if (!ok) {
    throw ValueError(std::string("K-FAC: option ") + option + " = " + std::to_string(value) +
                     " must be " + expected);
  }
}

void check_batch(const char* op, const Shape& x, const Shape& y) {
  if (x.rank() < 1 || y.rank() != 2 || x[0] != y[0] || x[0] == 0) {
    throw ShapeError(std::string(op) + ": inputs " + x.str() + " and targets " + y.str() +
                     " must be (N, ...) and (N, C) with the same N >= 1");
  }
}

double mean_diagonal(const Tensor<double>& m) {
  const Index n = m.dim(0);
  double s = 0;
  for (Index i = 0; i < n; ++i) s += m[i * n + i];
  return s / static_cast<double>(n);
}

template <Real T>
Tensor<double> to_double(const Tensor<T>& t) {
  Tensor<double> d = Tensor<double>::uninitialized(t.shape());
  for (Index i = 0; i < t.size(); ++i) d[i] = static_cast<double>(t[i]);
  return d;
}

template <Real T>
Tensor<T> from_double(const Tensor<double>& d) {
  Tensor<T> t = Tensor<T>::uninitialized(d.shape());
  for (Index i = 0; i < d.size(); ++i) t[i] = static_cast<T>(d[i]);
  return t;
}

// (m + damping I) factored and inverted in place; false if the factorization fails.
bool damped_inverse(Tensor<double>& m, double damping) {
  const Index n = m.dim(0);
  for (Index i = 0; i < n; ++i) m[i * n + i] += damping;
  if (cholesky_in_place(m) >= 0) return false;
  cholesky_inverse_in_place(m);
  return true;
}

}  // namespace

void validate(const KfacOptions& o) {
  check_option(o.learning_rate > 0 && std::isfinite(o.learning_rate), "learning_rate",
               o.learning_rate, "positive and finite");
  check_option(o.damping > 0 && std::isfinite(o.damping), "damping", o.damping,
               "positive and finite");
  check_option(o.decay >= 0 && o.decay < 1, "decay", o.decay, "in [0, 1)");
  check_option(o.inverse_update_every >= 1, "inverse_update_every", o.inverse_update_every, ">= 1");
  check_option(o.statistics_batch >= 0, "statistics_batch", static_cast<double>(o.statistics_batch),
               ">= 0 (0: the whole batch)");
  check_option(o.momentum >= 0 && o.momentum < 1, "momentum", o.momentum, "in [0, 1)");
  check_option(o.kl_clip >= 0 && std::isfinite(o.kl_clip), "kl_clip", o.kl_clip,
               ">= 0 and finite (0 disables it)");
  check_option(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "weight_decay", o.weight_decay,
               ">= 0 and finite");
  check_option(o.untapped_curvature >= 0 && std::isfinite(o.untapped_curvature),
               "untapped_curvature", o.untapped_curvature, ">= 0 and finite");
  check_option(o.fisher == KfacFisher::sampled || o.fisher == KfacFisher::kflr ||
                   o.fisher == KfacFisher::empirical,
               "fisher", static_cast<double>(o.fisher), "sampled, kflr or empirical");
  check_option(o.conv == KfacConv::expand || o.conv == KfacConv::reduce, "conv",
               static_cast<double>(o.conv), "expand or reduce");
}

// ---- taps and statistics -----------------------------------------------------------------------

namespace {

// Collects every tapped layer of one recorded forward pass: its input value and output variable.
template <Real T>
class TapCollector final : public nn::TapObserver<Var<T>> {
 public:
  struct Seen {
    nn::LayerTap<Var<T>> tap;  // input/output pointers cleared: they die with the layer's call
    Tensor<T> input;           // a_l (primal)
    Var<T> output;             // s_l, a recorded intermediate
  };
  std::vector<Seen> seen;
  void on_layer(const nn::LayerTap<Var<T>>& t) override {
    Seen s{t, t.input->value(), *t.output};
    s.tap.input = nullptr;
    s.tap.output = nullptr;
    seen.push_back(std::move(s));
  }
};

std::string layer_prefix(const std::string& weight_name) {
  // "3.body.0.weight" -> "3.body.0"; a bare "weight" (the model is the layer) -> "".
  const std::string suffix = "weight";
  std::string p = weight_name;
  if (p.size() >= suffix.size() &&
      p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0) {
    p.resize(p.size() - suffix.size());
  }
  if (!p.empty() && p.back() == '.') p.pop_back();
  return p;
}

std::string pair_str(const std::array<Index, 2>& a) {
  return a[0] == a[1] ? std::to_string(a[0])
                      : "(" + std::to_string(a[0]) + ", " + std::to_string(a[1]) + ")";
}

// The K-FAC block of one tap, checked against the layout: [W; b] must be one contiguous
// (rows, out) row-major matrix.
template <Real T>
KfacLayer plan_layer(const nn::LayerTap<Var<T>>& t, const std::vector<nn::ParamInfo>& layout) {
  if (t.weight_index >= layout.size() || (t.has_bias && t.weight_index + 1 >= layout.size())) {
    throw ValueError("K-FAC: a layer tap names parameter " + std::to_string(t.weight_index) +
                     " but the model has " + std::to_string(layout.size()) + " parameters");
  }
  const nn::ParamInfo& w = layout[t.weight_index];
  KfacLayer l;
  l.weight_index = t.weight_index;
  l.bias = t.has_bias;
  l.offset = w.offset;
  const std::string prefix = layer_prefix(w.name);
  const std::string at = prefix.empty() ? "" : prefix + ": ";
  if (t.kind == nn::LayerTap<Var<T>>::Kind::linear) {
    l.kind = KfacLayerKind::linear;
    if (w.shape.rank() != 2) {
      throw Error("K-FAC: the Linear layer tapped with weight '" + w.name +
                  "' has a weight of shape " + w.shape.str() + ", expected (in, out)");
    }
    l.in = w.shape[0];
    l.out = w.shape[1];
    l.name = at + "Linear(" + std::to_string(l.in) + " -> " + std::to_string(l.out) +
             (l.bias ? ")" : ", no bias)");
  } else {
    l.kind = KfacLayerKind::conv2d;
    l.kernel = t.kernel;
    l.conv = t.conv;
    if (w.shape.rank() != 4 || w.shape[0] != t.kernel[0] || w.shape[1] != t.kernel[1]) {
      throw Error("K-FAC: the Conv2d layer tapped with weight '" + w.name +
                  "' has a weight of shape " + w.shape.str() +
                  ", expected (KH, KW, C_in / groups, C_out)");
    }
    const Index cin = w.shape[2] * t.conv.groups;
    l.in = w.shape[0] * w.shape[1] * w.shape[2];
    l.out = w.shape[3];
    l.name = at + "Conv2d(" + std::to_string(cin) + " -> " + std::to_string(l.out) + ", " +
             pair_str(t.kernel) + ")";
    if (t.conv.groups != 1) {
      throw ValueError("K-FAC: layer " + l.name +
                       " is a grouped convolution (groups = " + std::to_string(t.conv.groups) +
                       "); K-FAC supports Conv2d with groups = 1 only");
    }
  }
  const bool contiguous =
      w.shape.numel() == l.in * l.out &&
      (!l.bias || (layout[t.weight_index + 1].shape == Shape{l.out} &&
                   layout[t.weight_index + 1].offset == l.offset + l.in * l.out));
  if (!contiguous) {
    throw Error("K-FAC: layer " + l.name +
                ": parameters are not laid out as one [W; b] block (weight '" + w.name + "' " +
                w.shape.str() +
                (l.bias ? ", then bias '" + layout[t.weight_index + 1].name + "' " +
                              layout[t.weight_index + 1].shape.str()
                        : std::string()) +
                ")");
  }
  return l;
}

bool same_layer(const KfacLayer& a, const KfacLayer& b) {
  return a.kind == b.kind && a.weight_index == b.weight_index && a.bias == b.bias && a.in == b.in &&
         a.out == b.out && a.kernel == b.kernel && a.conv.stride == b.conv.stride &&
         a.conv.padding == b.conv.padding && a.conv.dilation == b.conv.dilation;
}

// Rows of the augmented inputs [a, 1] of examples [n0, n1) of a layer (one row per example, or per
// example and output position for an expanded convolution, or the mean patch per example for a
// reduced one), written into buf (row stride rows). Returns the number of rows written.
template <Real T>
Index augmented_rows(const KfacLayer& L, KfacConv approx, const Tensor<T>& x, Index oh, Index ow,
                     Index n0, Index n1, std::vector<T>& buf) {
  const Index rows = L.rows();
  if (L.kind == KfacLayerKind::linear) {
    const Index count = n1 - n0;
    buf.resize(static_cast<std::size_t>(count * rows));
    for (Index i = 0; i < count; ++i) {
      const T* xi = x.data() + (n0 + i) * L.in;
      T* r = buf.data() + i * rows;
      std::copy(xi, xi + L.in, r);
      if (L.bias) r[L.in] = T(1);
    }
    return count;
  }
  // im2col of the channels-last image x (N, H, W, C_in): the patch of output (oh, ow) is the
  // (kh, kw, c) window, matching the weight's (KH, KW, C_in, C_out) row-major order.
  const Index h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const Index kh = L.kernel[0], kw = L.kernel[1];
  const Index positions = oh * ow;
  const bool expand = approx == KfacConv::expand;
  const Index count = expand ? (n1 - n0) * positions : n1 - n0;
  buf.assign(static_cast<std::size_t>(count * rows), T(0));
  std::vector<double> mean;
  if (!expand) mean.resize(static_cast<std::size_t>(L.in));
  for (Index n = n0; n < n1; ++n) {
    const T* xn = x.data() + n * h * w * c;
    if (!expand) std::fill(mean.begin(), mean.end(), 0.0);
    for (Index p = 0; p < oh; ++p) {
      for (Index q = 0; q < ow; ++q) {
        T* r = expand ? buf.data() + ((n - n0) * positions + p * ow + q) * rows : nullptr;
        for (Index i = 0; i < kh; ++i) {
          const Index ih = p * L.conv.stride[0] - L.conv.padding[0] + i * L.conv.dilation[0];
          if (ih < 0 || ih >= h) continue;
          for (Index j = 0; j < kw; ++j) {
            const Index iw = q * L.conv.stride[1] - L.conv.padding[1] + j * L.conv.dilation[1];
            if (iw < 0 || iw >= w) continue;
            const T* src = xn + (ih * w + iw) * c;
            const Index k0 = (i * kw + j) * c;
            if (expand) {
              std::copy(src, src + c, r + k0);
            } else {
              for (Index k = 0; k < c; ++k) mean[static_cast<std::size_t>(k0 + k)] += src[k];
            }
          }
        }
        if (expand && L.bias) r[L.in] = T(1);
      }
    }
    if (!expand) {
      T* r = buf.data() + (n - n0) * rows;
      const double inv = 1.0 / static_cast<double>(positions);
      for (Index k = 0; k < L.in; ++k)
        r[k] = static_cast<T>(mean[static_cast<std::size_t>(k)] * inv);
      if (L.bias) r[L.in] = T(1);
    }
  }
  return count;
}

// A <- alpha_total * (mean over the statistics rows of r r^T) + eps A, over the augmented rows of
// the first ns examples, built in chunks of examples to bound the scratch memory.
template <Real T>
void accumulate_a(const KfacLayer& L, KfacConv approx, const Tensor<T>& x, const Shape& out_shape,
                  Index ns, double w, double eps, Tensor<T>& a, std::vector<T>& buf) {
  const bool conv = L.kind == KfacLayerKind::conv2d;
  const Index oh = conv ? out_shape[1] : 1, ow = conv ? out_shape[2] : 1;
  const Index per_example = (conv && approx == KfacConv::expand) ? oh * ow : 1;
  const Index total = ns * per_example;  // rows averaged over
  constexpr Index kChunkElements = Index{1} << 22;
  const Index chunk =
      std::max<Index>(1, kChunkElements / std::max<Index>(1, per_example * L.rows()));
  double beta = eps;
  for (Index n0 = 0; n0 < ns; n0 += chunk) {
    const Index n1 = std::min(ns, n0 + chunk);
    const Index m = augmented_rows(L, approx, x, oh, ow, n0, n1, buf);
    symmetric_gram<T>(m, L.rows(), w / static_cast<double>(total), buf.data(), L.rows(), beta,
                      a.data(), L.rows());
    beta = 1;
  }
}

// G <- alpha * sum over the error rows of delta delta^T + beta G, for the first ns examples of the
// errors delta (N, out) or (N, OH, OW, out): one row per example and position (expand), or the
// sum over positions per example (reduce).
template <Real T>
void accumulate_g(const KfacLayer& L, KfacConv approx, const Tensor<T>& delta, Index ns,
                  double alpha, double beta, Tensor<T>& g, std::vector<T>& buf) {
  const Index positions = delta.size() / (delta.dim(0) * L.out);
  if (L.kind == KfacLayerKind::linear || approx == KfacConv::expand || positions == 1) {
    symmetric_gram<T>(ns * positions, L.out, alpha, delta.data(), L.out, beta, g.data(), L.out);
    return;
  }
  buf.assign(static_cast<std::size_t>(ns * L.out), T(0));
  std::vector<double> sum(static_cast<std::size_t>(L.out));
  for (Index n = 0; n < ns; ++n) {
    std::fill(sum.begin(), sum.end(), 0.0);
    const T* d = delta.data() + n * positions * L.out;
    for (Index t = 0; t < positions; ++t)
      for (Index j = 0; j < L.out; ++j) sum[static_cast<std::size_t>(j)] += d[t * L.out + j];
    for (Index j = 0; j < L.out; ++j)
      buf[static_cast<std::size_t>(n * L.out + j)] =
          static_cast<T>(sum[static_cast<std::size_t>(j)]);
  }
  symmetric_gram<T>(ns, L.out, alpha, buf.data(), L.out, beta, g.data(), L.out);
}

// Columns of a symmetric factor B_i B_i^T = H_L(z_i) for every example: factors[c] is (N, C) with
// row i the c-th column of B_i. H_L(z_i) comes from C head.hessian_product() calls on unit
// vectors; B_i is its lower Cholesky factor, with a zero column where the pivot is at roundoff
// level (H_L is only semi-definite, e.g. softmax's has the null vector 1).
template <Real T>
std::vector<Tensor<T>> logit_hessian_factor(const nn::Head<T>& head, const Tensor<T>& z) {
  const Index n = z.dim(0), c = z.dim(1);
  std::vector<double> h(static_cast<std::size_t>(n * c * c));  // h[i][r][k] = H_L(z_i)[r, k]
  Tensor<T> e(z.shape()), col = Tensor<T>::uninitialized(z.shape());
  for (Index k = 0; k < c; ++k) {
    e.fill(T(0));
    for (Index i = 0; i < n; ++i) e[i * c + k] = T(1);
    head.hessian_product(z, e, col);
    for (Index i = 0; i < n; ++i)
      for (Index r = 0; r < c; ++r)
        h[static_cast<std::size_t>((i * c + r) * c + k)] = static_cast<double>(col[i * c + r]);
  }
  std::vector<Tensor<T>> factors;
  for (Index k = 0; k < c; ++k) factors.push_back(Tensor<T>(z.shape()));
  std::vector<double> l(static_cast<std::size_t>(c * c));
  for (Index i = 0; i < n; ++i) {
    const double* hi = h.data() + i * c * c;
    double max_diag = 0;
    for (Index r = 0; r < c; ++r) max_diag = std::max(max_diag, std::fabs(hi[r * c + r]));
    const double tol = 1e-13 * max_diag;
    std::fill(l.begin(), l.end(), 0.0);
    for (Index k = 0; k < c; ++k) {
      double d = hi[k * c + k];
      for (Index j = 0; j < k; ++j)
        d -= l[static_cast<std::size_t>(k * c + j)] * l[static_cast<std::size_t>(k * c + j)];
      if (!(d > tol)) continue;  // zero column
      const double lkk = std::sqrt(d);
      l[static_cast<std::size_t>(k * c + k)] = lkk;
      for (Index r = k + 1; r < c; ++r) {
        double s = hi[r * c + k];
        for (Index j = 0; j < k; ++j)
          s -= l[static_cast<std::size_t>(r * c + j)] * l[static_cast<std::size_t>(k * c + j)];
        l[static_cast<std::size_t>(r * c + k)] = s / lkk;
      }
    }
    for (Index k = 0; k < c; ++k)
      for (Index r = 0; r < c; ++r)
        factors[static_cast<std::size_t>(k)][i * c + r] =
            static_cast<T>(l[static_cast<std::size_t>(r * c + k)]);
  }
  return factors;
}

}  // namespace

// ---- KroneckerFactors ---------------------------------------------------------------------------

template <Real T>
struct KroneckerFactors<T>::State {
  const nn::Model<T>* model;
  const nn::Head<T>* head;
  KfacOptions options;
  std::vector<KfacLayer> layers;
  std::vector<std::pair<Index, Index>> untapped;  // flat (offset, length) ranges
  std::vector<Tensor<T>> a, g, a_inv, g_inv;
  std::vector<double> pi, damping_used;
  double untapped_scale = 0;  // 1 / (untapped_curvature + lambda) of the last update_inverses()
  std::uint64_t updates = 0;
  bool has_inverses = false;
  Tape<T> tape;
  Tensor<T> scratch;    // (rows, out) of the largest layer, for precondition()
  std::vector<T> rows;  // im2col / augmented-input rows and reduced errors
};

template <Real T>
KroneckerFactors<T>::KroneckerFactors(const nn::Model<T>& model, const nn::Head<T>& head,
                                      KfacOptions options)
    : s_(std::make_unique<State>()) {
  validate(options);
  s_->model = &model;
  s_->head = &head;
  s_->options = options;
}

template <Real T>
KroneckerFactors<T>::KroneckerFactors(KroneckerFactors&&) noexcept = default;
template <Real T>
KroneckerFactors<T>& KroneckerFactors<T>::operator=(KroneckerFactors&&) noexcept = default;
template <Real T>
KroneckerFactors<T>::~KroneckerFactors() = default;

namespace {

// The blocks of one forward pass's taps, checked against the layout (see plan_layer).
template <Real T>
std::vector<KfacLayer> plan_layers(const nn::Model<T>& model,
                                   const std::vector<typename TapCollector<T>::Seen>& seen) {
  std::vector<KfacLayer> layers;
  std::vector<bool> used(model.layout().size(), false);
  for (const auto& s : seen) {
    KfacLayer l = plan_layer(s.tap, model.layout());
    if (used[l.weight_index]) {
      throw ValueError("K-FAC: layer " + l.name + " was tapped twice in one forward pass (shared " +
                       "weights); K-FAC needs each tapped weight to be used once");
    }
    used[l.weight_index] = true;
    if (l.bias) used[l.weight_index + 1] = true;
    layers.push_back(std::move(l));
  }
  return layers;
}

}  // namespace

template <Real T>
double KroneckerFactors<T>::update(const Tensor<T>& inputs, const Tensor<T>& targets,
                                   Tensor<T>* gradient) {
  check_batch("KroneckerFactors::update", inputs.shape(), targets.shape());
  State& s = *s_;
  const Index n = inputs.dim(0);
  const Index ns = (s.options.statistics_batch > 0 && s.options.statistics_batch < n)
                       ? s.options.statistics_batch
                       : n;
  std::vector<Tensor<T>> grads;
  if (gradient) grads = s.model->split(*gradient);  // views: ShapeError unless length P

  // The forward pass recorded once; the observer keeps each tapped layer's a_l and s_l.
  Tape<T>& tape = s.tape;
  tape.clear();
  const std::vector<Var<T>> params = s.model->variables(tape);
  const std::span<const Var<T>> all(params);
  TapCollector<T> taps;
  const Var<T> z = s.model->forward_observed(Var<T>(inputs), all, taps);
  std::vector<KfacLayer> plan;
  try {
    plan = plan_layers(*s.model, taps.seen);
  } catch (...) {
    tape.clear();
    throw;
  }
  if (s.layers.empty() && plan.empty()) {
    tape.clear();
    throw ValueError("K-FAC: the forward pass of " + s.model->module().describe() +
                     " tapped no Linear or Conv2d layer (nn::LayerTap); K-FAC needs at least one");
  }
  if (!s.layers.empty()) {
    bool same = plan.size() == s.layers.size();
    for (std::size_t l = 0; same && l < plan.size(); ++l) same = same_layer(plan[l], s.layers[l]);
    if (!same) {
      tape.clear();
      throw ValueError("K-FAC: this forward pass tapped " + std::to_string(plan.size()) +
                       " layers that differ from the " + std::to_string(s.layers.size()) +
                       " layers of the first update (the model's structure must not change)");
    }
  }
  const double loss = static_cast<double>(s.head->loss(z.value(), targets).item());
  if (!std::isfinite(loss)) {
    tape.clear();
    throw ValueError("K-FAC: the loss " + std::to_string(loss) +
                     " is not finite; the Kronecker factors were not updated");
  }
  if (s.layers.empty()) {  // the first update defines the blocks
    std::vector<bool> covered(s.model->layout().size(), false);
    Index scratch = 0;
    for (const KfacLayer& l : plan) {
      covered[l.weight_index] = true;
      if (l.bias) covered[l.weight_index + 1] = true;
      scratch = std::max(scratch, l.rows() * l.out);
      s.a.push_back(Tensor<T>(Shape{l.rows(), l.rows()}));
      s.g.push_back(Tensor<T>(Shape{l.out, l.out}));
    }
    for (std::size_t p = 0; p < covered.size(); ++p) {
      if (covered[p]) continue;
      const nn::ParamInfo& info = s.model->layout()[p];
      if (!s.untapped.empty() &&
          s.untapped.back().first + s.untapped.back().second == info.offset) {
        s.untapped.back().second += info.shape.numel();
      } else {
        s.untapped.emplace_back(info.offset, info.shape.numel());
      }
    }
    s.layers = std::move(plan);
    s.a_inv.resize(s.layers.size());
    s.g_inv.resize(s.layers.size());
    s.pi.assign(s.layers.size(), 1.0);
    s.damping_used.assign(s.layers.size(), 0.0);
    s.scratch = Tensor<T>::uninitialized(Shape{scratch});
  }
  const std::size_t num_layers = s.layers.size();
  std::vector<Tensor<T>> acts;
  std::vector<Var<T>> outs;
  for (const auto& seen : taps.seen) {
    acts.push_back(seen.input);
    outs.push_back(seen.output);
  }
  taps.seen.clear();

  // Logit cotangent of the mean loss, (mu(z) - T(y)) / N: the gradient's sweep.
  Tensor<T> gz = Tensor<T>::uninitialized(z.shape());
  s.head->gradient(z.value(), targets, gz);
  std::vector<Tensor<T>> deltas(num_layers);
  for (std::size_t l = 0; l < num_layers; ++l) {
    deltas[l] = Tensor<T>::uninitialized(outs[l].shape());
  }
  const std::span<const Var<T>> zs(&z, 1);
  // Moving averages (M&G 2015, sec. 5): weight eps = min(1 - 1/k, decay) on the old value.
  const double k = static_cast<double>(s.updates + 1);
  const double eps = std::min(1.0 - 1.0 / k, s.options.decay), w = 1.0 - eps;
  const double inv_ns = 1.0 / static_cast<double>(ns);
  const KfacConv approx = s.options.conv;
  // G = w/Ns sum delta delta^T + eps G, with delta = delta_scale * (the swept cotangent at s_l).
  auto add_g = [&](double delta_scale, double beta) {
    for (std::size_t l = 0; l < num_layers; ++l) {
      accumulate_g(s.layers[l], approx, deltas[l], ns, w * delta_scale * delta_scale * inv_ns, beta,
                   s.g[l], s.rows);
    }
  };
  // The errors first (they are all that can still fail), the factors after.
  switch (s.options.fisher) {
    case KfacFisher::empirical: {
      // The data labels' errors N dl/ds_l come out of the gradient's own sweep.
      std::vector<Var<T>> ins;
      std::vector<Tensor<T>> res;
      if (gradient) {
        ins = params;
        res = grads;
      }
      ins.insert(ins.end(), outs.begin(), outs.end());
      res.insert(res.end(), deltas.begin(), deltas.end());  // shares storage with deltas
      tape.vjp_into(zs, std::span<const Tensor<T>>(&gz, 1), ins, res);
      add_g(static_cast<double>(n), eps);
      break;
    }
    case KfacFisher::sampled: {
      if (gradient) tape.vjp_into(zs, std::span<const Tensor<T>>(&gz, 1), all, grads);
      // True Fisher: y ~ p_theta(.|x), error mu(z) - T(y) per example (no 1/N). The sign does not
      // change G; it is kept so that delta is the error a data label would give.
      const Tensor<T> y = s.head->sample(z.value(), s.options.seed, s.updates);
      Tensor<T> e = Tensor<T>::uninitialized(z.shape());
      s.head->score(z.value(), y, e);
      scal(-1.0, e);
      tape.vjp_into(zs, std::span<const Tensor<T>>(&e, 1), outs, deltas);
      add_g(1.0, eps);
      break;
    }
    case KfacFisher::kflr: {
      if (gradient) tape.vjp_into(zs, std::span<const Tensor<T>>(&gz, 1), all, grads);
      // Botev et al. 2017: G = 1/N sum_i sum_c (J_i^T b_{i,c})(J_i^T b_{i,c})^T, B_i B_i^T =
      // H_L(z_i).
      const std::vector<Tensor<T>> b = logit_hessian_factor(*s.head, z.value());
      for (std::size_t c = 0; c < b.size(); ++c) {
        tape.vjp_into(zs, std::span<const Tensor<T>>(&b[c], 1), outs, deltas);
        add_g(1.0, c == 0 ? eps : 1.0);
      }
      break;
    }
  }
  tape.clear();

  for (std::size_t l = 0; l < num_layers; ++l) {
    accumulate_a(s.layers[l], approx, acts[l], outs[l].shape(), ns, w, eps, s.a[l], s.rows);
  }
  ++s.updates;
  return loss;
}

template <Real T>
void KroneckerFactors<T>::update_inverses(double lambda) {
  State& s = *s_;
  if (!(lambda > 0) || !std::isfinite(lambda)) {
    throw ValueError("KroneckerFactors::update_inverses: damping lambda = " +
                     std::to_string(lambda) + " must be positive and finite");
  }
  if (s.updates == 0) {
    throw ValueError("KroneckerFactors::update_inverses: no statistics yet (call update() first)");
  }
  const double gamma = std::sqrt(lambda);
  for (std::size_t l = 0; l < s.layers.size(); ++l) {
    const Tensor<double> a = to_double(s.a[l]), g = to_double(s.g[l]);
    const double ta = mean_diagonal(a), tg = mean_diagonal(g);
    for (const auto& [f, name] : {std::pair{&a, "A"}, std::pair{&g, "G"}}) {
      for (Index i = 0; i < f->size(); ++i) {
        if (!std::isfinite((*f)[i])) {
          throw ValueError("K-FAC: layer " + s.layers[l].name + ": factor " + name +
                           " has a non-finite entry (" + std::to_string((*f)[i]) + ")");
        }
      }
    }
    // sec. 6.3: pi balances the two dampings by the factors' mean eigenvalues.
    const double pi = (ta > 0 && tg > 0) ? std::sqrt(ta / tg) : 1.0;
    bool ok = false;
    double boost = 1;
    Tensor<double> ai, gi;
    for (int attempt = 0; attempt <= kDampingRetries && !ok; ++attempt, boost *= 10) {
      ai = a.clone();
      gi = g.clone();
      ok = damped_inverse(ai, pi * gamma * boost) && damped_inverse(gi, gamma / pi * boost);
      if (ok) s.damping_used[l] = lambda * boost * boost;
    }
    if (!ok) {
      throw ValueError("K-FAC: layer " + s.layers[l].name + ": the damped Kronecker factors (A " +
                       s.a[l].shape().str() + ", G " + s.g[l].shape().str() +
                       ") are not positive definite even with damping lambda = " +
                       std::to_string(lambda * boost * boost / 100));
    }
    s.pi[l] = pi;
    s.a_inv[l] = from_double<T>(ai);
    s.g_inv[l] = from_double<T>(gi);
  }
  s.untapped_scale = 1.0 / (s.options.untapped_curvature + lambda);
  s.has_inverses = true;
}

template <Real T>
void KroneckerFactors<T>::precondition(const Tensor<T>& g, Tensor<T>& out) {
  State& s = *s_;
  const Index p = s.model->num_parameters();
  if (g.rank() != 1 || out.rank() != 1 || g.size() != p || out.size() != p) {
    throw ShapeError("KroneckerFactors::precondition: g " + g.shape().str() + " and out " +
                     out.shape().str() + " must both be (" + std::to_string(p) + ")");
  }
  if (!s.has_inverses) {
    throw ValueError("KroneckerFactors::precondition: no inverses yet (call update_inverses())");
  }
  T* tmp = s.scratch.data();
  for (std::size_t l = 0; l < s.layers.size(); ++l) {
    const KfacLayer& L = s.layers[l];
    const Index rows = L.rows(), cols = L.out;
    // U = A^{-1} X G^{-1} for the row-major block X = [grad W; grad b]: (A (x) G)^{-1} vec(X).
    kernels::gemm<T>(Trans::no, Trans::no, rows, cols, rows, T(1), s.a_inv[l].data(), rows,
                     g.data() + L.offset, cols, T(0), tmp, cols);
    kernels::gemm<T>(Trans::no, Trans::no, rows, cols, cols, T(1), tmp, cols, s.g_inv[l].data(),
                     cols, T(0), out.data() + L.offset, cols);
  }
  // Parameters in no tapped layer: the block c I, damped: (c + lambda)^{-1} g.
  const T scale = static_cast<T>(s.untapped_scale);
  for (const auto& [offset, length] : s.untapped) {
    const T* src = g.data() + offset;
    T* dst = out.data() + offset;
    for (Index i = 0; i < length; ++i) dst[i] = scale * src[i];
  }
}

template <Real T>
const std::vector<KfacLayer>& KroneckerFactors<T>::layers() const {
  return s_->layers;
}
template <Real T>
const std::vector<std::pair<Index, Index>>& KroneckerFactors<T>::untapped() const {
  return s_->untapped;
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::factor_a(std::size_t l) const {
  return s_->a.at(l);
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::factor_g(std::size_t l) const {
  return s_->g.at(l);
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::inverse_a(std::size_t l) const {
  return s_->a_inv.at(l);
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::inverse_g(std::size_t l) const {
  return s_->g_inv.at(l);
}
template <Real T>
double KroneckerFactors<T>::pi(std::size_t l) const {
  return s_->pi.at(l);
}
template <Real T>
double KroneckerFactors<T>::damping_used(std::size_t l) const {
  return s_->damping_used.at(l);
}
template <Real T>
std::uint64_t KroneckerFactors<T>::updates() const {
  return s_->updates;
}
template <Real T>
bool KroneckerFactors<T>::has_inverses() const {
  return s_->has_inverses;
}
template <Real T>
Index KroneckerFactors<T>::num_parameters() const {
  return s_->model->num_parameters();
}
template <Real T>
const KfacOptions& KroneckerFactors<T>::options() const {
  return s_->options;
}
template <Real T>
std::string KroneckerFactors<T>::name() const {
  const State& s = *s_;
  const char* kind = s.options.fisher == KfacFisher::sampled ? "true Fisher"
                     : s.options.fisher == KfacFisher::kflr  ? "KFLR"
                                                             : "EMPIRICAL Fisher";
  Index untapped = 0;
  for (const auto& range : s.untapped) untapped += range.second;
  return std::string("K-FAC(") + kind + ", " + std::to_string(s.layers.size()) +
         " layers, P=" + std::to_string(num_parameters()) +
         (untapped > 0 ? ", " + std::to_string(untapped) + " untapped" : std::string()) + ")";
}

// ---- Kfac
// -----------------------------------------------------------------------------------------

template <Real T>
Kfac<T>::Kfac(nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options)
    : model_(&model), head_(&head), factors_(model, head, options) {}

template <Real T>
StepReport Kfac<T>::step(const Tensor<T>& inputs, const Tensor<T>& targets) {
  check_batch("Kfac::step", inputs.shape(), targets.shape());
  const KfacOptions& o = factors_.options();
  StepReport r;
  r.lambda = o.damping;
  Tensor<T>& theta = model_->parameters();
  Tensor<T> g = model_->zeros_like_parameters();
  // A training step, as nn::loss_and_gradient: in train mode, new dropout masks (the pass after the
  // step sees the same ones), and running statistics (batch norm) move with this batch.
  if (model_->mode() == nn::Mode::train) {
    model_->set_step(model_->step() + 1);
    if (model_->state().size() > 0) {
      const std::vector<Tensor<T>>& views = model_->parameter_views();
      model_->forward_updating_state(inputs, std::span<const Tensor<T>>(views));
    }
  }
  r.loss = factors_.update(inputs, targets, &g);
  r.gradient_norm = norm(g);
  if (steps_ % static_cast<std::uint64_t>(o.inverse_update_every) == 0 ||
      !factors_.has_inverses()) {
    factors_.update_inverses(o.damping + o.weight_decay);
  }
  if (o.weight_decay > 0) axpy(o.weight_decay, theta, g);

  Tensor<T> d = Tensor<T>::uninitialized(g.shape());
  factors_.precondition(g, d);
  // Ba et al. 2017: lr^2 g^T F^{-1} g is twice the KL divergence the step predicts.
  const double gd = dot(g, d);
  double nu = 1;
  if (o.kl_clip > 0 && gd > 0) {
    nu = std::min(1.0, std::sqrt(o.kl_clip / (o.learning_rate * o.learning_rate * gd)));
  }
  if (nu != 1) scal(nu, d);
  const Tensor<T>* step = &d;
  if (o.momentum > 0) {
    if (!velocity_.defined()) velocity_ = model_->zeros_like_parameters();
    xpby(d, o.momentum, velocity_);  // v = d + momentum v
    step = &velocity_;
  }
  Tensor<T> theta0;
  if (o.evaluate_loss_after) theta0 = theta.clone();
  axpy(-multiplier_ * o.learning_rate, *step, theta);
  r.step_scale = nu;
  r.step_norm = multiplier_ * o.learning_rate * norm(*step);
  r.loss_after = std::numeric_limits<double>::quiet_NaN();
  if (o.evaluate_loss_after) {
    const double after = static_cast<double>(head_->loss(model_->forward(inputs), targets).item());
    if (std::isfinite(after)) {
      r.loss_after = after;
    } else {  // never keep a step into NaN/inf: undo it, and forget the momentum that led there
      copy(theta0, theta);
      if (velocity_.defined()) velocity_.fill(T(0));
      r.loss_after = r.loss;
      r.step_scale = 0;
      r.step_norm = 0;
    }
  }
  ++steps_;
  return r;
}

template <Real T>
void Kfac<T>::set_step_multiplier(double s) {
  if (!(s >= 0) || !std::isfinite(s)) {
    throw ValueError("Kfac::set_step_multiplier: " + std::to_string(s) +
                     " must be >= 0 and finite");
  }
  multiplier_ = s;
}

// ---- KfacPreconditioner
// ---------------------------------------------------------------------------

template <Real T>
void KfacPreconditioner<T>::apply(const Tensor<T>& r, Tensor<T>& z) {
  check_apply_arguments(*this, r, z);
  factors_->precondition(r, z);
}

// ---- KfacOperator
// -------------------------------------------------------------------------------------

template <Real T>
KfacOperator<T>::KfacOperator(const KroneckerFactors<T>& factors, double lambda)
    : factors_(&factors), lambda_(lambda) {
  if (!(lambda >= 0) || !std::isfinite(lambda)) {
    throw ValueError("KfacOperator: damping lambda = " + std::to_string(lambda) +
                     " must be >= 0 and finite");
  }
}

template <Real T>
void KfacOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  const KroneckerFactors<T>& f = *factors_;
  if (f.updates() == 0) {
    throw ValueError(
        "KfacOperator::apply: the Kronecker factors have no statistics yet (call "
        "update() first)");
  }
  const double gamma = std::sqrt(lambda_);
  for (std::size_t l = 0; l < f.layers().size(); ++l) {
    const KfacLayer& L = f.layers()[l];
    const Index rows = L.rows(), cols = L.out;
    if (scratch_.size() < rows * cols) scratch_ = Tensor<T>::uninitialized(Shape{rows * cols});
    const Tensor<T>&a = f.factor_a(l), &g = f.factor_g(l);
    // (A + da I) X (G + dg I) = vec^{-1}(((A + da I) (x) (G + dg I)) vec(X)), X row-major.
    double da = 0, dg = 0;
    if (lambda_ > 0) {
      double ta = 0, tg = 0;
      for (Index i = 0; i < rows; ++i) ta += static_cast<double>(a[i * rows + i]);
      for (Index i = 0; i < cols; ++i) tg += static_cast<double>(g[i * cols + i]);
      ta /= static_cast<double>(rows);
      tg /= static_cast<double>(cols);
      const double pi = (ta > 0 && tg > 0) ? std::sqrt(ta / tg) : 1.0;
      da = pi * gamma;
      dg = gamma / pi;
    }
    T* tmp = scratch_.data();
    const T* x = v.data() + L.offset;
    T* y = out.data() + L.offset;
    kernels::gemm<T>(Trans::no, Trans::no, rows, cols, rows, T(1), a.data(), rows, x, cols, T(0),
                     tmp, cols);
    if (da != 0) {
      for (Index i = 0; i < rows * cols; ++i) tmp[i] += static_cast<T>(da) * x[i];
    }
    kernels::gemm<T>(Trans::no, Trans::no, rows, cols, cols, T(1), tmp, cols, g.data(), cols, T(0),
                     y, cols);
    if (dg != 0) {
      for (Index i = 0; i < rows * cols; ++i) y[i] += static_cast<T>(dg) * tmp[i];
    }
  }
  const T c = static_cast<T>(f.options().untapped_curvature + lambda_);
  for (const auto& [offset, length] : f.untapped()) {
    for (Index i = 0; i < length; ++i) out[offset + i] = c * v[offset + i];
  }
}

template <Real T>
std::string KfacOperator<T>::name() const {
  return "KfacOperator(" + factors_->name() +
         (lambda_ > 0 ? ", factored damping " + std::to_string(lambda_) : std::string()) + ")";
}

template class KroneckerFactors<float>;
template class KroneckerFactors<double>;
template class Kfac<float>;
template class Kfac<double>;
template class KfacPreconditioner<float>;
template class KfacPreconditioner<double>;
template class KfacOperator<float>;
template class KfacOperator<double>;

}  // namespace amari::curvature

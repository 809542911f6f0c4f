#include <amari/curvature/kfac.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <amari/autodiff/kernels/gemm.hpp>
#include <amari/curvature/damping.hpp>
#include <amari/curvature/dense_solve.hpp>
#include <amari/curvature/detail/damped_step.hpp>
#include <amari/curvature/detail/factor_rows.hpp>
#include <amari/curvature/detail/logit_factor.hpp>
#include <amari/curvature/detail/tapped_record.hpp>
#include <amari/curvature/distributed_operator.hpp>
#include <amari/curvature/vector_ops.hpp>
#include <amari/nn/training.hpp>

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

template <Real T>
double mean_diagonal(const Tensor<T>& m) {
  const Index n = m.dim(0);
  double s = 0;
  for (Index i = 0; i < n; ++i) s += static_cast<double>(m[i * n + i]);
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
  check_option(o.statistics_update_every >= 1, "statistics_update_every", o.statistics_update_every,
               ">= 1");
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
  check_option(
      o.approximation == KfacApproximation::kfac || o.approximation == KfacApproximation::ekfac,
      "approximation", static_cast<double>(o.approximation), "kfac or ekfac");
  check_option(o.damping_adaptation_every >= 1, "damping_adaptation_every",
               o.damping_adaptation_every, ">= 1");
  check_option(o.min_damping > 0 && std::isfinite(o.min_damping), "min_damping", o.min_damping,
               "positive and finite");
  check_option(o.max_damping >= o.min_damping && std::isfinite(o.max_damping), "max_damping",
               o.max_damping, ">= min_damping and finite");
  if (o.adaptive) {
    // The adaptive mode computes mu itself (M&G 2015, sec. 7); a fixed momentum on top of it
    // would be a second, unmodelled one.
    check_option(o.momentum == 0, "momentum", o.momentum, "0 with adaptive (mu is computed)");
    check_option(o.damping >= o.min_damping && o.damping <= o.max_damping, "damping", o.damping,
                 "in [min_damping, max_damping] with adaptive");
  }
}

std::uint64_t options_fingerprint(const KfacOptions& o) {
  char buf[512];
  std::snprintf(
      buf, sizeof buf, "kfac %.17g %.17g %.17g %d %d %llu %lld %.17g %.17g %.17g %d %d %.17g %d",
      o.learning_rate, o.damping, o.decay, o.inverse_update_every, static_cast<int>(o.fisher),
      static_cast<unsigned long long>(o.seed), static_cast<long long>(o.statistics_batch),
      o.momentum, o.kl_clip, o.weight_decay, o.evaluate_loss_after ? 1 : 0,
      static_cast<int>(o.conv), o.untapped_curvature, static_cast<int>(o.approximation));
  std::string text = buf;
  if (o.statistics_update_every != 1) {  // likewise only then
    text += " statistics_every " + std::to_string(o.statistics_update_every);
  }
  if (!o.low_rank_inverses) text += " dense_inverses";  // likewise
  if (o.adaptive) {  // only then, so the fingerprint of the default options is as it was
    std::snprintf(buf, sizeof buf, " adaptive %d %.17g %.17g", o.damping_adaptation_every,
                  o.min_damping, o.max_damping);
    text += buf;
  }
  return nn::fingerprint(text);
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

}  // namespace

namespace {

// Plans every tap against the layout (see plan_layer). refuse: the first tap K-FAC cannot factor
// throws; skip: such taps are dropped, and a weight tapped more than once drops all its taps.
template <Real T>
std::vector<detail::TappedLayer<T>> plan_layers(const nn::Model<T>& model,
                                                std::vector<typename TapCollector<T>::Seen>& seen,
                                                detail::TapPolicy policy) {
  using detail::TapPolicy;
  std::vector<detail::TappedLayer<T>> layers;
  std::vector<int> uses(model.layout().size(), 0);
  for (auto& s : seen) {
    KfacLayer l;
    try {
      l = plan_layer(s.tap, model.layout());
    } catch (const Error&) {
      if (policy == TapPolicy::refuse) throw;
      continue;
    }
    if (uses[l.weight_index]++ > 0 && policy == TapPolicy::refuse) {
      throw ValueError("K-FAC: layer " + l.name + " was tapped twice in one forward pass (shared " +
                       "weights); K-FAC needs each tapped weight to be used once");
    }
    if (l.bias) ++uses[l.weight_index + 1];
    layers.push_back(detail::TappedLayer<T>{std::move(l), std::move(s.input), std::move(s.output)});
  }
  if (policy == TapPolicy::skip) {
    std::erase_if(layers, [&](const detail::TappedLayer<T>& t) {
      return uses[t.layer.weight_index] > 1 || (t.layer.bias && uses[t.layer.weight_index + 1] > 1);
    });
  }
  return layers;
}

}  // namespace

namespace detail {

template <Real T>
TappedRecord<T> record_tapped(const char* op, const nn::Model<T>& model, const Tensor<T>& inputs,
                              TapPolicy policy, nn::Model<T>* training_step) {
  TapCollector<T> taps;
  nn::RecordOptions<T> options;
  options.taps = &taps;
  options.op = op;
  options.update_state = training_step;
  std::optional<nn::RecordedModel<T>> record;
  try {
    record.emplace(model, inputs, std::move(options));
  } catch (const Error&) {
    throw;
  } catch (const std::logic_error& e) {
    // e.g. std::out_of_range from a module whose structure changed after the Model was built.
    throw Error(std::string(op) + ": the forward pass of " + model.module().describe() +
                " failed (" + e.what() + "); has the module changed since the Model was built?");
  }
  std::vector<TappedLayer<T>> layers = plan_layers(model, taps.seen, policy);
  return TappedRecord<T>{std::move(*record), std::move(layers)};
}

template TappedRecord<float> record_tapped<float>(const char*, const nn::Model<float>&,
                                                  const Tensor<float>&, TapPolicy, nn::Model<float>*);
template TappedRecord<double> record_tapped<double>(const char*, const nn::Model<double>&,
                                                    const Tensor<double>&, TapPolicy,
                                                    nn::Model<double>*);

}  // namespace detail

template <Real T>
Index layer_input_rows(const KfacLayer& L, const Tensor<T>& input, const Shape& output_shape,
                       Index n0, Index n1, std::vector<T>& rows) {
  const bool conv = L.kind == KfacLayerKind::conv2d;
  return augmented_rows(L, KfacConv::expand, input, conv ? output_shape[1] : 1,
                        conv ? output_shape[2] : 1, n0, n1, rows);
}

#define AMARI_KFAC_SHARED(T)                                                                  \
  template Index layer_input_rows<T>(const KfacLayer&, const Tensor<T>&, const Shape&, Index, \
                                     Index, std::vector<T>&);
AMARI_KFAC_SHARED(float)
AMARI_KFAC_SHARED(double)
#undef AMARI_KFAC_SHARED

// ---- EKFAC: eigenbases and scalings ------------------------------------------------------------

namespace {

// True when x is NaN or +-inf: all exponent bits set. A test on the bits, not std::isfinite, so
// that the scans below vectorize (the factors of a 3136-input layer are 39 MB, scanned per update).
template <Real T>
bool non_finite_bits(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return (std::bit_cast<std::uint32_t>(x) & 0x7f800000u) == 0x7f800000u;
  } else {
    return (std::bit_cast<std::uint64_t>(x) & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
  }
}

// The first entry of t that is not finite (flat index), or -1. Blocks are tested with a
// branch-free OR (vectorized); only a block that has one is searched entry by entry.
template <Real T>
Index first_non_finite(const Tensor<T>& t) {
  constexpr Index kBlock = 1024;
  const T* x = t.data();
  for (Index b = 0; b < t.size(); b += kBlock) {
    const Index e = std::min(t.size(), b + kBlock);
    bool any = false;
    for (Index i = b; i < e; ++i) any |= non_finite_bits(x[i]);
    if (!any) continue;
    for (Index i = b; i < e; ++i) {
      if (non_finite_bits(x[i])) return i;
    }
  }
  return -1;
}

// The moving average eps * old + w * batch, into batch's storage (a new tensor of this update;
// `old` is never written).
template <Real T>
Tensor<T> moving_average(const Tensor<T>& old, double eps, Tensor<T> batch, double w,
                         bool* non_finite = nullptr) {
  // The result's finiteness is tested in the same pass (a bit test that vectorizes), so a caller
  // that must refuse an overflowing average needs no second pass over the factor.
  T* b = batch.data();
  bool bad = false;
  if (!old.defined() || eps == 0) {
    for (Index i = 0; i < batch.size(); ++i) {
      b[i] = static_cast<T>(w * static_cast<double>(b[i]));
      bad |= non_finite_bits(b[i]);
    }
  } else {
    const T* o = old.data();
    for (Index i = 0; i < batch.size(); ++i) {
      b[i] = static_cast<T>(w * static_cast<double>(b[i]) + eps * static_cast<double>(o[i]));
      bad |= non_finite_bits(b[i]);
    }
  }
  if (non_finite) *non_finite = bad;
  return batch;
}

// The unit eigenvectors of a symmetric factor (columns, ascending eigenvalues), in T.
template <Real T>
Tensor<T> eigenbasis(const Tensor<T>& factor) {
  return from_double<T>(symmetric_eigen(to_double(factor)).vectors);
}

// EKFAC's eigenbases u_a[l], u_g[l] of every layer's averages a[l], g[l]. Data-parallel (comm not
// null), spread over the ranks as the K-FAC inverse refreshes are (KAISA, Pauloski et al. 2021):
// rank l mod k decomposes layer l's two factors and broadcasts the bases, so each rank does about
// 1/k of the 9 (rows^3 + out^3) flops. The averages are bitwise equal on every rank and
// symmetric_eigen is deterministic, so the bases are those every rank would have computed itself.
// An allgather of one flag per rank first tells every rank whether a decomposition failed, so a
// failure is an error on every rank (the failing rank's own error there), never a broadcast that
// waits forever.
template <Real T>
void eigenbases(const std::vector<KfacLayer>& layers, const std::vector<Tensor<T>>& a,
                const std::vector<Tensor<T>>& g, nn::Communicator* comm,
                std::vector<Tensor<T>>& u_a, std::vector<Tensor<T>>& u_g) {
  const std::size_t num_layers = layers.size();
  u_a.assign(num_layers, Tensor<T>());
  u_g.assign(num_layers, Tensor<T>());
  if (!comm) {
    for (std::size_t l = 0; l < num_layers; ++l) {
      u_a[l] = eigenbasis(a[l]);
      u_g[l] = eigenbasis(g[l]);
    }
    return;
  }
  const auto k = static_cast<std::size_t>(comm->size());
  const auto me = static_cast<std::size_t>(comm->rank());
  std::uint64_t failed = 0;  // 1 + the layer this rank failed to decompose
  std::exception_ptr why;
  for (std::size_t l = me; l < num_layers && failed == 0; l += k) {
    try {
      u_a[l] = eigenbasis(a[l]);
      u_g[l] = eigenbasis(g[l]);
    } catch (const Error&) {
      failed = l + 1;
      why = std::current_exception();
    }
  }
  const std::vector<std::uint64_t> status = comm->allgather(failed);
  for (std::size_t r = 0; r < status.size(); ++r) {
    if (status[r] == 0) continue;
    if (r == me) std::rethrow_exception(why);
    throw Error("K-FAC (data-parallel): the EKFAC eigendecomposition of layer " +
                layers[status[r] - 1].name + " failed on rank " + std::to_string(r) +
                " (its error names the cause)");
  }
  for (std::size_t l = 0; l < num_layers; ++l) {
    const KfacLayer& L = layers[l];
    const Index na = L.rows() * L.rows(), ng = L.out * L.out;
    std::vector<T> buf(static_cast<std::size_t>(na + ng));
    const bool mine = l % k == me;
    if (mine) {
      std::copy(u_a[l].data(), u_a[l].data() + na, buf.data());
      std::copy(u_g[l].data(), u_g[l].data() + ng, buf.data() + na);
    }
    comm->broadcast(std::span<T>(buf), static_cast<int>(l % k));
    if (!mine) {
      u_a[l] = Tensor<T>::uninitialized(Shape{L.rows(), L.rows()});
      u_g[l] = Tensor<T>::uninitialized(Shape{L.out, L.out});
      std::copy(buf.data(), buf.data() + na, u_a[l].data());
      std::copy(buf.data() + na, buf.data() + na + ng, u_g[l].data());
    }
  }
}

// EKFAC's per-example squares in the eigenbasis, for one layer and one batch. The augmented input
// rows of the first ns examples (one per example and output position, as for KFC's expand) are
// rotated once, a_rot = [a, 1] U_A ((ns T, rows)); each column of errors delta (N, [OH, OW,] out)
// then adds the squares of U_A^T g_n U_G, g_n = sum_t a_{n,t} delta_{n,t}^T (George et al. 2018,
// eq. 10), i.e. of sum_t a_rot_{n,t} (U_G^T delta_{n,t})^T.
template <Real T>
class ScalingAccumulator {
 public:
  ScalingAccumulator(const KfacLayer& layer, const Tensor<T>& input, const Shape& output_shape,
                     Index ns, const Tensor<T>& u_a, const Tensor<T>& u_g)
      : L_(layer), u_g_(u_g), ns_(ns) {
    const Index rows = L_.rows();
    std::vector<T> raw;
    const Index m = layer_input_rows(L_, input, output_shape, 0, ns, raw);
    positions_ = m / ns;
    a_rot_.resize(static_cast<std::size_t>(m * rows));
    kernels::gemm<T>(Trans::no, Trans::no, m, rows, rows, T(1), raw.data(), rows, u_a.data(), rows,
                     T(0), a_rot_.data(), rows);
    sum_.assign(static_cast<std::size_t>(positions_ == 1 ? m * L_.out : rows * L_.out), T(0));
  }

  // Adds the squares of one column of errors, each scaled by `scale` (the squares by scale^2).
  void add(const Tensor<T>& delta, double scale) {
    const Index rows = L_.rows(), out = L_.out, m = ns_ * positions_;
    d_rot_.resize(static_cast<std::size_t>(m * out));
    kernels::gemm<T>(Trans::no, Trans::no, m, out, out, static_cast<T>(scale), delta.data(), out,
                     u_g_.data(), out, T(0), d_rot_.data(), out);
    if (positions_ == 1) {  // (a_rot_n)^2 (d_rot_n^2)^T: the d^2 are summed first, one GEMM later
      for (std::size_t k = 0; k < d_rot_.size(); ++k) sum_[k] += d_rot_[k] * d_rot_[k];
      return;
    }
    gradient_.resize(static_cast<std::size_t>(rows * out));
    for (Index n = 0; n < ns_; ++n) {
      kernels::gemm<T>(Trans::yes, Trans::no, rows, out, positions_, T(1),
                       a_rot_.data() + n * positions_ * rows, rows,
                       d_rot_.data() + n * positions_ * out, out, T(0), gradient_.data(), out);
      for (std::size_t k = 0; k < gradient_.size(); ++k) sum_[k] += gradient_[k] * gradient_[k];
    }
  }

  // s = (1/ns) sum over examples (and columns) of the squares, (rows, out), a new tensor.
  Tensor<T> mean() {
    const Index rows = L_.rows(), out = L_.out;
    Tensor<T> s = Tensor<T>::uninitialized(Shape{rows, out});
    const double inv = 1.0 / static_cast<double>(ns_);
    if (positions_ == 1) {
      for (T& v : a_rot_) v *= v;
      kernels::gemm<T>(Trans::yes, Trans::no, rows, out, ns_, static_cast<T>(inv), a_rot_.data(),
                       rows, sum_.data(), out, T(0), s.data(), out);
    } else {
      for (Index k = 0; k < rows * out; ++k) {
        s[k] = static_cast<T>(inv * static_cast<double>(sum_[static_cast<std::size_t>(k)]));
      }
    }
    return s;
  }

 private:
  const KfacLayer& L_;
  const Tensor<T>& u_g_;
  Index ns_, positions_ = 1;
  std::vector<T> a_rot_, d_rot_, sum_, gradient_;
};

// The flat (offset, length) ranges of the parameters in none of `layers`, merged where adjacent.
std::vector<std::pair<Index, Index>> untapped_ranges(const std::vector<nn::ParamInfo>& layout,
                                                     const std::vector<KfacLayer>& layers) {
  std::vector<bool> covered(layout.size(), false);
  for (const KfacLayer& l : layers) {
    covered[l.weight_index] = true;
    if (l.bias) covered[l.weight_index + 1] = true;
  }
  std::vector<std::pair<Index, Index>> ranges;
  for (std::size_t q = 0; q < covered.size(); ++q) {
    if (covered[q]) continue;
    const nn::ParamInfo& info = layout[q];
    if (!ranges.empty() && ranges.back().first + ranges.back().second == info.offset) {
      ranges.back().second += info.shape.numel();
    } else {
      ranges.emplace_back(info.offset, info.shape.numel());
    }
  }
  return ranges;
}

// rows * out of the largest block (the scratch precondition() needs, twice).
Index largest_block(const std::vector<KfacLayer>& layers) {
  Index m = 0;
  for (const KfacLayer& l : layers) m = std::max(m, l.rows() * l.out);
  return m;
}

// Rows of a batch as the data-parallel calls see them before checking it (0 for a scalar).
template <Real T>
Index leading_rows(const Tensor<T>& inputs) {
  return inputs.defined() && inputs.rank() >= 1 ? inputs.dim(0) : 0;
}

// This rank's rows of a data-parallel batch and its statistics rows (statistics_batch spread over
// the ranks, nn::Shard::spread), from one allgather of the row counts. Every rank needs a
// statistics row (its forward pass finds the layers); checked alike on every rank.
std::pair<nn::Shard, nn::Shard> statistics_shards(nn::Communicator& comm, Index rows,
                                                  const KfacOptions& o) {
  const std::vector<std::uint64_t> counts = comm.allgather(static_cast<std::uint64_t>(rows));
  Index total = 0, offset = 0;
  for (std::size_t q = 0; q < counts.size(); ++q) {
    if (static_cast<int>(q) < comm.rank()) offset += static_cast<Index>(counts[q]);
    total += static_cast<Index>(counts[q]);
  }
  Index start = 0;
  for (std::size_t q = 0; q < counts.size(); ++q) {
    const nn::Shard sq{static_cast<Index>(counts[q]), start, total};
    const Index stats = sq.spread(o.statistics_batch).local;
    if (stats < 1) {
      throw ValueError("K-FAC (data-parallel): rank " + std::to_string(q) + " holds " +
                       std::to_string(counts[q]) + " of the " + std::to_string(total) +
                       " rows and " + std::to_string(stats) +
                       " statistics rows (statistics_batch " + std::to_string(o.statistics_batch) +
                       "); every rank needs at least one statistics row");
    }
    start += sq.local;
  }
  const nn::Shard shard{rows, offset, total};
  return {shard, shard.spread(o.statistics_batch)};
}

// Which values of a tensor travel in reduce_tensors: all of them, or, for an exactly symmetric
// (n, n) matrix, the upper triangle with the diagonal (n (n + 1) / 2 values, row by row), the
// lower triangle being mirrored from it after the reduction.
enum class Packing { full, upper_triangle };

template <Real T>
std::size_t packed_size(const Tensor<T>& t, Packing packing) {
  const auto n = static_cast<std::size_t>(packing == Packing::full ? t.size() : t.dim(0));
  return packing == Packing::full ? n : n * (n + 1) / 2;
}

// Copies the values of t that travel to `out`; returns how many.
template <Real T>
std::size_t pack(const Tensor<T>& t, Packing packing, T* out) {
  if (packing == Packing::full) {
    std::copy(t.data(), t.data() + t.size(), out);
    return static_cast<std::size_t>(t.size());
  }
  const Index n = t.dim(0);
  T* o = out;
  for (Index i = 0; i < n; ++i) o = std::copy(t.data() + i * n + i, t.data() + (i + 1) * n, o);
  return static_cast<std::size_t>(o - out);
}

// The inverse of pack: t from its travelled values (the lower triangle mirrored); returns how many
// values it read.
template <Real T>
std::size_t unpack(const T* in, Packing packing, Tensor<T>& t) {
  if (packing == Packing::full) {
    std::copy(in, in + t.size(), t.data());
    return static_cast<std::size_t>(t.size());
  }
  const Index n = t.dim(0);
  T* a = t.data();
  const T* from = in;
  for (Index i = 0; i < n; ++i) {
    for (Index j = i; j < n; ++j, ++from) {
      a[i * n + j] = *from;
      a[j * n + i] = *from;
    }
  }
  return static_cast<std::size_t>(from - in);
}

// t <- sum_r weight_r t_r for every tensor, in rank order (nn::reduce_mean), in one allreduce.
// With Packing::upper_triangle (the Kronecker factors' statistics, exactly symmetric because
// symmetric_gram mirrors its lower triangle) only the upper triangles travel, about half the
// bytes (KAISA's implementation, kfac-pytorch, offers the same as its symmetry_aware option:
// kfac/distributed.py, allreduce(..., symmetric=True)). The reduction is element by element (each
// value the rank-order sum of the ranks' values), so element (j, i) of the full reduction equals
// element (i, j) bitwise: the mirrored result is bitwise the full matrix's reduction.
template <Real T>
void reduce_tensors(nn::Communicator& comm, double weight, const std::vector<Tensor<T>*>& ts,
                    Packing packing = Packing::full) {
  std::size_t total = 0;
  for (const Tensor<T>* t : ts) total += packed_size(*t, packing);
  std::vector<T> buf(total);
  std::size_t at = 0;
  for (const Tensor<T>* t : ts) at += pack(*t, packing, buf.data() + at);
  nn::reduce_mean(comm, weight, std::span<T>(buf));
  at = 0;
  for (Tensor<T>* t : ts) at += unpack(buf.data() + at, packing, *t);
}

template <class V>
const V& checked(const std::vector<V>& v, std::size_t l, const char* accessor) {
  if (l >= v.size()) {
    throw ValueError(std::string("KroneckerFactors::") + accessor + ": layer index " +
                     std::to_string(l) + " out of range (" + std::to_string(v.size()) + " layers" +
                     (v.empty() ? "; no update yet" : "") + ")");
  }
  return v[l];
}

}  // namespace

// ---- KroneckerFactors ---------------------------------------------------------------------------

// The statistics. Invariant (Kfac::step's rollback relies on it): a tensor stored here is never
// written in place afterwards; every update stores new tensors, so a copy of this struct (whose
// tensors share storage with the original) is a snapshot.
template <Real T>
struct KroneckerFactors<T>::Statistics {
  std::vector<KfacLayer> layers;
  std::vector<std::pair<Index, Index>> untapped;  // flat (offset, length) ranges
  std::vector<Tensor<T>> a, g, a_inv, g_inv;
  // KfacOptions::low_rank_inverses: the rows behind A_l while they are few, and A_l's damped
  // inverse in the Woodbury form (then a_inv[l] is undefined) where the last refresh had them.
  std::vector<detail::FactorRows<T>> a_rows;
  std::vector<detail::WoodburyInverse<T>> a_woodbury;
  std::vector<Tensor<T>> u_a, u_g, scalings;  // EKFAC
  std::vector<double> pi, damping_used;
  double untapped_scale = 0;  // 1 / (untapped_curvature + lambda) of the last update_inverses()
  double ekfac_lambda = 0;    // EKFAC: lambda of the last update_inverses()
  std::uint64_t updates = 0;
  std::uint64_t scaling_updates = 0;  // EKFAC: updates since the eigenbases were recomputed
  Index scratch = 0;                  // rows * out of the largest layer
  bool has_inverses = false;
};

template <Real T>
struct KroneckerFactors<T>::State {
  const nn::Model<T>* model;
  const nn::Head<T>* head;
  KfacOptions options;
  Statistics stats;
  Tensor<T> scratch;    // two (rows, out) blocks of the largest layer, for precondition()
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

template <Real T>
std::unique_ptr<typename KroneckerFactors<T>::Statistics> KroneckerFactors<T>::snapshot() const {
  return std::make_unique<Statistics>(s_->stats);
}

template <Real T>
void KroneckerFactors<T>::restore(std::unique_ptr<Statistics> saved) noexcept {
  s_->stats = std::move(*saved);
}

template <Real T>
void KroneckerFactors<T>::reset_statistics() noexcept {
  s_->stats = Statistics{};
}

template <Real T>
double KroneckerFactors<T>::update(const Tensor<T>& inputs, const Tensor<T>& targets,
                                   Tensor<T>* gradient) {
  return update_impl(inputs, targets, gradient, nullptr, nn::Shard{}, nn::Shard{});
}

template <Real T>
double KroneckerFactors<T>::update(const Tensor<T>& inputs, const Tensor<T>& targets,
                                   Tensor<T>* gradient, nn::Communicator& comm) {
  const auto [shard, used] = statistics_shards(comm, leading_rows(inputs), s_->options);
  return update_impl(inputs, targets, gradient, &comm, shard, used);
}

template <Real T>
double KroneckerFactors<T>::update_impl(const Tensor<T>& inputs, const Tensor<T>& targets,
                                        Tensor<T>* gradient, nn::Communicator* comm,
                                        const nn::Shard& shard, const nn::Shard& used,
                                        nn::Model<T>* training_step) {
  check_batch("KroneckerFactors::update", inputs.shape(), targets.shape());
  State& s = *s_;
  const Statistics& old = s.stats;
  const KfacOptions& o = s.options;
  const Index n = inputs.dim(0);
  const Index ns = comm                                                 ? used.local
                   : (o.statistics_batch > 0 && o.statistics_batch < n) ? o.statistics_batch
                                                                        : n;
  const Index p = s.model->num_parameters();
  if (gradient && (!gradient->defined() || gradient->rank() != 1 || gradient->size() != p)) {
    throw ShapeError("KroneckerFactors::update: gradient " +
                     (gradient->defined() ? gradient->shape().str() : std::string("undefined")) +
                     " must be (" + std::to_string(p) + ")");
  }
  // Everything below is computed aside and stored only once nothing can fail any more (strong
  // guarantee): the gradient goes to a buffer of our own, the averages to new tensors.
  Tensor<T> grad;
  std::vector<Tensor<T>> grads;
  if (gradient) {
    grad = Tensor<T>(Shape{p});
    grads = s.model->split(grad);
  }

  // The forward pass recorded once; the taps give each layer's a_l and s_l. The record is local:
  // its tape is released when the update ends, whichever way. (A persistent tape would save
  // nothing: Tape::clear() releases the records and sweep buffers too.) It covers all N rows, so
  // as a training step's pass it moves the running statistics with the whole batch, as
  // nn::loss_and_gradient does; ns only limits which rows the statistics read.
  detail::TappedRecord<T> recorded = detail::record_tapped("K-FAC", *s.model, inputs,
                                                           detail::TapPolicy::refuse, training_step);
  Tape<T>& tape = recorded.record.tape();
  const std::vector<Var<T>>& params = recorded.record.parameter_variables();
  const std::span<const Var<T>> all(params);
  std::vector<detail::TappedLayer<T>>& tapped = recorded.layers;
  const Var<T>& z = recorded.record.logits_variable();
  std::vector<KfacLayer> plan;
  for (const auto& t : tapped) plan.push_back(t.layer);
  if (old.layers.empty() && plan.empty()) {
    throw ValueError("K-FAC: the forward pass of " + s.model->module().describe() +
                     " tapped no Linear or Conv2d layer (nn::LayerTap); K-FAC needs at least one");
  }
  if (!old.layers.empty()) {
    bool same = plan.size() == old.layers.size();
    for (std::size_t l = 0; same && l < plan.size(); ++l) same = same_layer(plan[l], old.layers[l]);
    if (!same) {
      throw ValueError("K-FAC: this forward pass tapped " + std::to_string(plan.size()) +
                       " layers that differ from the " + std::to_string(old.layers.size()) +
                       " layers of the first update (the model's structure must not change)");
    }
  }
  double loss = static_cast<double>(s.head->loss(z.value(), targets).item());
  // The union's mean loss (reduced before it is checked, so every rank decides alike).
  if (comm) nn::reduce_mean(*comm, shard.weight(), std::span<double>(&loss, 1));
  if (!std::isfinite(loss)) {
    throw ValueError("K-FAC: the loss " + std::to_string(loss) +
                     " is not finite; the Kronecker factors were not updated");
  }
  Statistics next = old;      // shares the old tensors; only new ones are stored into it
  if (next.layers.empty()) {  // the first update defines the blocks
    next.untapped = untapped_ranges(s.model->layout(), plan);
    next.scratch = largest_block(plan);
    next.layers = std::move(plan);
    const std::size_t count = next.layers.size();
    next.a.resize(count);
    next.g.resize(count);
    next.a_inv.resize(count);
    next.g_inv.resize(count);
    next.a_rows.resize(count);
    next.a_woodbury.resize(count);
    next.pi.assign(count, 1.0);
    next.damping_used.assign(count, 0.0);
  }
  const std::vector<KfacLayer>& layers = next.layers;
  const std::size_t num_layers = layers.size();
  std::vector<Tensor<T>> acts;
  std::vector<Var<T>> outs;
  for (auto& t : tapped) {
    acts.push_back(std::move(t.input));
    outs.push_back(std::move(t.output));
  }
  tapped.clear();

  const bool ekfac = o.approximation == KfacApproximation::ekfac;
  // EKFAC recomputes its eigenbases at the 1st, (1 + every)-th, ... update (see the header).
  const bool new_basis =
      ekfac && old.updates % static_cast<std::uint64_t>(o.inverse_update_every) == 0;
  std::vector<std::unique_ptr<ScalingAccumulator<T>>> scaling;  // in the current basis
  if (ekfac && !new_basis) {
    for (std::size_t l = 0; l < num_layers; ++l) {
      scaling.push_back(std::make_unique<ScalingAccumulator<T>>(layers[l], acts[l], outs[l].shape(),
                                                                ns, old.u_a[l], old.u_g[l]));
    }
  }

  // The batch's statistics (sec. 5 of M&G 2015 for the averages that follow): G first, from the
  // errors of one or C sweeps; delta = delta_scale * (the swept cotangent at s_l).
  std::vector<Tensor<T>> deltas(num_layers), g_batch(num_layers);
  for (std::size_t l = 0; l < num_layers; ++l) {
    deltas[l] = Tensor<T>::uninitialized(outs[l].shape());
    g_batch[l] = Tensor<T>(Shape{layers[l].out, layers[l].out});
  }
  const std::span<const Var<T>> zs(&z, 1);
  const double inv_ns = 1.0 / static_cast<double>(ns);
  const KfacConv approx = o.conv;
  // Logit cotangent of the mean loss, (mu(z) - T(y)) / N: the gradient's sweep.
  Tensor<T> gz = Tensor<T>::uninitialized(z.shape());
  s.head->gradient(z.value(), targets, gz);
  // The logit-space cotangents whose sweeps give the errors (the empirical Fisher's is gz itself).
  std::vector<Tensor<T>> columns;
  double delta_scale = 1;
  switch (o.fisher) {
    case KfacFisher::empirical:
      columns.push_back(gz);
      delta_scale = static_cast<double>(n);  // the data labels' errors N dl/ds_l
      break;
    case KfacFisher::sampled: {
      // True Fisher: y ~ p_theta(.|x), error mu(z) - T(y) per example (no 1/N). The sign does not
      // change G; it is kept so that delta is the error a data label would give.
      // Keyed by the global index of the example in the statistics rows (data-parallel: this
      // rank's first row is example used.offset), so the labels do not depend on the split.
      const Tensor<T> y =
          s.head->sample(z.value(), o.seed, old.updates, comm ? used.offset : Index{0});
      Tensor<T> e = Tensor<T>::uninitialized(z.shape());
      s.head->residual(z.value(), y, e);
      columns.push_back(std::move(e));
      break;
    }
    case KfacFisher::kflr:
      // Botev et al. 2017: G = 1/N sum_i sum_c (J_i^T b_{i,c})(J_i^T b_{i,c})^T, B_i B_i^T =
      // H_L(z_i).
      columns = detail::logit_hessian_factor(*s.head, z.value());
      break;
  }
  auto sweep = [&](std::size_t c) {
    const std::span<const Tensor<T>> cot(&columns[c], 1);
    if (c == 0 && o.fisher == KfacFisher::empirical && gradient) {
      // One sweep for the gradient and the errors of the data labels.
      std::vector<Var<T>> ins = params;
      std::vector<Tensor<T>> res = grads;
      ins.insert(ins.end(), outs.begin(), outs.end());
      res.insert(res.end(), deltas.begin(), deltas.end());  // shares storage with deltas
      tape.vjp_into(zs, cot, ins, res);
    } else {
      tape.vjp_into(zs, cot, outs, deltas);
    }
  };
  if (gradient && o.fisher != KfacFisher::empirical) {
    tape.vjp_into(zs, std::span<const Tensor<T>>(&gz, 1), all, grads);
  }
  for (std::size_t c = 0; c < columns.size(); ++c) {
    sweep(c);
    for (std::size_t l = 0; l < num_layers; ++l) {
      accumulate_g(layers[l], approx, deltas[l], ns, delta_scale * delta_scale * inv_ns,
                   c == 0 ? 0.0 : 1.0, g_batch[l], s.rows);
      if (!scaling.empty()) scaling[l]->add(deltas[l], delta_scale);
    }
  }
  std::vector<Tensor<T>> a_batch(num_layers);
  for (std::size_t l = 0; l < num_layers; ++l) {
    // Uninitialized: the Gram product's beta = 0 writes every entry without reading it.
    a_batch[l] = Tensor<T>::uninitialized(Shape{layers[l].rows(), layers[l].rows()});
    accumulate_a(layers[l], approx, acts[l], outs[l].shape(), ns, 1.0, 0.0, a_batch[l], s.rows);
  }
  if (comm) {
    // The union's means: the gradient weighted by n_r / N, the statistics by ns_r / Ns, summed in
    // rank order (nn::reduce_mean), so every rank holds bitwise the same values.
    if (gradient) {
      nn::reduce_mean(*comm, shard.weight(),
                      std::span<T>(grad.data(), static_cast<std::size_t>(grad.size())));
    }
    std::vector<Tensor<T>*> batch;
    for (std::size_t l = 0; l < num_layers; ++l) {
      batch.push_back(&a_batch[l]);
      batch.push_back(&g_batch[l]);
    }
    reduce_tensors(*comm, used.weight(), batch, Packing::upper_triangle);
  }
  // Refuse statistics that are not finite before folding anything in (one bad batch would
  // otherwise poison the averages for good).
  for (std::size_t l = 0; l < num_layers; ++l) {
    for (const auto& [f, name] : {std::pair{&a_batch[l], "A"}, std::pair{&g_batch[l], "G"}}) {
      const Index bad = first_non_finite(*f);
      if (bad >= 0) {
        const Index dim = f->dim(0);
        throw ValueError(
            "K-FAC: layer " + layers[l].name + ": this batch's contribution to factor " + name +
            " is not finite (entry (" + std::to_string(bad / dim) + ", " +
            std::to_string(bad % dim) + ") = " + std::to_string(static_cast<double>((*f)[bad])) +
            "); the statistics were left unchanged");
      }
    }
  }
  // Moving averages (M&G 2015, sec. 5): weight eps = min(1 - 1/k, decay) on the old value.
  const double k = static_cast<double>(old.updates + 1);
  const double eps = std::min(1.0 - 1.0 / k, o.decay), w = 1.0 - eps;
  for (std::size_t l = 0; l < num_layers; ++l) {
    bool a_overflows = false, g_overflows = false;  // finite terms whose average overflows T
    next.a[l] = moving_average(old.updates > 0 ? old.a[l] : Tensor<T>(), eps, std::move(a_batch[l]),
                               w, &a_overflows);
    next.g[l] = moving_average(old.updates > 0 ? old.g[l] : Tensor<T>(), eps, std::move(g_batch[l]),
                               w, &g_overflows);
    if (a_overflows || g_overflows) {
      throw ValueError("K-FAC: layer " + layers[l].name + ": the moving average of factor " +
                       (a_overflows ? "A" : "G") + " overflows; the statistics were left unchanged");
    }
    // The rows behind A_l, kept while there are at most rows / 2 of them (low_rank_inverses; the
    // data-parallel statistics travel as reduced matrices, so there they are never kept).
    const KfacLayer& L = layers[l];
    const bool conv = L.kind == KfacLayerKind::conv2d;
    const Index oh = conv ? outs[l].shape()[1] : 1, ow = conv ? outs[l].shape()[2] : 1;
    const Index count = ns * ((conv && approx == KfacConv::expand) ? oh * ow : 1);
    const detail::FactorRows<T> kept = next.a_rows[l];  // old's (none at the first update)
    const Index had = kept.defined() ? kept.rows.dim(0) : 0;
    if (o.low_rank_inverses && !ekfac && !comm && (old.updates == 0 || kept.defined()) &&
        2 * (had + count) <= L.rows()) {
      augmented_rows(L, approx, acts[l], oh, ow, 0, ns, s.rows);
      next.a_rows[l] = detail::with_rows_appended(kept, s.rows.data(), count, L.rows());
    } else {
      next.a_rows[l] = detail::FactorRows<T>{};
    }
  }
  if (ekfac) {
    std::vector<Tensor<T>> s_batch(num_layers);
    if (new_basis) {
      // George et al. 2018, Algorithm 1: the eigenbases of the current factors, then the scalings
      // restarted from this batch's per-example gradients in them.
      eigenbases(layers, next.a, next.g, comm, next.u_a, next.u_g);
      for (std::size_t l = 0; l < num_layers; ++l) {
        scaling.push_back(std::make_unique<ScalingAccumulator<T>>(
            layers[l], acts[l], outs[l].shape(), ns, next.u_a[l], next.u_g[l]));
      }
      // One column (sampled, empirical): its errors are still in `deltas`; kflr sweeps again.
      for (std::size_t c = 0; c < columns.size(); ++c) {
        if (columns.size() > 1) sweep(c);
        for (std::size_t l = 0; l < num_layers; ++l) scaling[l]->add(deltas[l], delta_scale);
      }
    }
    const std::uint64_t ks = new_basis ? 1 : old.scaling_updates + 1;
    const double eps_s = std::min(1.0 - 1.0 / static_cast<double>(ks), o.decay);
    next.scalings.resize(num_layers);
    for (std::size_t l = 0; l < num_layers; ++l) s_batch[l] = scaling[l]->mean();
    if (comm) {
      std::vector<Tensor<T>*> batch;
      for (auto& t : s_batch) batch.push_back(&t);
      reduce_tensors(*comm, used.weight(), batch);
    }
    for (std::size_t l = 0; l < num_layers; ++l) {
      Tensor<T> batch = std::move(s_batch[l]);
      const Index bad = first_non_finite(batch);
      if (bad >= 0) {
        throw ValueError("K-FAC: layer " + layers[l].name +
                         ": this batch's EKFAC scalings are not finite (entry " +
                         std::to_string(bad) + "); the statistics were left unchanged");
      }
      next.scalings[l] = moving_average(new_basis ? Tensor<T>() : old.scalings[l], eps_s,
                                        std::move(batch), 1.0 - eps_s);
    }
    next.scaling_updates = ks;
  }
  ++next.updates;
  // Commit: nothing below can fail.
  if (s.scratch.size() < 2 * next.scratch) {
    s.scratch = Tensor<T>::uninitialized(Shape{2 * next.scratch});
  }
  if (gradient) std::copy(grad.data(), grad.data() + p, gradient->data());
  s.stats = std::move(next);
  return loss;
}

namespace {

// One layer's damped inverses (M&G 2015, sec. 6.3), in T, with the pi and damping used.
template <Real T>
struct LayerInverse {
  Tensor<T> a_inv, g_inv;
  detail::WoodburyInverse<T> a_woodbury;  // instead of a_inv where the rows behind A were given
  double pi = 1, used = 0;
};

// Factors (A + pi gamma I) and (G + gamma / pi I) of one layer; retries with 10x the dampings.
// With a_rows (the rows behind A, KfacOptions::low_rank_inverses), A's inverse is built in the
// Woodbury form from them (the same matrix up to rounding; pi still comes from A's trace).
// ValueError naming the layer for a non-finite factor or a failure after every retry.
template <Real T>
LayerInverse<T> invert_layer(const KfacLayer& layer, const Tensor<T>& a_t, const Tensor<T>& g_t,
                             double lambda, const detail::FactorRows<T>* a_rows, double decay) {
  const double gamma = std::sqrt(lambda);
  const double ta = mean_diagonal(a_t), tg = mean_diagonal(g_t);
  for (const auto& [f, name] : {std::pair{&a_t, "A"}, std::pair{&g_t, "G"}}) {
    for (Index i = 0; i < f->size(); ++i) {
      if (!std::isfinite((*f)[i])) {
        throw ValueError("K-FAC: layer " + layer.name + ": factor " + name +
                         " has a non-finite entry (" + std::to_string(static_cast<double>((*f)[i])) + ")");
      }
    }
  }
  // sec. 6.3: pi balances the two dampings by the factors' mean eigenvalues.
  LayerInverse<T> out;
  out.pi = (ta > 0 && tg > 0) ? std::sqrt(ta / tg) : 1.0;
  bool ok = false;
  double boost = 1;
  Tensor<double> ai, gi;
  for (int attempt = 0; attempt <= kDampingRetries && !ok; ++attempt, boost *= 10) {
    // Double copies made per attempt from the factors themselves (a retry needs them undamped):
    // no third copy of the largest factor (3137 x 3137 in train_cnn) is kept alongside.
    const double delta_a = out.pi * gamma * boost;
    if (a_rows) {
      std::optional<detail::WoodburyInverse<T>> w = detail::woodbury_inverse(*a_rows, decay, delta_a);
      ok = w.has_value();
      if (ok) out.a_woodbury = std::move(*w);
    } else {
      ai = to_double(a_t);
      ok = damped_inverse(ai, delta_a);
    }
    gi = to_double(g_t);
    ok = ok && damped_inverse(gi, gamma / out.pi * boost);
    if (ok) out.used = lambda * boost * boost;
  }
  if (!ok) {
    throw ValueError("K-FAC: layer " + layer.name + ": the damped Kronecker factors (A " +
                     a_t.shape().str() + ", G " + g_t.shape().str() +
                     ") are not positive definite even with damping lambda = " +
                     std::to_string(lambda * boost * boost / 100));
  }
  if (!a_rows) out.a_inv = from_double<T>(ai);
  out.g_inv = from_double<T>(gi);
  return out;
}

}  // namespace

template <Real T>
void KroneckerFactors<T>::update_inverses(double lambda) {
  update_inverses_impl(lambda, nullptr);
}

template <Real T>
void KroneckerFactors<T>::update_inverses(double lambda, nn::Communicator& comm) {
  update_inverses_impl(lambda, &comm);
}

template <Real T>
void KroneckerFactors<T>::update_inverses_impl(double lambda, nn::Communicator* comm) {
  State& s = *s_;
  const Statistics& st = s.stats;
  if (!(lambda > 0) || !std::isfinite(lambda)) {
    throw ValueError("KroneckerFactors::update_inverses: damping lambda = " +
                     std::to_string(lambda) + " must be positive and finite");
  }
  if (st.updates == 0) {
    throw ValueError("KroneckerFactors::update_inverses: no statistics yet (call update() first)");
  }
  const std::size_t num_layers = st.layers.size();
  if (s.options.approximation == KfacApproximation::ekfac) {
    // (s + lambda)^{-1} in the eigenbasis: s >= 0, so nothing can fail; s is read at each use.
    s.stats.ekfac_lambda = lambda;
    s.stats.pi.assign(num_layers, 1.0);
    s.stats.damping_used.assign(num_layers, lambda);
    s.stats.untapped_scale = 1.0 / (s.options.untapped_curvature + lambda);
    s.stats.has_inverses = true;
    return;
  }
  std::vector<Tensor<T>> a_inv(num_layers), g_inv(num_layers);
  std::vector<detail::WoodburyInverse<T>> woodbury(num_layers);
  std::vector<double> pis(num_layers), used(num_layers);
  const auto keep = [&](std::size_t l, LayerInverse<T>&& inv) {
    a_inv[l] = std::move(inv.a_inv);
    g_inv[l] = std::move(inv.g_inv);
    woodbury[l] = std::move(inv.a_woodbury);
    pis[l] = inv.pi;
    used[l] = inv.used;
  };
  if (!comm) {
    for (std::size_t l = 0; l < num_layers; ++l) {
      const detail::FactorRows<T>& rows = st.a_rows[l];
      keep(l, invert_layer(st.layers[l], st.a[l], st.g[l], lambda,
                           rows.defined() ? &rows : nullptr, s.options.decay));
    }
  } else {
    // KAISA-style (Pauloski et al. 2021): layer l is factored on rank l mod k, then broadcast.
    const auto k = static_cast<std::size_t>(comm->size());
    const auto me = static_cast<std::size_t>(comm->rank());
    std::uint64_t failed = 0;  // 1 + the first layer this rank failed to factor
    std::string why;
    for (std::size_t l = me; l < num_layers && failed == 0; l += k) {
      try {
        // Dense: the broadcast below carries the (rows, rows) inverse.
        keep(l, invert_layer(st.layers[l], st.a[l], st.g[l], lambda,
                             static_cast<const detail::FactorRows<T>*>(nullptr), s.options.decay));
      } catch (const ValueError& e) {
        failed = l + 1;
        why = e.what();
      }
    }
    // Every rank learns of any failure before a broadcast could wait for it.
    const std::vector<std::uint64_t> status = comm->allgather(failed);
    for (std::size_t r = 0; r < status.size(); ++r) {
      if (status[r] == 0) continue;
      throw ValueError(r == me ? why
                               : "K-FAC (data-parallel): the inverse refresh of layer " +
                                     st.layers[status[r] - 1].name + " failed on rank " +
                                     std::to_string(r) + " (its error names the cause)");
    }
    for (std::size_t l = 0; l < num_layers; ++l) {
      const KfacLayer& L = st.layers[l];
      const int root = static_cast<int>(l % k);
      const Index na = L.rows() * L.rows(), ng = L.out * L.out;
      std::vector<T> buf(static_cast<std::size_t>(na + ng));
      std::vector<double> scalars{pis[l], used[l]};
      if (l % k == me) {
        std::copy(a_inv[l].data(), a_inv[l].data() + na, buf.data());
        std::copy(g_inv[l].data(), g_inv[l].data() + ng, buf.data() + na);
      }
      comm->broadcast(std::span<T>(buf), root);
      comm->broadcast(std::span<double>(scalars), root);
      if (l % k != me) {
        a_inv[l] = Tensor<T>::uninitialized(Shape{L.rows(), L.rows()});
        g_inv[l] = Tensor<T>::uninitialized(Shape{L.out, L.out});
        std::copy(buf.data(), buf.data() + na, a_inv[l].data());
        std::copy(buf.data() + na, buf.data() + na + ng, g_inv[l].data());
        pis[l] = scalars[0];
        used[l] = scalars[1];
      }
    }
  }
  // Commit (strong guarantee: a failure above left the old inverses).
  Statistics& out = s.stats;
  out.a_inv.swap(a_inv);
  out.g_inv.swap(g_inv);
  out.a_woodbury.swap(woodbury);
  out.pi.swap(pis);
  out.damping_used.swap(used);
  out.untapped_scale = 1.0 / (s.options.untapped_curvature + lambda);
  out.has_inverses = true;
}

template <Real T>
void KroneckerFactors<T>::precondition(const Tensor<T>& g, Tensor<T>& out) {
  State& s = *s_;
  const Statistics& st = s.stats;
  const Index p = s.model->num_parameters();
  if (g.rank() != 1 || out.rank() != 1 || g.size() != p || out.size() != p) {
    throw ShapeError("KroneckerFactors::precondition: g " + g.shape().str() + " and out " +
                     out.shape().str() + " must both be (" + std::to_string(p) + ")");
  }
  if (!st.has_inverses) {
    throw ValueError("KroneckerFactors::precondition: no inverses yet (call update_inverses())");
  }
  const bool ekfac = s.options.approximation == KfacApproximation::ekfac;
  if (s.scratch.size() < 2 * st.scratch) {  // statistics restored by Kfac::load_state
    s.scratch = Tensor<T>::uninitialized(Shape{2 * st.scratch});
  }
  T* tmp = s.scratch.data();
  T* tmp2 = tmp + st.scratch;
  for (std::size_t l = 0; l < st.layers.size(); ++l) {
    const KfacLayer& L = st.layers[l];
    const Index rows = L.rows(), cols = L.out;
    if (ekfac) {
      // U_A ((U_A^T X U_G) / (s + lambda)) U_G^T (George et al. 2018, eq. 11 with damping).
      const T* ua = st.u_a[l].data();
      const T* ug = st.u_g[l].data();
      const T* sc = st.scalings[l].data();
      kernels::gemm<T>(Trans::yes, Trans::no, rows, cols, rows, T(1), ua, rows, g.data() + L.offset,
                       cols, T(0), tmp, cols);
      kernels::gemm<T>(Trans::no, Trans::no, rows, cols, cols, T(1), tmp, cols, ug, cols, T(0),
                       tmp2, cols);
      for (Index i = 0; i < rows * cols; ++i) {
        tmp2[i] = static_cast<T>(static_cast<double>(tmp2[i]) /
                                 (static_cast<double>(sc[i]) + st.ekfac_lambda));
      }
      kernels::gemm<T>(Trans::no, Trans::yes, rows, cols, cols, T(1), tmp2, cols, ug, cols, T(0),
                       tmp, cols);
      kernels::gemm<T>(Trans::no, Trans::no, rows, cols, rows, T(1), ua, rows, tmp, cols, T(0),
                       out.data() + L.offset, cols);
      continue;
    }
    // U = A^{-1} X G^{-1} for the row-major block X = [grad W; grad b]: (A (x) G)^{-1} vec(X).
    // A^{-1} in the Woodbury form needs r cols <= rows cols / 2 values of scratch (tmp2).
    if (st.a_woodbury[l].defined()) {
      detail::apply_woodbury_inverse(st.a_woodbury[l], g.data() + L.offset, cols, tmp, tmp2);
    } else {
      kernels::gemm<T>(Trans::no, Trans::no, rows, cols, rows, T(1), st.a_inv[l].data(), rows,
                       g.data() + L.offset, cols, T(0), tmp, cols);
    }
    kernels::gemm<T>(Trans::no, Trans::no, rows, cols, cols, T(1), tmp, cols, st.g_inv[l].data(),
                     cols, T(0), out.data() + L.offset, cols);
  }
  // Parameters in no tapped layer: the block c I, damped: (c + lambda)^{-1} g.
  const T scale = static_cast<T>(st.untapped_scale);
  for (const auto& [offset, length] : st.untapped) {
    const T* src = g.data() + offset;
    T* dst = out.data() + offset;
    for (Index i = 0; i < length; ++i) dst[i] = scale * src[i];
  }
}

template <Real T>
const std::vector<KfacLayer>& KroneckerFactors<T>::layers() const {
  return s_->stats.layers;
}
template <Real T>
const std::vector<std::pair<Index, Index>>& KroneckerFactors<T>::untapped() const {
  return s_->stats.untapped;
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::factor_a(std::size_t l) const {
  return checked(s_->stats.a, l, "factor_a");
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::factor_g(std::size_t l) const {
  return checked(s_->stats.g, l, "factor_g");
}
template <Real T>
Tensor<T> KroneckerFactors<T>::inverse_a(std::size_t l) const {
  const Tensor<T>& dense = checked(s_->stats.a_inv, l, "inverse_a");
  const detail::WoodburyInverse<T>& w = s_->stats.a_woodbury[l];
  return w.defined() ? detail::dense_woodbury_inverse(w) : dense;
}
template <Real T>
Index KroneckerFactors<T>::inverse_a_rank(std::size_t l) const {
  checked(s_->stats.a_inv, l, "inverse_a_rank");
  return s_->stats.a_woodbury[l].rank();
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::inverse_g(std::size_t l) const {
  return checked(s_->stats.g_inv, l, "inverse_g");
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::eigenvectors_a(std::size_t l) const {
  static const Tensor<T> undefined;
  checked(s_->stats.layers, l, "eigenvectors_a");
  return s_->stats.u_a.empty() ? undefined : s_->stats.u_a[l];
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::eigenvectors_g(std::size_t l) const {
  static const Tensor<T> undefined;
  checked(s_->stats.layers, l, "eigenvectors_g");
  return s_->stats.u_g.empty() ? undefined : s_->stats.u_g[l];
}
template <Real T>
const Tensor<T>& KroneckerFactors<T>::scalings(std::size_t l) const {
  static const Tensor<T> undefined;
  checked(s_->stats.layers, l, "scalings");
  return s_->stats.scalings.empty() ? undefined : s_->stats.scalings[l];
}
template <Real T>
double KroneckerFactors<T>::pi(std::size_t l) const {
  return checked(s_->stats.pi, l, "pi");
}
template <Real T>
double KroneckerFactors<T>::damping_used(std::size_t l) const {
  return checked(s_->stats.damping_used, l, "damping_used");
}
template <Real T>
std::uint64_t KroneckerFactors<T>::updates() const {
  return s_->stats.updates;
}
template <Real T>
bool KroneckerFactors<T>::has_inverses() const {
  return s_->stats.has_inverses;
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
  for (const auto& range : s.stats.untapped) untapped += range.second;
  const char* method = s.options.approximation == KfacApproximation::ekfac ? "EKFAC(" : "K-FAC(";
  return std::string(method) + kind + ", " + std::to_string(s.stats.layers.size()) +
         " layers, P=" + std::to_string(num_parameters()) +
         (untapped > 0 ? ", " + std::to_string(untapped) + " untapped" : std::string()) + ")";
}

// ---- Kfac ---------------------------------------------------------------------------------------

template <Real T>
Kfac<T>::Kfac(nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options)
    : model_(&model), head_(&head), factors_(model, head, options) {
  init_damping();
}

namespace {
// Options agreed by every rank before any of them validates them: equal options give equal
// outcomes, so a bad option throws on every rank and a mismatch is reported instead of a hang.
const KfacOptions& agreed(nn::Communicator& comm, const KfacOptions& o) {
  comm.agree("Kfac options", options_fingerprint(o));
  return o;
}
}  // namespace

template <Real T>
Kfac<T>::Kfac(nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options,
              nn::Communicator& comm)
    : model_(&model), head_(&head), comm_(&comm), factors_(model, head, agreed(comm, options)) {
  init_damping();
  nn::synchronize_model(comm, model);
}

template <Real T>
void Kfac<T>::init_damping() {
  // lambda starts at `damping`. The adaptive mode moves it every T1 steps by omega = (19/20)^T1
  // (M&G 2015, sec. 6.5): rho > 3/4 multiplies it by omega, rho < 1/4 (or not finite) divides it,
  // within [min_damping, max_damping]; the default mode never moves it.
  const KfacOptions& o = factors_.options();
  const double omega = std::pow(19.0 / 20.0, o.damping_adaptation_every);
  state_.lm = LevenbergMarquardt{.lambda = o.damping,
                                 .decrease = omega,
                                 .increase = 1.0 / omega,
                                 .low = 0.25,
                                 .high = 0.75,
                                 .min_lambda = o.min_damping,
                                 .max_lambda = o.max_damping};
}

std::string KfacReport::str() const {
  std::string line = StepReport::str();
  if (adaptive) {
    char buf[96];
    if (adaptive->rho) {
      std::snprintf(buf, sizeof buf, " | rho %.2f mu %.3g", *adaptive->rho, adaptive->momentum);
    } else {
      std::snprintf(buf, sizeof buf, " | mu %.3g", adaptive->momentum);
    }
    line += buf;
  }
  return line;
}

namespace {

// The first n rows of a batch (all of them for n <= 0 or n >= N), as views keeping the shape of
// one example.
template <Real T>
std::pair<Tensor<T>, Tensor<T>> first_rows(const Tensor<T>& x, const Tensor<T>& y, Index n) {
  const Index total = x.dim(0);
  if (n <= 0 || n >= total) return {x, y};
  std::vector<Index> dims(static_cast<std::size_t>(x.rank()));
  for (int i = 0; i < x.rank(); ++i) dims[static_cast<std::size_t>(i)] = x.dim(i);
  dims[0] = n;
  return {x.view(0, Shape(std::span<const Index>(dims))), y.view(0, Shape{n, y.dim(1)})};
}

// The minimizer (alpha, mu) of the quadratic model over delta = alpha Delta + mu delta_0
// (M&G 2015, sec. 7): q(alpha, mu) = b^T x + 1/2 x^T A x with x = (alpha, mu),
// A = [a11, a12; a12, a22] (A_ij = u_i^T C u_j, C = F + (lambda + wd) I), b = (g^T Delta,
// g^T delta_0). Without delta_0 (has_previous false) or for a singular A, mu = 0 and alpha =
// -b1 / a11 (0 if a11 <= 0, i.e. Delta = 0).
struct QuadraticStep {
  double alpha = 0, mu = 0;
};

QuadraticStep minimize_quadratic(double a11, double a12, double a22, double b1, double b2,
                                 bool has_previous) {
  QuadraticStep q;
  if (has_previous && a11 > 0 && a22 > 0) {
    const double det = a11 * a22 - a12 * a12;
    // C is positive definite (lambda > 0), so det > 0 unless Delta and delta_0 are (nearly)
    // parallel; then the two-dimensional problem is degenerate and the one-dimensional one is
    // solved instead.
    if (det > 1e-12 * a11 * a22) {
      q.alpha = (a12 * b2 - a22 * b1) / det;
      q.mu = (a12 * b1 - a11 * b2) / det;
      return q;
    }
  }
  if (a11 > 0) q.alpha = -b1 / a11;
  return q;
}

}  // namespace

// The stages of detail::damped_step_unguarded for a K-FAC step (see the Kfac class comment). One
// object per step: it keeps the gradient of the objective from the start stage.
template <Real T>
class Kfac<T>::StepSource {
 public:
  using Report = KfacReport;

  StepSource(Kfac& kfac, const detail::StepContext<T>& c, const nn::Shard& used)
      : k_(kfac), o_(kfac.factors_.options()), c_(c), used_(used) {}

  // A training step, as nn::loss_and_gradient: in train mode, new dropout masks (the pass after
  // the step sees the same ones). This process's rows are examples [offset, offset + n) of the
  // step's batch (one process: offset 0), which keys their dropout masks. Then the loss and the
  // gradient from the step's one recorded pass, which also moves the running statistics (batch
  // norm) with the whole batch: with the factor statistics at steps 0, every, 2 every, ... and
  // whenever there are none (after reset_statistics()), from the loss and gradient alone
  // otherwise. The inverses are refreshed every inverse_update_every steps with lambda + wd, and
  // g becomes the gradient of the objective (weight decay included). A non-finite loss throws.
  bool start(StepState& state, Report& r) {
    nn::Model<T>& model = c_.model;
    const nn::Shard& shard = c_.ranks.shard;
    model.set_first_example(shard.offset);  // one process: 0
    if (model.mode() == nn::Mode::train) model.set_step(model.step() + 1);
    g_ = model.zeros_like_parameters();
    const bool statistics =
        state.steps % static_cast<std::uint64_t>(o_.statistics_update_every) == 0 ||
        k_.factors_.updates() == 0;
    r.loss = statistics ? k_.factors_.update_impl(c_.inputs, c_.targets, &g_, k_.comm_, shard, used_, &model)
                        : loss_and_gradient();
    r.gradient_norm = norm(g_);
    if (state.steps % static_cast<std::uint64_t>(o_.inverse_update_every) == 0 ||
        !k_.factors_.has_inverses()) {
      k_.factors_.update_inverses_impl(r.lambda + o_.weight_decay, k_.comm_);
    }
    if (o_.weight_decay > 0) axpy(o_.weight_decay, model.parameters(), g_);
    return true;
  }

  // d = F_kfac^{-1} g with the current damped inverses.
  Tensor<T> direction(StepState&, Report&) {
    Tensor<T> d = Tensor<T>::uninitialized(g_.shape());
    k_.factors_.precondition(g_, d);
    return d;
  }

  detail::Proposal<T> length(Tensor<T> d, StepState& state, Report& r) {
    return o_.adaptive ? quadratic_model(std::move(d), state, r) : clipped_momentum(std::move(d), state, r);
  }

  // Undone (a loss after the step that is not finite): forget the momentum and delta_0 that led
  // there (mu = 0 next).
  void forget(StepState& state) {
    if (state.velocity.defined()) state.velocity = c_.model.zeros_like_parameters();
    state.previous = Tensor<T>();
  }

  void report_rho(Report& r, double rho) { r.adaptive->rho = rho; }

 private:
  // The mean loss and its gradient on a step without statistics: the pass update_impl records,
  // without the taps, on the model's own parameters (the record ends here). Data-parallel, the
  // union's mean as update_impl reduces it.
  double loss_and_gradient() {
    double loss = 0;
    {
      nn::RecordedModel<T> record(c_.model, c_.inputs,
                                  nn::RecordOptions<T>{.head = &c_.head,
                                                       .targets = c_.targets,
                                                       .op = "Kfac::step",
                                                       .update_state = &c_.model,
                                                       .borrow_parameters = true});
      record.gradient(g_);
      loss = static_cast<double>(record.loss());
    }
    if (k_.comm_) {
      const double w = c_.ranks.shard.weight();
      nn::reduce_mean(*k_.comm_, w, std::span<T>(g_.data(), static_cast<std::size_t>(g_.size())));
      nn::reduce_mean(*k_.comm_, w, std::span<double>(&loss, 1));
    }
    if (!std::isfinite(loss)) {
      throw ValueError("K-FAC: the loss " + std::to_string(loss) + " is not finite; the step was not taken");
    }
    return loss;
  }

  // The default mode: d scaled by nu (KL clip), v = momentum v + d, theta -= s lr v.
  detail::Proposal<T> clipped_momentum(Tensor<T> d, StepState& state, Report& r) {
    // Ba et al. 2017: lr^2 g^T F^{-1} g is twice the KL divergence the step predicts.
    const double lr = o_.learning_rate;
    const double gd = dot(g_, d);
    double nu = 1;
    if (o_.kl_clip > 0 && gd > 0) nu = std::min(1.0, std::sqrt(o_.kl_clip / (lr * lr * gd)));
    if (nu != 1) scal(nu, d);
    Tensor<T> step = d;
    if (o_.momentum > 0) {
      // v = d + momentum v, into a new buffer: the optimizer's own is replaced only on success.
      Tensor<T> v = state.velocity.defined() ? state.velocity.clone() : c_.model.zeros_like_parameters();
      xpby(d, o_.momentum, v);
      state.velocity = v;
      step = std::move(v);
    }
    r.step_scale = nu;
    r.step_norm = k_.multiplier_ * lr * norm(step);
    detail::Proposal<T> p;
    p.update = std::move(step);
    p.scale = -k_.multiplier_ * lr;  // theta0 - s lr v
    p.measure_loss_after = o_.evaluate_loss_after;
    return p;
  }

  // The adaptive mode (M&G 2015, secs. 6.5 and 7): the direction Delta = -F_kfac^{-1} g and the
  // previous update delta_0 combined as delta = s (alpha Delta + mu delta_0), (alpha, mu) the
  // minimizer of the exact quadratic model; rho and the LM update of lambda every T1 steps.
  detail::Proposal<T> quadratic_model(Tensor<T> direction, StepState& state, Report& r) {
    const double kappa = r.lambda + o_.weight_decay;  // C = F + kappa I
    scal(-1.0, direction);  // no KL clip: alpha sets the length
    // The exact GGN at theta on the statistics rows; data-parallel, its products are reduced over
    // the ranks in a fixed order, so every rank gets bitwise the same alpha, mu, rho and lambda.
    std::unique_ptr<LinearOperator<T>> curvature;
    if (k_.comm_) {
      const auto [x, y] = first_rows(c_.inputs, c_.targets, used_.local);
      curvature = make_distributed_curvature(Curvature::ggn, c_.model, c_.head, x, y, *k_.comm_, used_);
    } else {
      const auto [x, y] = first_rows(c_.inputs, c_.targets, o_.statistics_batch);
      curvature = make_curvature(Curvature::ggn, c_.model, c_.head, x, y);
    }
    // C u = F u + kappa u, and the entries u^T C w of the 2 x 2 system (in double).
    const auto product = [&](const Tensor<T>& u) {
      Tensor<T> cu = Tensor<T>::uninitialized(u.shape());
      curvature->apply(u, cu);
      axpy(kappa, u, cu);
      return cu;
    };
    const Tensor<T> c_direction = product(direction);
    const double a11 = dot(direction, c_direction);
    const double b1 = dot(g_, direction);
    double a12 = 0, a22 = 0, b2 = 0;
    const bool has_previous = state.previous.defined();
    if (has_previous) {
      const Tensor<T> c_previous = product(state.previous);
      a12 = dot(direction, c_previous);
      a22 = dot(state.previous, c_previous);
      b2 = dot(g_, state.previous);
    }
    const QuadraticStep q = minimize_quadratic(a11, a12, a22, b1, b2, has_previous);
    // delta = s (alpha Delta + mu delta_0), and the model's value there (quadratic in s).
    const double s = k_.multiplier_, alpha = s * q.alpha, mu = s * q.mu;
    Tensor<T> delta = has_previous ? state.previous.clone() : c_.model.zeros_like_parameters();
    scal(mu, delta);
    axpy(alpha, direction, delta);
    const double model_value =
        alpha * b1 + mu * b2 + 0.5 * (alpha * alpha * a11 + 2 * alpha * mu * a12 + mu * mu * a22);
    state.alpha = q.alpha;
    state.mu = q.mu;
    state.previous = delta;  // delta_0 of the next step, unless this one is undone
    r.step_scale = q.alpha;
    r.step_norm = norm(delta);
    KfacAdaptiveReport& report = r.adaptive.emplace();
    report.predicted_reduction = -model_value;
    report.momentum = q.mu;
    // M&G 2015, sec. 6.5: rho every T1 steps (and whenever the loss after the step is evaluated
    // anyway, for the report). This M includes the damping term, as the model of sec. 7 does;
    // the objective h includes the weight decay term, as g and M do.
    const bool adapt = state.steps % static_cast<std::uint64_t>(o_.damping_adaptation_every) == 0;
    detail::Proposal<T> p;
    p.update = std::move(delta);
    p.scale = 1.0;
    p.measure_loss_after = o_.evaluate_loss_after || adapt;
    p.predicted_reduction = -model_value;
    p.weight_decay = o_.weight_decay;
    p.adapt_damping = adapt;
    return p;
  }

  Kfac& k_;
  const KfacOptions& o_;
  const detail::StepContext<T>& c_;
  const nn::Shard& used_;
  Tensor<T> g_;  // the gradient of the objective (weight decay included)
};

template <Real T>
KfacReport Kfac<T>::step(const Tensor<T>& inputs, const Tensor<T>& targets) {
  // Data-parallel: the row counts first (one allgather), so a rank without statistics rows is an
  // error on every rank.
  nn::Shard shard, used;
  if (comm_) {
    std::tie(shard, used) = statistics_shards(*comm_, leading_rows(inputs), factors_.options());
  }
  check_batch("Kfac::step", inputs.shape(), targets.shape());
  if (!comm_) shard = nn::Shard{inputs.dim(0), 0, inputs.dim(0)};
  // What a step changes besides the model and state_ (which detail::all_or_nothing keeps): the
  // factors, a snapshot of handles (O(layers)), put back if the step throws.
  std::unique_ptr<typename KroneckerFactors<T>::Statistics> saved = factors_.snapshot();
  return detail::all_or_nothing(
      *model_, state_,
      [&](const Tensor<T>& theta0, StepState& working) {
        const detail::StepContext<T> c{*model_, *head_, inputs, targets, detail::Ranks{comm_, shard}, theta0};
        StepSource source(*this, c, used);
        return detail::damped_step_unguarded(source, c, working);
      },
      [&]() noexcept { factors_.restore(std::move(saved)); });
}

template <Real T>
void Kfac<T>::set_step_multiplier(double s) {
  if (!(s >= 0) || !std::isfinite(s)) {
    throw ValueError("Kfac::set_step_multiplier: " + std::to_string(s) +
                     " must be >= 0 and finite");
  }
  multiplier_ = s;
}

// ---- checkpoints --------------------------------------------------------------------------------
//
// Entries of a "kfac" state (nn/checkpoint.hpp). Per tapped layer l, "layer<l>/...":
//   counters weight_index, conv2d (0/1), bias (0/1) and, for a convolution, kernel_h, kernel_w,
//            stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w: the tap;
//   tensors  A, G; K-FAC with inverses: A_inverse, G_inverse; EKFAC: eigenvectors_A,
//            eigenvectors_G, scalings;
//   numbers  pi, damping_used.
// Global: counters layers, updates, scaling_updates, has_inverses, ekfac, steps; numbers
// untapped_scale, ekfac_lambda, step_multiplier; tensor velocity (with momentum, once made);
// adaptive mode only: number adaptive_damping (lambda), tensor previous_update (delta_0, once
// made). Everything is stored in its own precision (tensors in T, numbers in double), so a resumed
// run continues bitwise.

namespace {

std::string entry(std::size_t l, const char* what) {
  return "layer" + std::to_string(l) + "/" + what;
}

// A stored tensor of the expected shape and with finite entries, copied (the optimizer never
// shares storage with the caller's state).
template <Real T>
Tensor<T> stored_tensor(const nn::OptimizerState<T>& s, const std::string& name, const Shape& shape,
                        const std::string& layer) {
  const auto it = s.tensors.find(name);
  const std::string who =
      "Kfac::load_state: " + (layer.empty() ? std::string() : "layer " + layer + ": ");
  if (it == s.tensors.end() || !it->second.defined()) {
    throw ValueError(who + "the state has no tensor '" + name + "'");
  }
  const Tensor<T>& t = it->second;
  if (!(t.shape() == shape)) {
    throw ValueError(who + "tensor '" + name + "' has shape " + t.shape().str() + ", expected " +
                     shape.str() + " for this model");
  }
  const Index bad = first_non_finite(t);
  if (bad >= 0) {
    throw ValueError(who + "tensor '" + name + "' holds " +
                     std::to_string(static_cast<double>(t[bad])) + " at index " +
                     std::to_string(bad));
  }
  return t.clone();
}

template <Real T>
std::int64_t stored_counter(const nn::OptimizerState<T>& s, const std::string& name,
                            std::int64_t lo, std::int64_t hi) {
  const std::int64_t v = s.counter(name);
  if (v < lo || v > hi) {
    throw ValueError("Kfac::load_state: counter '" + name + "' = " + std::to_string(v) +
                     " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

template <Real T>
double stored_number(const nn::OptimizerState<T>& s, const std::string& name, double lo) {
  const double v = s.number(name);
  if (!(v >= lo) || !std::isfinite(v)) {
    throw ValueError("Kfac::load_state: number '" + name + "' = " + std::to_string(v) +
                     " must be finite and >= " + std::to_string(lo));
  }
  return v;
}

constexpr std::int64_t kMaxCounter = std::numeric_limits<std::int64_t>::max();

// The tap of stored layer l, planned again against the model's layout (plan_layer's checks: the
// weight exists, has the kind's rank and kernel, and [W; b] is one block).
template <Real T>
KfacLayer stored_layer(const nn::OptimizerState<T>& s, std::size_t l,
                       const std::vector<nn::ParamInfo>& layout) {
  nn::LayerTap<Var<T>> tap;
  const auto params = static_cast<std::int64_t>(layout.size());
  tap.weight_index =
      static_cast<std::size_t>(stored_counter(s, entry(l, "weight_index"), 0, params - 1));
  tap.has_bias = stored_counter(s, entry(l, "bias"), 0, 1) == 1;
  const bool conv = stored_counter(s, entry(l, "conv2d"), 0, 1) == 1;
  if (conv) {
    tap.kind = nn::LayerTap<Var<T>>::Kind::conv2d;
    const auto get = [&](const char* name, std::int64_t lo) {
      return static_cast<Index>(stored_counter(s, entry(l, name), lo, kMaxCounter));
    };
    tap.kernel = {get("kernel_h", 1), get("kernel_w", 1)};
    tap.conv.stride = {get("stride_h", 1), get("stride_w", 1)};
    tap.conv.padding = {get("padding_h", 0), get("padding_w", 0)};
    tap.conv.dilation = {get("dilation_h", 1), get("dilation_w", 1)};
  }
  try {
    return plan_layer(tap, layout);
  } catch (const Error& e) {
    throw ValueError("Kfac::load_state: stored layer " + std::to_string(l) + " (weight '" +
                     layout[tap.weight_index].name + "') does not fit this model: " + e.what());
  }
}

// The rows behind layer l's A (low_rank_inverses), if the state has them: at most rows / 2 rows,
// one positive whole count per update summing to them.
template <Real T>
detail::FactorRows<T> stored_factor_rows(const nn::OptimizerState<T>& s, std::size_t l,
                                         const KfacLayer& L, std::uint64_t updates) {
  const std::string rows_name = entry(l, "A_rows"), counts_name = entry(l, "A_rows_per_update");
  if (!s.has_tensor(rows_name) && !s.has_tensor(counts_name)) return {};
  const Tensor<T>& stored = s.tensors.at(s.has_tensor(rows_name) ? rows_name : counts_name);
  const Index r = s.has_tensor(rows_name) && stored.rank() == 2 ? stored.dim(0) : 0;
  if (r < 1 || 2 * r > L.rows()) {
    throw ValueError("Kfac::load_state: layer " + L.name + ": tensor '" + rows_name +
                     "' must be (r, " + std::to_string(L.rows()) + ") with 1 <= r <= " +
                     std::to_string(L.rows() / 2) + " (got " +
                     (s.has_tensor(rows_name) ? stored.shape().str() : std::string("none")) + ")");
  }
  detail::FactorRows<T> out;
  out.rows = stored_tensor(s, rows_name, Shape{r, L.rows()}, L.name);
  const Tensor<T> counts =
      stored_tensor(s, counts_name, Shape{static_cast<Index>(updates)}, L.name);
  Index sum = 0;
  for (Index k = 0; k < counts.size(); ++k) {
    const T c = counts[k];
    if (!(c >= T(1)) || c != std::floor(c) || c > static_cast<T>(r)) {
      throw ValueError("Kfac::load_state: layer " + L.name + ": tensor '" + counts_name +
                       "' holds " + std::to_string(static_cast<double>(c)) + " at index " +
                       std::to_string(k) + " (a whole count of rows from 1 to " +
                       std::to_string(r) + " expected)");
    }
    out.per_update.push_back(static_cast<Index>(c));
    sum += out.per_update.back();
  }
  if (sum != r) {
    throw ValueError("Kfac::load_state: layer " + L.name + ": tensor '" + counts_name +
                     "' counts " + std::to_string(sum) + " rows, '" + rows_name + "' holds " +
                     std::to_string(r));
  }
  return out;
}

// Layer l's A inverse in the Woodbury form: C and P of one shape (r, rows), r <= rows / 2, delta > 0.
template <Real T>
detail::WoodburyInverse<T> stored_woodbury(const nn::OptimizerState<T>& s, std::size_t l,
                                           const KfacLayer& L) {
  const std::string c_name = entry(l, "A_inverse_woodbury_C");
  const Tensor<T>& c = s.tensors.at(c_name);
  const Index r = c.rank() == 2 ? c.dim(0) : 0;
  if (r < 1 || 2 * r > L.rows()) {
    throw ValueError("Kfac::load_state: layer " + L.name + ": tensor '" + c_name +
                     "' has shape " + c.shape().str() + ", expected (r, " +
                     std::to_string(L.rows()) + ") with 1 <= r <= " + std::to_string(L.rows() / 2));
  }
  detail::WoodburyInverse<T> w;
  w.c = stored_tensor(s, c_name, Shape{r, L.rows()}, L.name);
  w.p = stored_tensor(s, entry(l, "A_inverse_woodbury_P"), Shape{r, L.rows()}, L.name);
  w.delta = stored_number(s, entry(l, "A_inverse_woodbury_delta"), 0.0);
  if (!(w.delta > 0)) {
    throw ValueError("Kfac::load_state: layer " + L.name + ": number '" +
                     entry(l, "A_inverse_woodbury_delta") + "' must be positive");
  }
  return w;
}

}  // namespace

template <Real T>
void KroneckerFactors<T>::save_statistics(nn::OptimizerState<T>& out) const {
  const Statistics& st = s_->stats;
  const bool ekfac = s_->options.approximation == KfacApproximation::ekfac;
  out.counters["layers"] = static_cast<std::int64_t>(st.layers.size());
  out.counters["updates"] = static_cast<std::int64_t>(st.updates);
  out.counters["scaling_updates"] = static_cast<std::int64_t>(st.scaling_updates);
  out.counters["has_inverses"] = st.has_inverses ? 1 : 0;
  out.counters["ekfac"] = ekfac ? 1 : 0;
  out.numbers["untapped_scale"] = st.untapped_scale;
  out.numbers["ekfac_lambda"] = st.ekfac_lambda;
  for (std::size_t l = 0; l < st.layers.size(); ++l) {
    const KfacLayer& L = st.layers[l];
    out.counters[entry(l, "weight_index")] = static_cast<std::int64_t>(L.weight_index);
    out.counters[entry(l, "bias")] = L.bias ? 1 : 0;
    out.counters[entry(l, "conv2d")] = L.kind == KfacLayerKind::conv2d ? 1 : 0;
    if (L.kind == KfacLayerKind::conv2d) {
      out.counters[entry(l, "kernel_h")] = L.kernel[0];
      out.counters[entry(l, "kernel_w")] = L.kernel[1];
      out.counters[entry(l, "stride_h")] = L.conv.stride[0];
      out.counters[entry(l, "stride_w")] = L.conv.stride[1];
      out.counters[entry(l, "padding_h")] = L.conv.padding[0];
      out.counters[entry(l, "padding_w")] = L.conv.padding[1];
      out.counters[entry(l, "dilation_h")] = L.conv.dilation[0];
      out.counters[entry(l, "dilation_w")] = L.conv.dilation[1];
    }
    out.numbers[entry(l, "pi")] = st.pi[l];
    out.numbers[entry(l, "damping_used")] = st.damping_used[l];
    if (st.updates == 0) continue;
    out.tensors[entry(l, "A")] = st.a[l].clone();
    out.tensors[entry(l, "G")] = st.g[l].clone();
    if (st.a_rows[l].defined()) {  // low_rank_inverses: the rows behind A and their updates
      const auto& per_update = st.a_rows[l].per_update;
      Tensor<T> counts = Tensor<T>::uninitialized(Shape{static_cast<Index>(per_update.size())});
      for (std::size_t k = 0; k < per_update.size(); ++k) {
        counts[static_cast<Index>(k)] = static_cast<T>(per_update[k]);  // exact: <= rows / 2
      }
      out.tensors[entry(l, "A_rows")] = st.a_rows[l].rows.clone();
      out.tensors[entry(l, "A_rows_per_update")] = std::move(counts);
    }
    if (ekfac) {
      out.tensors[entry(l, "eigenvectors_A")] = st.u_a[l].clone();
      out.tensors[entry(l, "eigenvectors_G")] = st.u_g[l].clone();
      out.tensors[entry(l, "scalings")] = st.scalings[l].clone();
    } else if (st.has_inverses) {
      if (st.a_woodbury[l].defined()) {
        out.tensors[entry(l, "A_inverse_woodbury_C")] = st.a_woodbury[l].c.clone();
        out.tensors[entry(l, "A_inverse_woodbury_P")] = st.a_woodbury[l].p.clone();
        out.numbers[entry(l, "A_inverse_woodbury_delta")] = st.a_woodbury[l].delta;
      } else {
        out.tensors[entry(l, "A_inverse")] = st.a_inv[l].clone();
      }
      out.tensors[entry(l, "G_inverse")] = st.g_inv[l].clone();
    }
  }
}

template <Real T>
std::unique_ptr<typename KroneckerFactors<T>::Statistics> KroneckerFactors<T>::load_statistics(
    const nn::OptimizerState<T>& s) const {
  const State& state = *s_;
  const bool ekfac = state.options.approximation == KfacApproximation::ekfac;
  const bool stored_ekfac = stored_counter(s, "ekfac", 0, 1) == 1;
  if (stored_ekfac != ekfac) {
    throw ValueError(std::string("Kfac::load_state: the state is of ") +
                     (stored_ekfac ? "EKFAC" : "K-FAC") + ", this optimizer runs " +
                     (ekfac ? "EKFAC" : "K-FAC") + " (KfacOptions::approximation)");
  }
  const auto& layout = state.model->layout();
  auto st = std::make_unique<Statistics>();
  const auto count = static_cast<std::size_t>(
      stored_counter(s, "layers", 0, static_cast<std::int64_t>(layout.size())));
  st->updates = static_cast<std::uint64_t>(stored_counter(s, "updates", 0, kMaxCounter));
  st->scaling_updates =
      static_cast<std::uint64_t>(stored_counter(s, "scaling_updates", 0, kMaxCounter));
  st->has_inverses = stored_counter(s, "has_inverses", 0, 1) == 1;
  st->untapped_scale = stored_number(s, "untapped_scale", 0.0);
  st->ekfac_lambda = stored_number(s, "ekfac_lambda", 0.0);
  if ((count == 0) != (st->updates == 0) || (st->has_inverses && st->updates == 0) ||
      (ekfac && st->updates > 0 && st->scaling_updates == 0)) {
    throw ValueError("Kfac::load_state: inconsistent counters (" + std::to_string(count) +
                     " layers, " + std::to_string(st->updates) + " updates, " +
                     std::to_string(st->scaling_updates) + " scaling updates, has_inverses " +
                     std::to_string(st->has_inverses) + ")");
  }
  std::vector<int> uses(layout.size(), 0);
  for (std::size_t l = 0; l < count; ++l) {
    KfacLayer L = stored_layer(s, l, layout);
    if (uses[L.weight_index]++ > 0 || (L.bias && uses[L.weight_index + 1]++ > 0)) {
      throw ValueError("Kfac::load_state: stored layer " + std::to_string(l) + " (" + L.name +
                       ") uses parameters of another stored layer");
    }
    const Shape a_shape{L.rows(), L.rows()}, g_shape{L.out, L.out};
    st->a.push_back(stored_tensor(s, entry(l, "A"), a_shape, L.name));
    st->g.push_back(stored_tensor(s, entry(l, "G"), g_shape, L.name));
    st->a_rows.push_back(stored_factor_rows(s, l, L, st->updates));
    st->a_woodbury.emplace_back();
    if (!ekfac && st->has_inverses) {
      if (s.has_tensor(entry(l, "A_inverse_woodbury_C"))) {
        st->a_woodbury.back() = stored_woodbury(s, l, L);
        st->a_inv.emplace_back();
      } else {
        st->a_inv.push_back(stored_tensor(s, entry(l, "A_inverse"), a_shape, L.name));
      }
      st->g_inv.push_back(stored_tensor(s, entry(l, "G_inverse"), g_shape, L.name));
    } else {
      st->a_inv.emplace_back();
      st->g_inv.emplace_back();
    }
    if (ekfac) {
      st->u_a.push_back(stored_tensor(s, entry(l, "eigenvectors_A"), a_shape, L.name));
      st->u_g.push_back(stored_tensor(s, entry(l, "eigenvectors_G"), g_shape, L.name));
      st->scalings.push_back(
          stored_tensor(s, entry(l, "scalings"), Shape{L.rows(), L.out}, L.name));
      for (Index i = 0; i < st->scalings.back().size(); ++i) {
        if (st->scalings.back()[i] < T(0)) {
          throw ValueError("Kfac::load_state: layer " + L.name + ": tensor '" +
                           entry(l, "scalings") + "' holds a negative second moment at index " +
                           std::to_string(i));
        }
      }
    }
    st->pi.push_back(stored_number(s, entry(l, "pi"), 0.0));
    st->damping_used.push_back(stored_number(s, entry(l, "damping_used"), 0.0));
    if (!(st->pi.back() > 0)) {
      throw ValueError("Kfac::load_state: layer " + L.name + ": pi must be positive");
    }
    st->layers.push_back(std::move(L));
  }
  st->untapped =
      count > 0 ? untapped_ranges(layout, st->layers) : std::vector<std::pair<Index, Index>>{};
  st->scratch = largest_block(st->layers);
  return st;
}

template <Real T>
nn::OptimizerState<T> Kfac<T>::save_state() const {
  nn::OptimizerState<T> s;
  s.kind = "kfac";
  factors_.save_statistics(s);
  s.counters["steps"] = static_cast<std::int64_t>(state_.steps);
  s.numbers["step_multiplier"] = multiplier_;
  if (state_.velocity.defined()) s.tensors["velocity"] = state_.velocity.clone();
  if (factors_.options().adaptive) {  // only then, so a default state is as it was
    s.numbers["adaptive_damping"] = state_.lm.lambda;
    if (state_.previous.defined()) s.tensors["previous_update"] = state_.previous.clone();
  }
  return s;
}

template <Real T>
void Kfac<T>::load_state(const nn::OptimizerState<T>& s) {
  s.require_kind("kfac", "Kfac::load_state");
  // Everything is read and checked first; the optimizer changes at the end (nothing there throws).
  std::unique_ptr<typename KroneckerFactors<T>::Statistics> stats = factors_.load_statistics(s);
  const std::int64_t steps = stored_counter(s, "steps", 0, kMaxCounter);
  const double multiplier = stored_number(s, "step_multiplier", 0.0);
  Tensor<T> velocity;
  if (s.has_tensor("velocity")) {
    if (factors_.options().momentum == 0) {
      throw ValueError(
          "Kfac::load_state: the state has a momentum buffer but this Kfac has no "
          "momentum (KfacOptions::momentum = 0)");
    }
    velocity = stored_tensor(s, "velocity", Shape{model_->num_parameters()}, "");
  }
  const KfacOptions& o = factors_.options();
  double lambda = o.damping;
  Tensor<T> previous;
  const bool stored_adaptive = s.numbers.count("adaptive_damping") > 0;
  if (stored_adaptive != o.adaptive) {
    throw ValueError(std::string("Kfac::load_state: the state is of ") +
                     (stored_adaptive ? "adaptive" : "non-adaptive") +
                     " K-FAC, this optimizer is " + (o.adaptive ? "adaptive" : "not adaptive") +
                     " (KfacOptions::adaptive)");
  }
  if (o.adaptive) {
    lambda = stored_number(s, "adaptive_damping", 0.0);
    if (lambda < o.min_damping || lambda > o.max_damping) {
      throw ValueError("Kfac::load_state: number 'adaptive_damping' = " + std::to_string(lambda) +
                       " is outside [min_damping, max_damping]");
    }
    if (s.has_tensor("previous_update")) {
      previous = stored_tensor(s, "previous_update", Shape{model_->num_parameters()}, "");
    }
  } else if (s.has_tensor("previous_update")) {
    throw ValueError(
        "Kfac::load_state: the state has a previous update but this Kfac is not "
        "adaptive");
  }
  factors_.restore(std::move(stats));
  state_.velocity = std::move(velocity);
  state_.steps = static_cast<std::uint64_t>(steps);
  multiplier_ = multiplier;
  state_.lm.lambda = lambda;
  state_.previous = std::move(previous);
  state_.alpha = 0;
  state_.mu = 0;
}

// ---- KfacPreconditioner -------------------------------------------------------------------------

template <Real T>
void KfacPreconditioner<T>::apply(const Tensor<T>& r, Tensor<T>& z) {
  check_apply_arguments(*this, r, z);
  factors_->precondition(r, z);
}

// ---- KfacOperator -------------------------------------------------------------------------------

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
  const bool ekfac = f.options().approximation == KfacApproximation::ekfac;
  const double gamma = std::sqrt(lambda_);
  for (std::size_t l = 0; l < f.layers().size(); ++l) {
    const KfacLayer& L = f.layers()[l];
    const Index rows = L.rows(), cols = L.out;
    if (scratch_.size() < 2 * rows * cols) {
      scratch_ = Tensor<T>::uninitialized(Shape{2 * rows * cols});
    }
    T* tmp = scratch_.data();
    const T* x = v.data() + L.offset;
    T* y = out.data() + L.offset;
    if (ekfac) {
      // U_A ((U_A^T X U_G) o (s + lambda)) U_G^T: the eigenbasis form of George et al. 2018.
      T* tmp2 = tmp + rows * cols;
      const T* ua = f.eigenvectors_a(l).data();
      const T* ug = f.eigenvectors_g(l).data();
      const T* sc = f.scalings(l).data();
      kernels::gemm<T>(Trans::yes, Trans::no, rows, cols, rows, T(1), ua, rows, x, cols, T(0), tmp,
                       cols);
      kernels::gemm<T>(Trans::no, Trans::no, rows, cols, cols, T(1), tmp, cols, ug, cols, T(0),
                       tmp2, cols);
      for (Index i = 0; i < rows * cols; ++i) {
        tmp2[i] =
            static_cast<T>(static_cast<double>(tmp2[i]) * (static_cast<double>(sc[i]) + lambda_));
      }
      kernels::gemm<T>(Trans::no, Trans::yes, rows, cols, cols, T(1), tmp2, cols, ug, cols, T(0),
                       tmp, cols);
      kernels::gemm<T>(Trans::no, Trans::no, rows, cols, rows, T(1), ua, rows, tmp, cols, T(0), y,
                       cols);
      continue;
    }
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

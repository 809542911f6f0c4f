#include <amari/nn/model.hpp>

#include <cmath>

#include <amari/nn/random.hpp>

namespace amari::nn {

template <Real T>
Model<T>::Model(std::shared_ptr<const Module<T>> net, std::uint64_t seed) : net_(std::move(net)), seed_(seed) {
  if (!net_) throw ValueError("Model: null module");
  std::vector<ParamSpec> specs;
  net_->declare(specs, "");
  Index total = 0;
  for (const auto& s : specs) {
    s.check_init();  // fields are public: a spec edited after construction is checked again here
    layout_.push_back({s.name, s.shape, total, s.init, s.fan_in, s.fan_out, s.torch_layout});
    total += s.shape.numel();
  }
  flat_ = Tensor<T>(Shape{total});

  std::vector<StateSpec> state_specs;
  net_->declare_state(state_specs, "");
  Index state_total = 0;
  for (const auto& s : state_specs) {
    state_layout_.push_back({s.name, s.shape, state_total, s.initial});
    state_total += s.shape.numel();
  }
  state_ = Tensor<T>(Shape{state_total});
  bind_views();
  reset_state();
  initialize(seed);
}

template <Real T>
Model<T>::Model(const Model& other)
    : net_(other.net_),
      layout_(other.layout_),
      flat_(other.flat_.clone()),
      state_layout_(other.state_layout_),
      state_(other.state_.clone()),
      mode_(other.mode_),
      step_(other.step_),
      seed_(other.seed_),
      first_example_(other.first_example_) {
  bind_views();
}

template <Real T>
Model<T>& Model<T>::operator=(const Model& other) {
  if (this != &other) {
    Model copy(other);  // everything that can throw happens before *this changes
    *this = std::move(copy);
  }
  return *this;
}

template <Real T>
void Model<T>::bind_views() {
  views_ = split(flat_);
  state_views_.clear();
  for (const auto& s : state_layout_) state_views_.push_back(state_.view(s.offset, s.shape));
  exposed_flat_ = flat_;
  exposed_state_ = state_;
}

template <Real T>
void Model<T>::check_handles(const char* op) const {
  const bool flat_ok = exposed_flat_.same_storage(flat_) && exposed_flat_.shape() == flat_.shape();
  const bool state_ok = exposed_state_.same_storage(state_) && exposed_state_.shape() == state_.shape();
  if (flat_ok && state_ok) return;
  const std::string which = flat_ok ? "state()" : "parameters()";
  const Tensor<T>& rebound = flat_ok ? exposed_state_ : exposed_flat_;
  exposed_flat_ = flat_;
  exposed_state_ = state_;
  throw ValueError(std::string("Model::") + op + ": the tensor returned by " + which +
                   " was rebound to another tensor (" + (rebound.defined() ? rebound.shape().str() : "undefined") +
                   "); the model keeps its own storage, which is unchanged. Write into it instead, e.g. "
                   "scatter(), copy_from() or element writes. The handle has been restored.");
}

template <Real T>
void Model<T>::reset_state() {
  for (std::size_t i = 0; i < state_layout_.size(); ++i) state_views_[i].fill(static_cast<T>(state_layout_[i].initial));
}

template <Real T>
void Model<T>::initialize(std::uint64_t seed) {
  for (std::size_t i = 0; i < layout_.size(); ++i) {
    const ParamInfo& p = layout_[i];
    Tensor<T>& v = views_[i];
    Rng rng(seed, i);
    switch (p.init) {
      case Init::zeros:
        v.fill(T(0));
        break;
      case Init::ones:
        v.fill(T(1));
        break;
      case Init::torch_uniform: {
        const double a = p.fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(p.fan_in)) : 0.0;
        for (Index k = 0; k < v.size(); ++k) v[k] = static_cast<T>(rng.uniform(-a, a));
        break;
      }
      case Init::normal:
        for (Index k = 0; k < v.size(); ++k) v[k] = static_cast<T>(rng.normal());
        break;
      case Init::xavier_uniform: {
        const double a = std::sqrt(6.0 / static_cast<double>(p.fan_in + p.fan_out));
        for (Index k = 0; k < v.size(); ++k) v[k] = static_cast<T>(rng.uniform(-a, a));
        break;
      }
      case Init::he_normal: {
        const double sd = std::sqrt(2.0 / static_cast<double>(p.fan_in));
        for (Index k = 0; k < v.size(); ++k) v[k] = static_cast<T>(sd * rng.normal());
        break;
      }
    }
  }
}

template <Real T>
void Model<T>::scatter(const Tensor<T>& flat) {
  check_handles("scatter");
  if (!(flat.shape() == flat_.shape())) {
    throw ShapeError("Model::scatter: expected a flat vector of shape " + flat_.shape().str() + ", got " +
                     flat.shape().str());
  }
  flat_.copy_from(flat);
}

template <Real T>
void Model<T>::split_into(const Tensor<T>& flat, std::vector<Tensor<T>>& views) const {
  const Index p = layout_.empty() ? 0 : layout_.back().offset + layout_.back().shape.numel();
  if (flat.rank() != 1 || flat.size() != p) {
    throw ShapeError("Model::split: expected a flat vector of shape (" + std::to_string(p) + "), got " +
                     flat.shape().str());
  }
  views.resize(layout_.size());
  for (std::size_t i = 0; i < layout_.size(); ++i) views[i] = flat.view(layout_[i].offset, layout_[i].shape);
}

template <Real T>
std::vector<Tensor<T>> Model<T>::split(const Tensor<T>& flat) const {
  const Index p = layout_.empty() ? 0 : layout_.back().offset + layout_.back().shape.numel();
  if (flat.rank() != 1 || flat.size() != p) {
    throw ShapeError("Model::split: expected a flat vector of shape (" + std::to_string(p) + "), got " +
                     flat.shape().str());
  }
  std::vector<Tensor<T>> out;
  out.reserve(layout_.size());
  for (const auto& info : layout_) out.push_back(flat.view(info.offset, info.shape));
  return out;
}

template <Real T>
Tensor<T> Model<T>::forward(const Tensor<T>& x) const {
  return forward<Tensor<T>>(x, std::span<const Tensor<T>>(views_));
}

template <Real T>
Tensor<T> Model<T>::forward(const Tensor<T>& x, Mode mode) const {
  return forward<Tensor<T>>(x, std::span<const Tensor<T>>(views_), mode);
}

template <Real T>
Dual<T> Model<T>::forward_jvp(const Tensor<T>& x, const Tensor<T>& tangent) const {
  const std::vector<Tensor<T>> dv = split(tangent);
  std::vector<Dual<T>> params;
  params.reserve(views_.size());
  for (std::size_t i = 0; i < views_.size(); ++i) params.emplace_back(views_[i], dv[i]);
  return forward<Dual<T>>(Dual<T>(x), params);
}

template <Real T>
std::vector<Var<T>> Model<T>::variables(Tape<T>& tape) const {
  std::vector<Var<T>> vars;
  vars.reserve(views_.size());
  for (const auto& v : views_) vars.push_back(tape.variable(v));
  return vars;
}

template <Real T>
std::string Model<T>::summary() const {
  std::string s = net_->describe() + "\n";
  for (const auto& p : layout_) {
    s += "  " + p.name + " " + p.shape.str() + " at " + std::to_string(p.offset) + "\n";
  }
  s += "  total " + std::to_string(num_parameters()) + " parameters\n";
  for (const auto& p : state_layout_) s += "  state " + p.name + " " + p.shape.str() + "\n";
  return s;
}

template class Model<float>;
template class Model<double>;

}  // namespace amari::nn

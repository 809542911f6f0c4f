#include <amari/nn/recorded_model.hpp>

#include <string>

namespace amari::nn {

template <Real T>
RecordedModel<T>::RecordedModel(const Model<T>& model, Tensor<T> inputs, RecordOptions<T> options)
    : model_(&model),
      x_(std::move(inputs)),
      y_(std::move(options.targets)),
      // A snapshot, so that later model updates do not disturb the record; or, borrowed, the
      // model's own storage (a handle: no element is copied).
      theta_(options.borrow_parameters ? model.parameters() : model.gather()),
      tape_(std::make_unique<Tape<T>>()),
      one_(Tensor<T>::scalar(T(1))) {
  const std::string op = options.op ? options.op : "RecordedModel";
  if (!x_.defined()) throw ValueError(op + ": the inputs are an undefined tensor");
  if (options.head && !y_.defined()) throw ValueError(op + ": a head was given without targets");
  Model<T>* const updated = options.update_state;
  if (updated && updated != &model) {
    throw ValueError(op + ": RecordOptions::update_state must point to the recorded model");
  }
  const std::vector<Tensor<T>> views = model.split(theta_);
  params_.reserve(views.size());
  for (const auto& v : views) params_.push_back(tape_->variable(v));
  const std::span<const Var<T>> params(params_);
  // The state before a training pass moves it, to undo the move if the recording throws.
  const Tensor<T>& state = model.state();
  const bool moves_state =
      updated && model.mode() == Mode::train && state.defined() && state.size() > 0;
  const Tensor<T> saved_state = moves_state ? state.clone() : Tensor<T>();
  try {
    if (updated) {
      z_ = updated->forward_updating_state(Var<T>(x_), params, options.taps);
    } else if (options.taps) {
      z_ = model.forward_observed(Var<T>(x_), params, *options.taps);
    } else {
      z_ = model.forward(Var<T>(x_), params);
    }
    if (z_.shape().rank() != 2) {
      throw ShapeError(op + ": the model's output must be logits of shape (N, C), got " +
                       z_.shape().str());
    }
    if (options.head) loss_ = options.head->loss(z_, y_);
  } catch (...) {
    if (moves_state) updated->state().copy_from(saved_state);
    throw;
  }
}

template <Real T>
void RecordedModel<T>::require_loss(const char* op) const {
  if (!loss_) throw ValueError(std::string("RecordedModel::") + op + ": no loss was recorded (RecordOptions::head)");
}

template <Real T>
T RecordedModel<T>::loss() const {
  require_loss("loss");
  return loss_->value().item();
}

template <Real T>
void RecordedModel<T>::jvp(const Tensor<T>& v, Tensor<T>& a) {
  model_->split_into(v, in_views_);  // views into v: no copy, no allocation after the first call
  tape_->jvp_into(params_, in_views_, std::span<const Var<T>>(&z_, 1), std::span<Tensor<T>>(&a, 1));
}

template <Real T>
void RecordedModel<T>::vjp(const Tensor<T>& b, Tensor<T>& out) {
  model_->split_into(out, out_views_);  // the sweep accumulates straight into out
  tape_->vjp_into(std::span<const Var<T>>(&z_, 1), std::span<const Tensor<T>>(&b, 1), params_, out_views_);
}

template <Real T>
void RecordedModel<T>::gradient(Tensor<T>& out) {
  require_loss("gradient");
  model_->split_into(out, out_views_);
  tape_->vjp_into(std::span<const Var<T>>(&*loss_, 1), std::span<const Tensor<T>>(&one_, 1), params_, out_views_);
}

template <Real T>
void RecordedModel<T>::loss_hvp(const Tensor<T>& v, Tensor<T>& out) {
  require_loss("loss_hvp");
  model_->split_into(v, in_views_);
  model_->split_into(out, out_views_);
  tape_->hvp_into(std::span<const Var<T>>(&*loss_, 1), std::span<const Tensor<T>>(&one_, 1), params_, in_views_,
                  out_views_);
}

template class RecordedModel<float>;
template class RecordedModel<double>;

}  // namespace amari::nn

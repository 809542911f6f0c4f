#include <amari/nn/training.hpp>

#include <algorithm>

namespace amari::nn {

namespace {

// One taped forward pass and one reverse sweep; `forward` runs the model on the parameter Vars.
template <Real T, class Forward>
T taped_loss_and_gradient(const Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                          Tensor<T>& gradient, Tape<T>& tape, Forward forward) {
  std::vector<Tensor<T>> grads = model.split(gradient);  // views into `gradient`
  tape.clear();
  const std::vector<Var<T>> params = model.variables(tape);
  const Var<T> z = forward(Var<T>(x), std::span<const Var<T>>(params));
  const Var<T> loss = head.loss(z, y);
  const Tensor<T> one = Tensor<T>::scalar(T(1));
  tape.vjp_into(std::span<const Var<T>>(&loss, 1), std::span<const Tensor<T>>(&one, 1), params, grads);
  const T value = loss.value().item();
  tape.clear();
  return value;
}

// The start of a training step whose batch row 0 is example `first` of the step's batch: in train
// mode a new step (new dropout masks), and the masks keyed by the examples' indices in the batch.
template <Real T>
void start_step(Model<T>& model, const Tensor<T>& gradient, Index first) {
  model.split(gradient);  // ShapeError before the step counter moves
  if (model.mode() == Mode::train) model.set_step(model.step() + 1);
  model.set_first_example(first);
}

template <Real T>
T taped_training_step(Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                      Tensor<T>& gradient, Tape<T>& tape) {
  return taped_loss_and_gradient(model, head, x, y, gradient, tape, [&](const Var<T>& xv, std::span<const Var<T>> p) {
    return model.forward_updating_state(xv, p);
  });
}

}  // namespace

template <Real T>
T loss_and_gradient(Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                    Tensor<T>& gradient, Tape<T>& tape) {
  start_step(model, gradient, 0);
  return taped_training_step(model, head, x, y, gradient, tape);
}

template <Real T>
T loss_and_gradient(Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                    Tensor<T>& gradient, Tape<T>& tape, Communicator& comm, const Shard& shard) {
  // Every rank starts the step, also with 0 rows (the ranks' steps stay equal); this rank's rows
  // are examples [offset, offset + local) of the union, which keys their dropout masks.
  start_step(model, gradient, shard.offset);
  double loss = 0;
  if (shard.local > 0) {
    loss = static_cast<double>(taped_training_step(model, head, x, y, gradient, tape));
  } else {
    gradient.fill(T(0));
  }
  // sum_r (n_r / N) * (mean over rank r): the mean over the union (nn/communicator.hpp).
  reduce_mean(comm, shard.weight(), std::span<T>(gradient.data(), static_cast<std::size_t>(gradient.size())));
  reduce_mean(comm, shard.weight(), std::span<double>(&loss, 1));
  return static_cast<T>(loss);
}

template <Real T>
std::uint64_t structure_fingerprint(const Model<T>& model) {
  std::uint64_t h = fingerprint(std::to_string(model.num_parameters()) + " parameters");
  for (const ParamInfo& p : model.layout()) h = fingerprint(p.name + " " + p.shape.str() + ";", h);
  for (const StateInfo& s : model.state_layout()) h = fingerprint("state " + s.name + " " + s.shape.str() + ";", h);
  return h;
}

template <Real T>
void synchronize_model(Communicator& comm, Model<T>& model) {
  comm.agree("model structure (parameter names and shapes: " + std::to_string(model.num_parameters()) +
                 " parameters on rank " + std::to_string(comm.rank()) + ")",
             structure_fingerprint(model));
  Tensor<T>& theta = model.parameters();
  comm.broadcast(std::span<T>(theta.data(), static_cast<std::size_t>(theta.size())), 0);
  Tensor<T>& state = model.state();
  if (state.defined() && state.size() > 0) {
    comm.broadcast(std::span<T>(state.data(), static_cast<std::size_t>(state.size())), 0);
  }
  double step = static_cast<double>(model.step());
  comm.broadcast(std::span<double>(&step, 1), 0);
  model.set_step(static_cast<std::uint64_t>(step));
}

template <Real T>
T gradient_at(const Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
              Tensor<T>& gradient, Tape<T>& tape) {
  return taped_loss_and_gradient(model, head, x, y, gradient, tape, [&](const Var<T>& xv, std::span<const Var<T>> p) {
    return model.forward(xv, p);
  });
}

template <Real T>
Evaluation evaluate(const Model<T>& model, const Head<T>& head, const Tensor<T>& inputs,
                    const std::vector<int>& labels, Index num_classes, Index batch_size) {
  const Index n = inputs.shape()[0];
  if (static_cast<Index>(labels.size()) != n) {
    throw ShapeError("evaluate: " + std::to_string(n) + " inputs but " + std::to_string(labels.size()) + " labels");
  }
  if (batch_size <= 0) throw ValueError("evaluate: batch_size must be positive");
  Evaluation e;
  if (n == 0) return e;
  const Index d = inputs.size() / n;
  double loss_sum = 0, hits = 0;
  for (Index b = 0; b < n; b += batch_size) {
    const Index m = std::min(batch_size, n - b);
    const Tensor<T> xb = inputs.view(b * d, Shape{m, d});
    const std::vector<int> lb(labels.begin() + b, labels.begin() + b + m);
    const Tensor<T> z = model.forward(xb, Mode::eval);
    loss_sum += static_cast<double>(head.loss(z, one_hot<T>(lb, num_classes)).item()) * static_cast<double>(m);
    hits += accuracy(z, lb) * static_cast<double>(m);
  }
  e.loss = loss_sum / static_cast<double>(n);
  e.accuracy = hits / static_cast<double>(n);
  return e;
}

template float loss_and_gradient<float>(Model<float>&, const Head<float>&, const Tensor<float>&,
                                        const Tensor<float>&, Tensor<float>&, Tape<float>&);
template double loss_and_gradient<double>(Model<double>&, const Head<double>&, const Tensor<double>&,
                                          const Tensor<double>&, Tensor<double>&, Tape<double>&);
template float loss_and_gradient<float>(Model<float>&, const Head<float>&, const Tensor<float>&,
                                        const Tensor<float>&, Tensor<float>&, Tape<float>&, Communicator&,
                                        const Shard&);
template double loss_and_gradient<double>(Model<double>&, const Head<double>&, const Tensor<double>&,
                                          const Tensor<double>&, Tensor<double>&, Tape<double>&, Communicator&,
                                          const Shard&);
template std::uint64_t structure_fingerprint<float>(const Model<float>&);
template std::uint64_t structure_fingerprint<double>(const Model<double>&);
template void synchronize_model<float>(Communicator&, Model<float>&);
template void synchronize_model<double>(Communicator&, Model<double>&);
template float gradient_at<float>(const Model<float>&, const Head<float>&, const Tensor<float>&,
                                  const Tensor<float>&, Tensor<float>&, Tape<float>&);
template double gradient_at<double>(const Model<double>&, const Head<double>&, const Tensor<double>&,
                                    const Tensor<double>&, Tensor<double>&, Tape<double>&);
template Evaluation evaluate<float>(const Model<float>&, const Head<float>&, const Tensor<float>&,
                                    const std::vector<int>&, Index, Index);
template Evaluation evaluate<double>(const Model<double>&, const Head<double>&, const Tensor<double>&,
                                     const std::vector<int>&, Index, Index);

}  // namespace amari::nn

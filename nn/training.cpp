#include <amari/nn/training.hpp>

#include <algorithm>

#include <amari/nn/recorded_model.hpp>

namespace amari::nn {

namespace {

// One recorded forward pass (a training step's with `update`, the model's state moving with the
// batch) and one reverse sweep, on the model's own parameters: the record ends with the call. The
// caller has checked the gradient's length.
template <Real T>
T recorded_loss_and_gradient(const Model<T>& model, Model<T>* update, const Head<T>& head,
                             const Tensor<T>& x, const Tensor<T>& y, Tensor<T>& gradient,
                             const char* op) {
  RecordedModel<T> record(model, x,
                          RecordOptions<T>{.head = &head,
                                           .targets = y,
                                           .op = op,
                                           .update_state = update,
                                           .borrow_parameters = true});
  record.gradient(gradient);
  return record.loss();
}

// The start of a training step whose batch row 0 is example `first` of the step's batch: in train
// mode a new step (new dropout masks), and the masks keyed by the examples' indices in the batch.
template <Real T>
void start_step(Model<T>& model, const Tensor<T>& gradient, Index first) {
  model.split(gradient);  // ShapeError before the step counter moves
  if (model.mode() == Mode::train) model.set_step(model.step() + 1);
  model.set_first_example(first);
}

}  // namespace

template <Real T>
T loss_and_gradient(Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                    Tensor<T>& gradient) {
  start_step(model, gradient, 0);
  return recorded_loss_and_gradient(model, &model, head, x, y, gradient, "loss_and_gradient");
}

template <Real T>
T loss_and_gradient(Model<T>& model, const Head<T>& head, const Tensor<T>& x, const Tensor<T>& y,
                    Tensor<T>& gradient, Communicator& comm, const Shard& shard) {
  // Every rank starts the step, also with 0 rows (the ranks' steps stay equal); this rank's rows
  // are examples [offset, offset + local) of the union, which keys their dropout masks.
  start_step(model, gradient, shard.offset);
  double loss = 0;
  if (shard.local > 0) {
    loss = static_cast<double>(
        recorded_loss_and_gradient(model, &model, head, x, y, gradient, "loss_and_gradient"));
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
              Tensor<T>& gradient) {
  model.split(gradient);  // ShapeError before anything is recorded
  return recorded_loss_and_gradient(model, static_cast<Model<T>*>(nullptr), head, x, y, gradient,
                                    "gradient_at");
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
                                        const Tensor<float>&, Tensor<float>&);
template double loss_and_gradient<double>(Model<double>&, const Head<double>&,
                                          const Tensor<double>&, const Tensor<double>&,
                                          Tensor<double>&);
template float loss_and_gradient<float>(Model<float>&, const Head<float>&, const Tensor<float>&,
                                        const Tensor<float>&, Tensor<float>&, Communicator&,
                                        const Shard&);
template double loss_and_gradient<double>(Model<double>&, const Head<double>&,
                                          const Tensor<double>&, const Tensor<double>&,
                                          Tensor<double>&, Communicator&, const Shard&);
template std::uint64_t structure_fingerprint<float>(const Model<float>&);
template std::uint64_t structure_fingerprint<double>(const Model<double>&);
template void synchronize_model<float>(Communicator&, Model<float>&);
template void synchronize_model<double>(Communicator&, Model<double>&);
template float gradient_at<float>(const Model<float>&, const Head<float>&, const Tensor<float>&,
                                  const Tensor<float>&, Tensor<float>&);
template double gradient_at<double>(const Model<double>&, const Head<double>&,
                                    const Tensor<double>&, const Tensor<double>&, Tensor<double>&);
template Evaluation evaluate<float>(const Model<float>&, const Head<float>&, const Tensor<float>&,
                                    const std::vector<int>&, Index, Index);
template Evaluation evaluate<double>(const Model<double>&, const Head<double>&, const Tensor<double>&,
                                     const std::vector<int>&, Index, Index);

}  // namespace amari::nn

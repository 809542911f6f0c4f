#include <amari/nn/checkpoint.hpp>

#include <bit>
#include <vector>

#include <amari/nn/safetensors.hpp>

namespace amari::nn {

template <Real T>
const Tensor<T>& OptimizerState<T>::tensor(const std::string& name, const Shape& shape) const {
  const auto it = tensors.find(name);
  if (it == tensors.end()) throw ValueError("optimizer state '" + kind + "': no tensor '" + name + "'");
  if (!it->second.defined() || !(it->second.shape() == shape)) {
    throw ValueError("optimizer state '" + kind + "': tensor '" + name + "' has shape " +
                     (it->second.defined() ? it->second.shape().str() : std::string("undefined")) + ", expected " +
                     shape.str());
  }
  return it->second;
}

template <Real T>
double OptimizerState<T>::number(const std::string& name) const {
  const auto it = numbers.find(name);
  if (it == numbers.end()) throw ValueError("optimizer state '" + kind + "': no number '" + name + "'");
  return it->second;
}

template <Real T>
std::int64_t OptimizerState<T>::counter(const std::string& name) const {
  const auto it = counters.find(name);
  if (it == counters.end()) throw ValueError("optimizer state '" + kind + "': no counter '" + name + "'");
  return it->second;
}

template <Real T>
void OptimizerState<T>::require_kind(const std::string& expected, const char* who) const {
  if (kind != expected) {
    throw ValueError(std::string(who) + ": the state is of a '" + kind + "' optimizer, expected '" + expected + "'");
  }
}

namespace {

const std::string kModel = "model/", kModelState = "model_state/", kModelStep = "model_step", kModelSeed = "model_seed",
                  kTensor = "optimizer/", kNumber = "optimizer_number/", kCounter = "optimizer_counter/";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

}  // namespace

template <Real T>
void save_checkpoint(const std::string& path, const Model<T>& model, const OptimizerState<T>& state) {
  SafetensorsWriter w;
  const auto& views = model.parameter_views();
  for (std::size_t i = 0; i < model.layout().size(); ++i) w.add(kModel + model.layout()[i].name, views[i]);
  for (const auto& s : model.state_layout()) w.add(kModelState + s.name, model.state().view(s.offset, s.shape));
  w.add_int64(kModelStep, {}, {static_cast<std::int64_t>(model.step())});
  w.add_int64(kModelSeed, {}, {std::bit_cast<std::int64_t>(model.seed())});
  for (const auto& [name, t] : state.tensors) w.add(kTensor + name, t);
  for (const auto& [name, x] : state.numbers) w.add(kNumber + name, Tensor<double>::scalar(x));
  for (const auto& [name, n] : state.counters) w.add_int64(kCounter + name, {}, {n});
  w.set_metadata("amari.checkpoint", "1");
  w.set_metadata("amari.optimizer", state.kind);
  w.write(path);
}

template <Real T>
void load_checkpoint(const std::string& path, Model<T>& model, OptimizerState<T>& state) {
  const SafetensorsFile f = SafetensorsFile::read(path);
  const auto meta = f.metadata();
  if (!meta.count("amari.checkpoint") || !meta.count("amari.optimizer")) {
    throw FormatError("load_checkpoint: " + path + " is a safetensors file without amari checkpoint metadata");
  }
  // Everything is read and checked into new objects first; the model and `state` change at the end.
  Tensor<T> theta = model.zeros_like_parameters();
  const std::vector<Tensor<T>> theta_views = model.split(theta);
  for (std::size_t i = 0; i < model.layout().size(); ++i) {
    const ParamInfo& p = model.layout()[i];
    const Tensor<T> t = f.get<T>(kModel + p.name);
    if (!(t.shape() == p.shape)) {
      throw ShapeError("load_checkpoint: " + path + ": parameter '" + p.name + "' has shape " + t.shape().str() +
                       ", the model's is " + p.shape.str());
    }
    Tensor<T> dst = theta_views[i];
    dst.copy_from(t);
  }
  Tensor<T> model_state = model.state().clone();
  for (const auto& s : model.state_layout()) {
    const Tensor<T> t = f.get<T>(kModelState + s.name);
    if (!(t.shape() == s.shape)) {
      throw ShapeError("load_checkpoint: " + path + ": state '" + s.name + "' has shape " + t.shape().str() +
                       ", the model's is " + s.shape.str());
    }
    Tensor<T> dst = model_state.view(s.offset, s.shape);
    dst.copy_from(t);
  }
  const std::vector<std::int64_t> step = f.get_integers(kModelStep);
  if (step.size() != 1 || step[0] < 0) throw FormatError("load_checkpoint: " + path + ": bad model_step");
  const std::vector<std::int64_t> seed = f.get_integers(kModelSeed);
  if (seed.size() != 1) throw FormatError("load_checkpoint: " + path + ": bad model_seed");
  const std::size_t model_entries = model.layout().size() + model.state_layout().size() + 2;
  std::size_t seen = 0;
  OptimizerState<T> loaded;
  loaded.kind = meta.at("amari.optimizer");
  for (const std::string& name : f.names()) {
    if (starts_with(name, kTensor)) {
      loaded.tensors[name.substr(kTensor.size())] = f.get<T>(name);
    } else if (starts_with(name, kNumber)) {
      const Tensor<double> x = f.get<double>(name);
      if (x.size() != 1) throw FormatError("load_checkpoint: " + path + ": number '" + name + "' is not a scalar");
      loaded.numbers[name.substr(kNumber.size())] = x[0];
    } else if (starts_with(name, kCounter)) {
      const std::vector<std::int64_t> n = f.get_integers(name);
      if (n.size() != 1) throw FormatError("load_checkpoint: " + path + ": counter '" + name + "' is not a scalar");
      loaded.counters[name.substr(kCounter.size())] = n[0];
    } else {
      ++seen;
    }
  }
  if (seen != model_entries) {
    throw ShapeError("load_checkpoint: " + path + " holds " + std::to_string(seen) +
                     " model entries, the model has " + std::to_string(model_entries) +
                     " (parameters, state tensors, step counter and seed)");
  }
  model.scatter(theta);
  model.state().copy_from(model_state);
  model.set_step(static_cast<std::uint64_t>(step[0]));
  model.set_seed(std::bit_cast<std::uint64_t>(seed[0]));
  state = std::move(loaded);
}

template struct OptimizerState<float>;
template struct OptimizerState<double>;
template void save_checkpoint<float>(const std::string&, const Model<float>&, const OptimizerState<float>&);
template void save_checkpoint<double>(const std::string&, const Model<double>&, const OptimizerState<double>&);
template void load_checkpoint<float>(const std::string&, Model<float>&, OptimizerState<float>&);
template void load_checkpoint<double>(const std::string&, Model<double>&, OptimizerState<double>&);

}  // namespace amari::nn

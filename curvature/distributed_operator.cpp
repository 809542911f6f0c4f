#include <amari/curvature/distributed_operator.hpp>

#include <cmath>
#include <span>

namespace amari::curvature {

template <Real T>
DistributedOperator<T>::DistributedOperator(std::unique_ptr<LinearOperator<T>> local, Index size,
                                            nn::Communicator& comm, double weight)
    : local_(std::move(local)), size_(size), comm_(&comm), weight_(weight) {
  if (local_ && local_->size() != size) {
    throw ShapeError("DistributedOperator: local operator " + local_->name() + " has size " +
                     std::to_string(local_->size()) + ", expected " + std::to_string(size));
  }
  if (!(weight >= 0) || !std::isfinite(weight)) {
    throw ValueError("DistributedOperator: weight must be finite and >= 0, got " +
                     std::to_string(weight));
  }
}

template <Real T>
void DistributedOperator<T>::apply(const Tensor<T>& v, Tensor<T>& out) {
  check_apply_arguments(*this, v, out);
  if (local_) {
    local_->apply(v, out);
  } else {
    out.fill(T(0));
  }
  nn::reduce_mean(*comm_, weight_, std::span<T>(out.data(), static_cast<std::size_t>(out.size())));
}

template <Real T>
double DistributedOperator<T>::apply_quadratic_form(const Tensor<T>& v, Tensor<T>& out) {
  if (comm_->size() > 1 || !local_) return LinearOperator<T>::apply_quadratic_form(v, out);
  check_apply_arguments(*this, v, out);
  const double form = local_->apply_quadratic_form(v, out);
  nn::reduce_mean(*comm_, weight_, std::span<T>(out.data(), static_cast<std::size_t>(out.size())));
  return weight_ * form;
}

template <Real T>
std::string DistributedOperator<T>::name() const {
  return "Distributed(" + (local_ ? local_->name() : std::string("no local examples")) + ", " +
         std::to_string(comm_->size()) + " ranks)";
}

template <Real T>
std::unique_ptr<LinearOperator<T>> make_distributed_curvature(
    Curvature kind, const nn::Model<T>& model, const nn::Head<T>& head, const Tensor<T>& x,
    const Tensor<T>& y, nn::Communicator& comm, const nn::Shard& shard, int samples,
    std::uint64_t seed) {
  std::unique_ptr<LinearOperator<T>> local;
  if (shard.local > 0) local = make_curvature(kind, model, head, x, y, samples, seed, shard.offset);
  return std::make_unique<DistributedOperator<T>>(std::move(local), model.num_parameters(), comm,
                                                  shard.weight());
}

template class DistributedOperator<float>;
template class DistributedOperator<double>;
template std::unique_ptr<LinearOperator<float>> make_distributed_curvature<float>(
    Curvature, const nn::Model<float>&, const nn::Head<float>&, const Tensor<float>&,
    const Tensor<float>&, nn::Communicator&, const nn::Shard&, int, std::uint64_t);
template std::unique_ptr<LinearOperator<double>> make_distributed_curvature<double>(
    Curvature, const nn::Model<double>&, const nn::Head<double>&, const Tensor<double>&,
    const Tensor<double>&, nn::Communicator&, const nn::Shard&, int, std::uint64_t);

}  // namespace amari::curvature

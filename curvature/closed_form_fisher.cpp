#include <amari/curvature/closed_form_fisher.hpp>

namespace amari::curvature {

template class ClosedFormFisherOperator<float>;
template class ClosedFormFisherOperator<double>;

}  // namespace amari::curvature

// Chapter 5 of docs/tutorial: the Fisher, the GGN, the Hessian and the empirical Fisher of one
// small model, as dense matrices built column by column from the matrix-free operators
// (curvature/ggn.hpp, curvature/fisher.hpp, curvature/hessian.hpp). Exits with 1 if a relation the
// chapter states does not hold.
#include <cmath>
#include <cstdio>
#include <vector>

#include <amari/amari.hpp>

#include "check.hpp"

using amari::Index;
using amari::Tensor;
namespace nn = amari::nn;
namespace curv = amari::curvature;

namespace {

// [dense]
// The P x P matrix of a curvature operator: column j is A e_j. Only for tiny P (here 21).
std::vector<double> dense(curv::LinearOperator<double>& op) {
  const Index p = op.size();
  std::vector<double> m(static_cast<std::size_t>(p * p));
  Tensor<double> e(amari::Shape{p}), column(amari::Shape{p});
  for (Index j = 0; j < p; ++j) {
    e[j] = 1;
    op.apply(e, column);
    e[j] = 0;
    for (Index i = 0; i < p; ++i) m[static_cast<std::size_t>(i * p + j)] = column[i];
  }
  return m;
}
// [dense]

// ||a - b||_F / ||b||_F
double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]), n += b[i] * b[i];
  return std::sqrt(d / n);
}

}  // namespace

int main() {
  // [setup]
  // A 2-3-3 tanh MLP (P = 21 parameters), softmax cross-entropy, a batch of N = 4 examples.
  nn::Model<double> model(nn::mlp<double>({2, 3, 3}, nn::Act::tanh), 7);
  nn::SoftmaxCrossEntropy<double> head;
  const Tensor<double> x = Tensor<double>::from({4, 2}, {1.0, -0.5, 0.3, 0.8, -1.2, 0.4, 0.7, 0.9});
  const Tensor<double> y = nn::one_hot<double>({0, 2, 1, 2}, 3);

  curv::GgnOperator<double> ggn_op(model, head, x);                       // G = (1/N) sum J^T H_L J
  curv::HessianOperator<double> hessian_op(model, head, x, y);            // H, exact
  curv::EmpiricalFisherOperator<double> ef_op(model, head, x, y);         // (1/N) sum g_n g_n^T
  curv::MonteCarloFisherOperator<double> mc_op(model, head, x, 2000, 1);  // k = 2000 sampled labels
  const auto G = dense(ggn_op), H = dense(hessian_op), EF = dense(ef_op), MC = dense(mc_op);
  // [setup]
  std::printf("P = %lld parameters; relative Frobenius differences:\n",
              static_cast<long long>(model.num_parameters()));
  std::printf("  |MC - G| / |G| = %.4f   |H - G| / |G| = %.4f   |EF - G| / |G| = %.4f\n",
              relative_difference(MC, G), relative_difference(H, G), relative_difference(EF, G));

  // The Fisher is the GGN for this head (SEED-NOTES 3); sampling labels estimates it.
  tutorial::check_true("the Monte-Carlo Fisher with 2000 samples is within 2% of G",
                       relative_difference(MC, G) < 0.02);
  // The Hessian adds the second derivatives of the network weighted by the residuals.
  tutorial::check_true("the Hessian differs from G by more than the size of G",
                       relative_difference(H, G) > 1);
  // The empirical Fisher uses the data labels, not labels drawn from the model.
  tutorial::check_true("the empirical Fisher differs from G by more than half the size of G",
                       relative_difference(EF, G) > 0.5);

  // [empirical]
  // The empirical Fisher is the mean outer product of the per-example gradients.
  const Index p = model.num_parameters();
  std::vector<double> outer(static_cast<std::size_t>(p * p), 0.0);
  for (Index n = 0; n < 4; ++n) {
    Tensor<double> g = model.zeros_like_parameters();
    nn::loss_and_gradient(model, head, x.view(2 * n, amari::Shape{1, 2}).clone(),
                          y.view(3 * n, amari::Shape{1, 3}).clone(), g);
    for (Index i = 0; i < p; ++i)
      for (Index j = 0; j < p; ++j) outer[static_cast<std::size_t>(i * p + j)] += g[i] * g[j] / 4;
  }
  // [empirical]
  tutorial::check_true("EF = (1/N) sum_n g_n g_n^T (to 1e-12)",
                       relative_difference(EF, outer) < 1e-12);

  // [linear]
  // Without a hidden layer the logits are linear in the parameters: then H = G exactly.
  nn::Model<double> linear(nn::mlp<double>({2, 3}), 7);
  curv::GgnOperator<double> linear_ggn(linear, head, x);
  curv::HessianOperator<double> linear_hessian(linear, head, x, y);
  const double linear_difference = relative_difference(dense(linear_hessian), dense(linear_ggn));
  // [linear]
  std::printf("  linear model: |H - G| / |G| = %.2e\n", linear_difference);
  tutorial::check_true("for a linear model H = G (to 1e-12)", linear_difference < 1e-12);
  return tutorial::finish();
}

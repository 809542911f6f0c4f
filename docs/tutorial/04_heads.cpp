// Chapter 4 of docs/tutorial: heads (nn/heads.hpp) and curvature in logit space. For softmax
// cross-entropy on one example with logits z = log(1, 2, 3), so p = softmax(z) = (1/6, 1/3, 1/2),
// and label 2: the loss, its gradient p - y, and H_L a = diag(p) a - p (p . a), checked by hand,
// against the autodiff Hessian of the loss and against the Fisher E_y[s s^T] a of the output
// distribution. Exits with 1 if a number differs from its hand-computed value.
#include <cmath>
#include <cstdio>

#include <amari/amari.hpp>

#include "check.hpp"

using amari::Tensor;

int main() {
  // [setup]
  amari::nn::SoftmaxCrossEntropy<double> head;
  const Tensor<double> z =
      Tensor<double>::from({1, 3}, {std::log(1.0), std::log(2.0), std::log(3.0)});
  const Tensor<double> y = amari::nn::one_hot<double>({2}, 3);  // the label: class 2
  // [setup]
  std::printf("loss and gradient in logit space:\n");
  // [gradient]
  const double loss = head.loss(z, y).item();  // -log p_2
  Tensor<double> grad(amari::Shape{1, 3});
  head.gradient(z, y, grad);  // (p - y) / N, N = 1
  // [gradient]
  tutorial::check_near("loss -log(1/2)", loss, std::log(2.0));
  tutorial::check_tensor("gradient p - y", grad, {1.0 / 6, 1.0 / 3, -1.0 / 2});

  std::printf("H_L a in closed form, for a = (1, 0, 0):\n");
  // [hessian]
  const Tensor<double> a = Tensor<double>::from({1, 3}, {1.0, 0.0, 0.0});
  Tensor<double> hl_a(amari::Shape{1, 3});
  head.hessian_product(z, a, hl_a);  // diag(p) a - p (p . a): O(C), no C x C matrix
  // [hessian]
  // p . a = 1/6, so H_L a = (1/6 - 1/36, -1/3 * 1/6, -1/2 * 1/6) = (5/36, -2/36, -3/36).
  tutorial::check_tensor("H_L a = (5, -2, -3) / 36", hl_a, {5.0 / 36, -2.0 / 36, -3.0 / 36});

  // [autodiff]
  auto loss_of = [&](const auto& logits) { return head.loss(logits, y); };
  const Tensor<double> hv = amari::hvp(loss_of, z, a);  // the Hessian of the loss, by the tape
  // [autodiff]
  tutorial::check_tensor("the autodiff Hessian-vector product agrees", hv,
                         {5.0 / 36, -2.0 / 36, -3.0 / 36});

  std::printf(
      "The Fisher of the output distribution, sum_c p_c s_c (s_c . a) with s_c = e_c - p:\n");
  // [fisher]
  const double p[3] = {1.0 / 6, 1.0 / 3, 1.0 / 2};
  Tensor<double> fisher_a(amari::Shape{1, 3});
  for (int c = 0; c < 3; ++c) {
    Tensor<double> score(amari::Shape{1, 3});
    head.score(z, amari::nn::one_hot<double>({c}, 3), score);  // s_c = e_c - p
    double s_dot_a = 0;
    for (int k = 0; k < 3; ++k) s_dot_a += score[k] * a[k];
    for (int k = 0; k < 3; ++k) fisher_a[k] += p[c] * score[k] * s_dot_a;
  }
  // [fisher]
  tutorial::check_tensor("E_y[s s^T] a equals H_L a", fisher_a, {5.0 / 36, -2.0 / 36, -3.0 / 36});
  tutorial::check_true("softmax cross-entropy: H_L does not depend on the label",
                       !head.hessian_depends_on_targets());
  return tutorial::finish();
}

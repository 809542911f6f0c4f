// K-FAC: Kronecker-factored approximate curvature (Martens & Grosse 2015; SEED-NOTES 5, last
// bullet) for networks that are an nn::Sequential of nn::Linear layers and parameter-free modules
// (activations).
//
// One Linear layer s = x W + b holds the matrix Theta = [W; b] ((in + 1) x out, bias as the last
// row). nn::Linear's flat layout (W (in, out) row-major, then b) is exactly Theta row-major, so the
// flat index of Theta[i, j] is i * out + j. With a = (x, 1) the layer's augmented input and
// delta = dl/ds the back-propagated error of one example, that example's gradient is
// a delta^T, i.e. vec(g)[i * out + j] = a_i delta_j: vec(g) = a (x) delta (Kronecker product, a
// outer). The layer's Fisher block is therefore
//   F_l = E[(a (x) delta)(a (x) delta)^T] = E[a a^T (x) delta delta^T]
//       ~ E[a a^T] (x) E[delta delta^T] = A_l (x) G_l                    (M&G 2015, sec. 3),
// exact when a is one fixed vector (one example), an approximation otherwise. For a row-major
// X, (A (x) G) vec(X) = vec(A X G^T), so (A (x) G)^{-1} vec(X) = vec(A^{-1} X G^{-1}) (symmetric
// G): one (in + 1)^2 x out and one (in + 1) x out^2 GEMM instead of a solve of size (in + 1) out.
// Across layers the Fisher is approximated as block diagonal (sec. 4.2).
//
// Where delta comes from (SEED-NOTES 1 and 3):
//  - true Fisher (default): labels are sampled from the model, y ~ p_theta(.|x), with the head's
//    counter-based sample(z, seed, k) (k = index of the statistics update), and the logit-space
//    error of example i is mu(z_i) - T(y_i) = -score (per example, no 1/N). One reverse sweep over
//    the recorded forward pass, with the Linear outputs as the sweep's inputs, yields delta for
//    every layer at once.
//  - empirical Fisher (true_fisher = false): the same with the data labels. This is NOT the
//    Fisher (SEED-NOTES 1); it shares the gradient's reverse sweep.
//
// A and G are exponential moving averages over steps with weight min(1 - 1/k, decay) on the old
// value at the k-th update (sec. 5: the plain mean while k < 1 / (1 - decay)). The damped inverses
// use factored Tikhonov damping (sec. 6.3): with gamma = sqrt(lambda) and
// pi = sqrt((tr(A) / dim A) / (tr(G) / dim G)),
//   F_l + lambda I  ~  (A + pi gamma I) (x) (G + gamma / pi I),
// and they are refreshed every inverse_update_every steps only (M&G use every 20th iteration), by a
// double-precision Cholesky factorization (dense_solve.hpp).
//
// Cost of one Kfac step on a batch of N (statistics on Ns <= N examples), per Linear layer, in
// flops: forward 2 N in out; gradient sweep ~4 N in out; the sampled-label sweep (true Fisher
// only) ~2 N in out; A and G, Ns ((in+1)^2 + out^2) (symmetric Gram products); preconditioning
// 2 (in+1) out (in+1+out); the loss after the step, 2 N in out. An inverse refresh adds
// 5/3 ((in+1)^3 + out^3) flops in double.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// Options of K-FAC (KroneckerFactors and Kfac). Violations raise ValueError naming the option.
struct KfacOptions {
  double learning_rate = 0.1;     ///< > 0: theta -= learning_rate * step
  double damping = 1e-3;          ///< lambda > 0, factored Tikhonov damping (M&G 2015, sec. 6.3)
  double decay = 0.95;            ///< in [0, 1): EMA weight of the old A, G (capped by 1 - 1/k)
  int inverse_update_every = 10;  ///< >= 1: steps between refreshes of the damped inverses
  /// true: labels sampled from the model (the true Fisher, SEED-NOTES 1). false: the EMPIRICAL
  /// Fisher with the data labels, which is a different matrix (not the Fisher).
  bool true_fisher = true;
  std::uint64_t seed = 0;      ///< for the sampled labels
  Index statistics_batch = 0;  ///< A and G use the first n examples of each batch (0: all)
  double momentum = 0;         ///< in [0, 1): heavy ball on the (clipped) K-FAC step
  /// >= 0; 0 disables. Ba et al. 2017: scale the step by
  /// nu = min(1, sqrt(kl_clip / (lr^2 sum_l <g_l, F_l^{-1} g_l>))), which bounds the KL divergence
  /// the step predicts (lr^2 g^T F^{-1} g / 2 <= kl_clip / 2). Without it, early steps taken with
  /// inverses from the first few batches can diverge when inverse_update_every > 1.
  double kl_clip = 1e-2;
  /// >= 0: L2 penalty (wd / 2) ||theta||^2 added to the objective; its curvature wd joins the
  /// damping (gamma = sqrt(lambda + wd), M&G 2015, sec. 6.3). StepReport losses exclude it.
  double weight_decay = 0;
  bool evaluate_loss_after = true;  ///< StepReport::loss_after costs one more forward pass
};

/// Checks every option of KfacOptions (ValueError naming the first bad option and its value).
void validate(const KfacOptions& options);

/// One Linear layer as K-FAC sees it.
struct KfacLayer {
  std::size_t module_index = 0;  ///< position of the layer in the Sequential
  std::string name;              ///< e.g. "2: Linear(4 -> 3)", for reports and errors
  Index in = 0, out = 0;
  bool bias = false;
  Index offset = 0;  ///< flat offset of the weight; the bias follows it directly
  /// dim A = in (+ 1 with a bias): the rows of the layer's parameter matrix [W; b].
  Index rows() const { return in + (bias ? 1 : 0); }
};

/// The K-FAC curvature model of a network: per Linear layer, the moving averages A_l and G_l and
/// their damped inverses; applies the block-diagonal inverse to flat vectors. Model and head are
/// referenced and must outlive this object; the model's structure must not change.
template <Real T>
class KroneckerFactors {
 public:
  /// ValueError if the model's module is not an nn::Sequential, if one of its modules has
  /// parameters and is not an nn::Linear (naming the module), or if it has no Linear layer.
  KroneckerFactors(const nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options = {});
  KroneckerFactors(const KroneckerFactors&) = delete;
  KroneckerFactors& operator=(const KroneckerFactors&) = delete;
  KroneckerFactors(KroneckerFactors&&) noexcept;
  KroneckerFactors& operator=(KroneckerFactors&&) noexcept;
  ~KroneckerFactors();

  /// Adds the statistics of a batch (inputs (N, D), targets (N, C); ShapeError otherwise) at the
  /// model's current parameters to the moving averages of A and G; returns the mean loss. With
  /// `gradient` (flat, length P), also writes the gradient of the mean loss there, from the same
  /// recorded forward pass. Cost: one taped forward pass and one or two reverse sweeps (see the
  /// file comment). ValueError if the loss is not finite; the factors are then unchanged.
  double update(const Tensor<T>& inputs, const Tensor<T>& targets, Tensor<T>* gradient = nullptr);
  /// Recomputes the damped inverses (A_l + pi_l sqrt(lambda) I)^{-1} and
  /// (G_l + sqrt(lambda) / pi_l I)^{-1} from the current averages. If a Cholesky factorization
  /// fails, both dampings of that layer are multiplied by 10 (up to 6 times); then ValueError
  /// naming the layer. ValueError also for a non-finite factor, lambda <= 0 or no update yet.
  /// Cost: 5/3 (rows^3 + out^3) flops per layer, in double.
  void update_inverses(double lambda);
  /// out = blockdiag_l((A_l + ...)^{-1} (x) (G_l + ...)^{-1}) g, i.e. U_l = A_inv G_mat G_inv for
  /// each layer's (rows, out) block. g and out flat of length P (ShapeError); out may be g. Cost:
  /// 2 rows out (rows + out) flops per layer. ValueError before the first update_inverses().
  void precondition(const Tensor<T>& g, Tensor<T>& out);

  const std::vector<KfacLayer>& layers() const;
  /// The moving averages A_l ((rows, rows)) and G_l ((out, out)), exactly symmetric.
  const Tensor<T>& factor_a(std::size_t layer) const;
  const Tensor<T>& factor_g(std::size_t layer) const;
  /// The damped inverses of the last update_inverses() (undefined before).
  const Tensor<T>& inverse_a(std::size_t layer) const;
  const Tensor<T>& inverse_g(std::size_t layer) const;
  /// pi_l of the last update_inverses().
  double pi(std::size_t layer) const;
  /// lambda actually used for layer l at the last update_inverses() (> lambda after retries).
  double damping_used(std::size_t layer) const;
  /// Number of update() calls so far (the k of the sampled labels and of the EMA weight).
  std::uint64_t updates() const;
  bool has_inverses() const;
  Index num_parameters() const;
  const KfacOptions& options() const;
  /// "K-FAC(true Fisher, 2 layers, P=31)" or "K-FAC(EMPIRICAL Fisher, ...)".
  std::string name() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

/// K-FAC as an optimizer: at every step, update the factors and the gradient from one recorded
/// forward pass, refresh the inverses every inverse_update_every steps (and at the first), then
///   d = F_kfac^{-1} (g + wd theta),  d *= nu (KL clip),  v = momentum v + d,  theta -= lr v.
/// StepReport: loss, loss_after, gradient_norm (of the mean loss, without weight decay), lambda,
/// step_scale = nu (0 if the step was undone because the loss after it was not finite),
/// step_norm; rho, predicted_reduction and the CG fields stay 0.
template <Real T>
class Kfac {
 public:
  /// The model is updated in place by step(); model and head must outlive the optimizer.
  /// ValueError for bad options or an unsupported model (see KroneckerFactors).
  Kfac(nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options = {});
  /// One step on the minibatch (inputs (N, D), targets (N, C)).
  StepReport step(const Tensor<T>& inputs, const Tensor<T>& targets);
  const KfacOptions& options() const { return factors_.options(); }
  /// The curvature model (e.g. for a KfacPreconditioner).
  KroneckerFactors<T>& factors() { return factors_; }
  const KroneckerFactors<T>& factors() const { return factors_; }
  /// Steps taken so far.
  std::uint64_t steps() const { return steps_; }
  /// The momentum buffer v (undefined without momentum or before the first step).
  const Tensor<T>& velocity() const { return velocity_; }

 private:
  nn::Model<T>* model_;
  const nn::Head<T>* head_;
  KroneckerFactors<T> factors_;
  Tensor<T> velocity_;
  std::uint64_t steps_ = 0;
};

/// z = F_kfac^{-1} r with the current damped inverses of a KroneckerFactors (borrowed: it must
/// outlive the preconditioner, and its inverses must have been computed): an SPD preconditioner
/// for conjugate_gradient on a curvature operator (e.g. the damped GGN of natural gradient / HF).
/// Cost per application: KroneckerFactors::precondition.
template <Real T>
class KfacPreconditioner final : public Preconditioner<T> {
 public:
  explicit KfacPreconditioner(KroneckerFactors<T>& factors) : factors_(&factors) {}
  Index size() const override { return factors_->num_parameters(); }
  void apply(const Tensor<T>& r, Tensor<T>& z) override;
  /// "KfacPreconditioner(<factors name>)".
  std::string name() const override { return "KfacPreconditioner(" + factors_->name() + ")"; }

 private:
  KroneckerFactors<T>* factors_;
};

extern template class KroneckerFactors<float>;
extern template class KroneckerFactors<double>;
extern template class Kfac<float>;
extern template class Kfac<double>;
extern template class KfacPreconditioner<float>;
extern template class KfacPreconditioner<double>;

}  // namespace amari::curvature

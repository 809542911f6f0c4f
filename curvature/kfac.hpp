// K-FAC: Kronecker-factored approximate curvature (Martens & Grosse 2015; SEED-NOTES 5, last
// bullet) for any model whose Linear and Conv2d layers report themselves through layer taps
// (nn::LayerTap): inside a Sequential, a Residual, nested containers or a forward function that
// calls context.tap(). No layer class is inspected; K-FAC records the model's forward pass once
// with Model::forward_observed (in a Kfac step, the training pass Model::forward_updating_state
// with the same observer) and reads, for every tapped layer l, its input value a_l and its output
// variable s_l, and finds its parameters through LayerTap::weight_index in Model::layout().
//
// One layer s = a W + b holds the matrix Theta = [W; b] ((in + 1) x out, bias as the last row).
// Linear's flat layout (W (in, out) row-major, then b) and Conv2d's (W (KH, KW, C_in, C_out)
// row-major, then b) are exactly Theta row-major with in = KH KW C_in for a convolution; this is
// checked once from the layout (Error otherwise). With a = (x, 1) the augmented input and
// delta = dl/ds the back-propagated error of one example, that example's gradient is a delta^T,
// i.e. vec(g)[i * out + j] = a_i delta_j: vec(g) = a (x) delta (Kronecker product, a outer). The
// layer's Fisher block is therefore
//   F_l = E[(a (x) delta)(a (x) delta)^T] = E[a a^T (x) delta delta^T]
//       ~ E[a a^T] (x) E[delta delta^T] = A_l (x) G_l                    (M&G 2015, sec. 3),
// exact when a is one fixed vector (one example), an approximation otherwise. For a row-major
// X, (A (x) G) vec(X) = vec(A X G^T), so (A (x) G)^{-1} vec(X) = vec(A^{-1} X G^{-1}) (symmetric
// G): one (in + 1)^2 x out and one (in + 1) x out^2 GEMM instead of a solve of size (in + 1) out.
// Across layers the Fisher is approximated as block diagonal (sec. 4.2).
//
// Convolutions (Grosse & Martens 2016, "KFC"): the weight is shared over the T = OH OW output
// positions; a_{n,t} is the im2col patch of position t of example n (length KH KW C_in, in the
// weight's (kh, kw, c_in) order, zeros where the window hangs over the padding; then 1 for the
// bias) and delta_{n,t} the error at output pixel (n, oh, ow). Two approximations of Eschenhagen et
// al. 2023 ("Kronecker-Factored Approximate Curvature for Modern Neural Network Architectures",
// NeurIPS, sec. 3; the normalization of curvlinops' KFACLinearOperator):
//  - expand (default; KFC's approximation): positions are treated like extra examples,
//      A = 1/(N T) sum_n sum_t a_{n,t} a_{n,t}^T,     G = 1/N sum_n sum_t delta_{n,t}
//      delta_{n,t}^T;
//  - reduce: positions are summed out before the outer products,
//      A = 1/N sum_n abar_n abar_n^T, abar_n = 1/T sum_t a_{n,t},
//      G = 1/N sum_n (sum_t delta_{n,t})(sum_t delta_{n,t})^T.
// With T = 1 both are the Linear formulas (exact for one example). Grouped convolutions
// (groups > 1) are refused (ValueError naming the layer).
//
// Where delta comes from (SEED-NOTES 1 and 3), KfacOptions::fisher:
//  - sampled (default, the true Fisher, Monte Carlo): labels are sampled from the model,
//    y ~ p_theta(.|x), with the head's counter-based sample(z, seed, k) (k = index of the
//    statistics update), and the logit-space error of example i is mu(z_i) - T(y_i) = -score (per
//    example, no 1/N). One reverse sweep of the recorded forward pass, with the tapped outputs s_l
//    as the sweep's inputs, yields delta for every layer at once.
//  - kflr (Botev et al. 2017, "Practical Gauss-Newton optimisation for deep learning"): the exact
//    expectation over labels instead of one sample: with a factor B_i B_i^T = H_L(z_i) (the head's
//    closed-form logit Hessian, which is F_R(z_i), SEED-NOTES 3), each of the C columns of B_i is
//    back-propagated (C reverse sweeps) and G = 1/N sum_i sum_c delta_{i,c} delta_{i,c}^T. This is
//    the Kronecker factorization of the GGN's blocks (exact for one example); B_i is a Cholesky
//    factor of H_L(z_i), assembled from C head.hessian_product() calls (semi-definite: a pivot at
//    roundoff level gives a zero column).
//  - empirical: the same with the data labels. This is NOT the Fisher (SEED-NOTES 1); it shares
//    the gradient's reverse sweep.
//
// Parameters in no tapped layer (batch/layer norm scales and shifts, embeddings, parameters of a
// forward function that does not tap) are left out of the Kronecker blocks. Their curvature block
// is modelled as c I with c = KfacOptions::untapped_curvature (default 1): the preconditioner
// applies the damped inverse (c + lambda)^{-1} to them (lambda including the weight decay), i.e. a
// plain gradient step for c = 1 (SGD with K-FAC's learning rate, KL clip and momentum), and the
// pure-damping step g / lambda for c = 0; KfacOperator applies c I to them. A model whose forward
// pass taps no layer raises ValueError at the first update.
//
// The tapped layers of the first update define the blocks; every later forward pass must tap the
// same layers in the same order (ValueError otherwise), and a weight tapped twice in one pass
// (shared weights) is refused.
//
// A and G are exponential moving averages over steps with weight min(1 - 1/k, decay) on the old
// value at the k-th update (sec. 5: the plain mean while k < 1 / (1 - decay)). The damped inverses
// use factored Tikhonov damping (sec. 6.3): with gamma = sqrt(lambda) and
// pi = sqrt((tr(A) / dim A) / (tr(G) / dim G)),
//   F_l + lambda I  ~  (A + pi gamma I) (x) (G + gamma / pi I),
// and they are refreshed every inverse_update_every steps only (M&G use every 20th iteration), by a
// double-precision Cholesky factorization (dense_solve.hpp). A factor A built from few statistics
// rows so far (r <= rows / 2, e.g. a wide first Linear with 32 statistics examples per update) is
// inverted from those rows instead, in the Woodbury form of KfacOptions::low_rank_inverses
// (curvature/detail/factor_rows.hpp): the same damped inverse up to rounding, from an r x r
// Cholesky factorization.
//
// EKFAC (George, Laurent, Bouthillier, Ballas, Vincent 2018, "Fast Approximate Natural Gradient
// Descent in a Kronecker-factored Eigenbasis", NeurIPS; KfacOptions::approximation = ekfac): with
// A = U_A diag(.) U_A^T and G = U_G diag(.) U_G^T, K-FAC's block is diagonal in the eigenbasis
// U_A (x) U_G with eigenvalues lambda_A,i lambda_G,j. EKFAC keeps that basis and replaces the
// eigenvalues by the second moments of the per-example gradients in it,
//   s_ij = E_n[ (U_A^T g_n U_G)_ij^2 ],     F_l ~ (U_A (x) U_G) diag(vec(s)) (U_A (x) U_G)^T,
// which is the diagonal (in that basis) closest to the layer's Fisher block in Frobenius norm
// (George et al., sec. 3.2 and Lemma 1; exact K-FAC eigenvalues for one example). g_n is example
// n's gradient of the block: a_n delta_n^T for Linear (so (U_A^T a_n)(U_G^T delta_n)^T, one GEMM
// over the batch), and for Conv2d the exact per-example gradient sum_t a_{n,t} delta_{n,t}^T of the
// shared weight (one (rows x T)(T x out) GEMM per example), whichever of expand / reduce defines
// the factors A and G; with kflr, sum_c over the C columns of B_i, with empirical, the data labels'
// gradients (the same choice of delta as for K-FAC). The eigenbases are recomputed (in double,
// symmetric_eigen of dense_solve.hpp) from the current averages A and G by update() itself at
// its 1st, (1 + inverse_update_every)-th, ... call, because the scalings in a new basis need that
// batch's per-example gradients; s is then restarted from that batch and, at every later update(),
// moved as a moving average with weight min(1 - 1/k, decay) on the old value (k = updates since
// the basis changed; George et al., Algorithm 1). The damped inverse is
// U (diag(s) + lambda I)^{-1} U^T (Tikhonov damping, no factored pi); update_inverses(lambda)
// only sets lambda, and precondition() uses the current s.
//
// Guarantees. The statistics of a batch are computed and checked before anything is folded in: a
// batch whose contribution to some A_l or G_l (or EKFAC's s_l) is not finite (e.g. one input of
// 1e20 in float) raises ValueError naming the layer and leaves every average as it was; every
// public mutating call (update, update_inverses, reset_statistics, Kfac::step) either succeeds or
// throws leaving the object (and, for Kfac::step, the model's parameters, step and state) as
// before. reset_statistics() forgets all statistics (the object is as constructed).
//
// Checkpoints: Kfac::save_state() / load_state() (kind "kfac", nn/checkpoint.hpp) store the
// averages, the current inverses (or EKFAC's bases and scalings), pi_l, the damping used, the
// counters and the momentum buffer (adaptive mode: lambda and the previous update), so a resumed
// run continues bitwise; the layer plan is derived again from the model's layout and checked
// against the stored shapes.
//
// Data-parallel (docs/scaling.md): Kfac(model, head, options, comm) reduces the loss, the gradient
// and every layer's batch statistics over the ranks in a fixed order (sampled labels keyed by the
// global example index; of the symmetric A and G only the upper triangles travel) and spreads the
// inverse refreshes (EKFAC: the eigendecompositions) over the ranks, layer l on rank l mod k
// (KAISA, Pauloski et al. 2021), broadcasting the results: every rank holds bitwise the same
// factors and inverses (EKFAC: bases and scalings), and k ranks equal one process on the union up
// to rounding.
//
// Cost of one Kfac step on a batch of N (statistics on Ns <= N examples), per layer with rows =
// in + 1 and T output positions (T = 1 for Linear), in flops: forward 2 N T in out; gradient sweep
// ~4 N T in out; the sampled-label sweep ~2 N T in out (C of them for kflr, none for empirical);
// A and G, Ns T (rows^2 + out^2) (symmetric Gram products over the im2col rows; reduce: Ns instead
// of Ns T); preconditioning 2 rows out (rows + out) (4 r rows out + 2 rows out^2 for A's inverse
// in the Woodbury form of r rows); the loss after the step, 2 N T in out. An inverse refresh adds
// 5/3 (rows^3 + out^3) flops in double (about 4 r^2 rows + r^3 + 5/3 out^3 in the Woodbury
// form).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <amari/curvature/linear_operator.hpp>
#include <amari/curvature/second_order.hpp>
#include <amari/nn/checkpoint.hpp>
#include <amari/nn/communicator.hpp>
#include <amari/nn/heads.hpp>
#include <amari/nn/model.hpp>

namespace amari::curvature {

/// Where K-FAC's errors delta come from (see the file comment and SEED-NOTES 1, 3).
enum class KfacFisher {
  sampled,   ///< the true Fisher, Monte Carlo: labels sampled from the model (one sweep)
  kflr,      ///< exact H_L(z) = F_R(z): the GGN's Kronecker factors (Botev et al. 2017; C sweeps)
  empirical  ///< the EMPIRICAL Fisher with the data labels: a different matrix, not the Fisher
};

/// How a convolution's shared weight is factored (Eschenhagen et al. 2023, sec. 3).
enum class KfacConv {
  expand,  ///< output positions as extra examples (Grosse & Martens 2016)
  reduce   ///< positions summed out first (cheaper: Ns instead of Ns T rows)
};

/// Which curvature model of a layer's block: K-FAC's Kronecker product or EKFAC's rescaled
/// eigenbasis.
enum class KfacApproximation {
  kfac,  ///< A (x) G (Martens & Grosse 2015)
  ekfac  ///< (U_A (x) U_G) diag(s) (U_A (x) U_G)^T (George et al. 2018; see the file comment)
};

/// Options of K-FAC (KroneckerFactors and Kfac). Violations raise ValueError naming the option.
struct KfacOptions {
  double learning_rate = 0.1;  ///< > 0: theta -= learning_rate * step (unused if adaptive)
  /// lambda > 0, factored Tikhonov damping (M&G 2015, sec. 6.3); if adaptive, the initial lambda,
  /// in [min_damping, max_damping].
  double damping = 1e-3;
  double decay = 0.95;            ///< in [0, 1): EMA weight of the old A, G (capped by 1 - 1/k)
  int inverse_update_every = 10;  ///< >= 1: steps between refreshes of the damped inverses
  /// >= 1, Kfac only: steps between updates of the factor statistics A and G (and EKFAC's
  /// scalings), at steps 0, every, 2 every, ... (kfac-pytorch's fac_update_freq). The other steps
  /// record only the loss and gradient, so they cost an Adam step plus the preconditioning; the
  /// sampled labels and the moving averages count updates, not steps.
  int statistics_update_every = 1;
  /// Where delta comes from: sampled labels (the true Fisher, default), the exact logit Hessian
  /// (KFLR) or the data labels (the EMPIRICAL Fisher, a different matrix).
  KfacFisher fisher = KfacFisher::sampled;
  std::uint64_t seed = 0;      ///< for the sampled labels
  Index statistics_batch = 0;  ///< A and G use the first n examples of each batch (0: all)
  double momentum = 0;         ///< in [0, 1): heavy ball on the (clipped) K-FAC step; 0 if adaptive
  /// >= 0; 0 disables; unused if adaptive. Ba et al. 2017: scale the step by
  /// nu = min(1, sqrt(kl_clip / (lr^2 sum_l <g_l, F_l^{-1} g_l>))), which bounds the KL divergence
  /// the step predicts (lr^2 g^T F^{-1} g / 2 <= kl_clip / 2). Without it, early steps taken with
  /// inverses from the first few batches can diverge when inverse_update_every > 1.
  double kl_clip = 1e-2;
  /// >= 0: L2 penalty (wd / 2) ||theta||^2 added to the objective; its curvature wd joins the
  /// damping (gamma = sqrt(lambda + wd), M&G 2015, sec. 6.3). StepReport losses exclude it.
  double weight_decay = 0;
  bool evaluate_loss_after = true;   ///< StepReport::loss_after costs one more forward pass
  KfacConv conv = KfacConv::expand;  ///< convolution blocks: expand or reduce
  /// >= 0: parameters in no tapped layer get the curvature block c I (preconditioned by
  /// (c + lambda)^{-1}); 1 gives them plain gradient steps (see the file comment).
  double untapped_curvature = 1;
  /// K-FAC (default) or EKFAC (eigenvalue-corrected, George et al. 2018).
  KfacApproximation approximation = KfacApproximation::kfac;
  /// A factor A_l built from r <= rows / 2 statistics rows so far (a wide layer with few
  /// statistics examples: train_cnn's first Linear gets 32 rows per update against rows = 3137)
  /// keeps those rows, and its damped inverse is built in the Woodbury form
  /// (A + d I)^{-1} = (I - C^T (d I + C C^T)^{-1} C) / d, C the rows scaled by their weights in the
  /// moving average: an r x r Cholesky inverse instead of a rows x rows one, and 4 r rows out
  /// instead of 2 rows^2 out flops per preconditioning. The same matrix up to rounding (A_l's
  /// average is kept as well). Once a layer's rows would exceed rows / 2 they are dropped and its
  /// inverse is dense from the next refresh on. False: always dense. Not used with EKFAC or the
  /// data-parallel Kfac (whose statistics travel as reduced matrices).
  bool low_rank_inverses = true;
  /// Adaptive mode (M&G 2015, secs. 6.5 and 7; kfac-jax's use_adaptive_learning_rate,
  /// use_adaptive_momentum and use_adaptive_damping): the learning rate alpha and the momentum mu
  /// of every step minimize the exact quadratic model of the objective, and the damping lambda
  /// (starting at `damping`) follows the Levenberg-Marquardt rule; see the Kfac class comment.
  /// learning_rate and kl_clip are then not used, and momentum must be 0 (mu is computed).
  bool adaptive = false;
  /// >= 1, adaptive mode only: T1, the steps between Levenberg-Marquardt updates of lambda
  /// (M&G 2015, sec. 6.5); each multiplies or divides lambda by (19/20)^T1.
  int damping_adaptation_every = 5;
  double min_damping = 1e-8;  ///< > 0, adaptive mode: lower bound of lambda
  double max_damping = 1e8;   ///< >= min_damping, adaptive mode: upper bound of lambda
};

/// Checks every option of KfacOptions (ValueError naming the first bad option and its value).
void validate(const KfacOptions& options);
/// A fingerprint of every option, which all ranks of a data-parallel Kfac must agree on
/// (Communicator::agree).
std::uint64_t options_fingerprint(const KfacOptions& options);

/// The kind of a tapped layer.
enum class KfacLayerKind { linear, conv2d };

/// One tapped layer (Linear or Conv2d) as K-FAC sees it: its block [W; b], a (rows, out) row-major
/// matrix at `offset` in the flat parameter vector.
struct KfacLayer {
  KfacLayerKind kind = KfacLayerKind::linear;
  std::size_t weight_index = 0;  ///< index of the weight in Model::layout() (the bias is next)
  std::string name;              ///< e.g. "2: Linear(4 -> 3)", for reports and errors
  /// Inputs per row of the block without the bias: in features, or KH KW C_in (a patch).
  Index in = 0;
  Index out = 0;  ///< out features or C_out
  bool bias = false;
  Index offset = 0;                   ///< flat offset of the weight; the bias follows it directly
  std::array<Index, 2> kernel{1, 1};  ///< conv2d only: (KH, KW)
  Conv2dOptions conv;                 ///< conv2d only
  /// dim A = in (+ 1 with a bias): the rows of the layer's parameter matrix [W; b].
  Index rows() const { return in + (bias ? 1 : 0); }
};

/// The augmented input rows [a, 1] (the 1 only with a bias) of examples [n0, n1) of a tapped
/// layer, row-major into `rows` (resized; row stride L.rows()): one row per example for Linear;
/// for Conv2d one per example and output position t = oh OW + ow, the im2col patch in the
/// weight's (kh, kw, c_in) order with zeros over the padding. `input` is a_l, `output_shape` the
/// shape of s_l. Returns the number of rows. Cost: (n1 - n0) T rows copies.
template <Real T>
Index layer_input_rows(const KfacLayer& L, const Tensor<T>& input, const Shape& output_shape,
                       Index n0, Index n1, std::vector<T>& rows);

/// The K-FAC curvature model of a network: per tapped layer (Linear or Conv2d, found by layer
/// taps), the moving averages A_l and G_l and their damped inverses; applies the block-diagonal
/// inverse to flat vectors. Model and head are referenced and must outlive this object; the model's
/// structure must not change. The blocks are defined by the layers tapped in the first update().
///
/// Invariants: layers() is empty exactly until the first successful update() (or after
/// reset_statistics()); then every layer has a finite, exactly symmetric A_l (rows x rows) and G_l
/// (out x out); has_inverses() implies an inverse (or, for EKFAC, a basis and scalings) of the
/// right shape for every layer, computed from the current averages or from those of an earlier
/// update (refreshes are periodic). The accessors hand out const references: no caller can write
/// into the statistics, and every mutating call (update, update_inverses, load through Kfac) is
/// all or nothing. Not copyable; movable.
template <Real T>
class KroneckerFactors {
 public:
  /// ValueError for bad options. The model's layers are discovered by the first update().
  KroneckerFactors(const nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options = {});
  KroneckerFactors(const KroneckerFactors&) = delete;
  KroneckerFactors& operator=(const KroneckerFactors&) = delete;
  KroneckerFactors(KroneckerFactors&&) noexcept;
  KroneckerFactors& operator=(KroneckerFactors&&) noexcept;
  ~KroneckerFactors();

  /// Adds the statistics of a batch (inputs (N, ...) as the model takes them, targets (N, C);
  /// ShapeError otherwise) at the model's current parameters to the moving averages of A and G
  /// (and EKFAC's scalings, recomputing the eigenbases at the 1st, (1 + inverse_update_every)-th,
  /// ... update); returns the mean loss. With `gradient` (flat, length P; ShapeError otherwise),
  /// also writes the gradient of the mean loss there, from the same recorded forward pass. Cost:
  /// one taped forward pass and one (empirical), two (sampled) or C + 1 (kflr) reverse sweeps
  /// (see the file comment). Strong guarantee: on any error the statistics and *gradient are
  /// unchanged. ValueError if the loss or a layer's batch statistics are not finite (naming the
  /// layer and factor), if the forward pass taps no layer, taps a grouped convolution or a weight
  /// twice, or (after the first update) taps other layers than the first time; Error if a tapped
  /// layer's [W; b] is not contiguous or the forward pass fails with a non-amari logic error.
  double update(const Tensor<T>& inputs, const Tensor<T>& targets, Tensor<T>* gradient = nullptr);
  /// Data-parallel update (collective; docs/scaling.md): inputs and targets are this rank's rows
  /// of a batch split over the ranks in rank order. The loss and gradient are the union's means
  /// (weights n_r / N, as nn::loss_and_gradient(..., comm, shard)), each layer's batch statistics
  /// A, G (and EKFAC's scalings) the union's (weights ns_r / Ns, with statistics_batch spread over
  /// the ranks by nn::Shard::spread), all reduced in rank order: every rank holds bitwise the same
  /// averages. Sampled labels are keyed by the example's global index in the statistics subset, so
  /// the result equals one process's on the union ordered as NaturalGradient's curvature_batch
  /// (the spread rows first), to rounding. Every rank must hold at least one statistics row
  /// (ValueError on every rank otherwise). EKFAC's eigenbases, when update() recomputes them, are
  /// computed for layer l on rank l mod k and broadcast (KAISA-style, as update_inverses with a
  /// communicator); a failed decomposition on any rank is an Error on every rank. Cost: update()'s
  /// on this rank's rows (EKFAC: with 1/k of the decompositions), one allgather of 8 bytes and
  /// allreduces of 1 value (the loss), P values (only with a gradient) and
  /// sum_l (rows (rows + 1) + out (out + 1)) / 2 values (the upper triangles of A and G; EKFAC: also
  /// sum_l rows out); EKFAC at a new basis, one more allgather of 8 bytes and one broadcast of
  /// rows^2 + out^2 values of T per layer.
  double update(const Tensor<T>& inputs, const Tensor<T>& targets, Tensor<T>* gradient,
                nn::Communicator& comm);
  /// K-FAC: recomputes the damped inverses (A_l + pi_l sqrt(lambda) I)^{-1} and
  /// (G_l + sqrt(lambda) / pi_l I)^{-1} from the current averages. If a Cholesky factorization
  /// fails, both dampings of that layer are multiplied by 10 (up to 6 times); then ValueError
  /// naming the layer. ValueError also for a non-finite factor, lambda <= 0 or no update yet.
  /// Cost: 5/3 (rows^3 + out^3) flops per layer, in double (A's part 4 r^2 rows + r^3 in the
  /// Woodbury form of KfacOptions::low_rank_inverses, r <= rows / 2). EKFAC: sets the damping of
  /// (s + lambda)^{-1} (the eigenbases and scalings come from update()); O(1). Strong guarantee.
  void update_inverses(double lambda);
  /// Data-parallel update_inverses (collective, KAISA-style; Pauloski et al. 2021): layer l is
  /// factored on rank l mod k only, then broadcast from there, so every rank holds bitwise the same
  /// inverses for 1/k of the work. A failure on any rank raises ValueError on every rank. Cost per
  /// rank: 5/3 (rows^3 + out^3) flops for its layers; one allgather of 8 bytes and two broadcasts
  /// per layer (rows^2 + out^2 values of T and two doubles). EKFAC: as update_inverses(lambda).
  void update_inverses(double lambda, nn::Communicator& comm);
  /// Forgets every statistic: the averages, inverses, EKFAC bases and scalings, the update count
  /// and the layers found by the first update, so the object is as constructed (the next update()
  /// starts the averages afresh and draws the sampled labels of update 0 again). For recovering
  /// from statistics that no longer describe the model. Cost O(1); never throws.
  void reset_statistics() noexcept;
  /// out = blockdiag_l((A_l + ...)^{-1} (x) (G_l + ...)^{-1}) g, i.e. U_l = A_inv G_mat G_inv for
  /// each layer's (rows, out) block (EKFAC: U_A ((U_A^T G_mat U_G) / (s + lambda)) U_G^T), and
  /// g_i / (untapped_curvature + lambda) for every parameter in no tapped layer. g and out flat of
  /// length P (ShapeError); out may be g. Cost: 2 rows out (rows + out) flops per layer (4 r rows
  /// out + 2 rows out^2 with A's inverse in the Woodbury form of r rows; EKFAC: twice the dense
  /// figure).
  /// ValueError before the first update_inverses().
  void precondition(const Tensor<T>& g, Tensor<T>& out);

  /// The tapped layers, in the order of the first update's forward pass (empty before it).
  const std::vector<KfacLayer>& layers() const;
  /// Flat (offset, length) ranges of the parameters in no tapped layer (empty before the first
  /// update), in flat order.
  const std::vector<std::pair<Index, Index>>& untapped() const;
  /// The moving average A_l ((rows, rows)), exactly symmetric.
  const Tensor<T>& factor_a(std::size_t layer) const;
  /// The moving average G_l ((out, out)), exactly symmetric.
  const Tensor<T>& factor_g(std::size_t layer) const;
  /// The damped inverse of A_l of the last update_inverses() (undefined before); a (rows, rows)
  /// matrix built from the Woodbury form where the refresh used it (see inverse_a_rank).
  Tensor<T> inverse_a(std::size_t layer) const;
  /// r of the Woodbury form of A_l's damped inverse of the last update_inverses()
  /// (KfacOptions::low_rank_inverses), 0 where that inverse is a dense (rows, rows) matrix.
  Index inverse_a_rank(std::size_t layer) const;
  /// The damped inverse of G_l of the last update_inverses() (undefined before).
  const Tensor<T>& inverse_g(std::size_t layer) const;
  /// EKFAC: the eigenvectors U_A of A_l ((rows, rows), column i for the i-th smallest eigenvalue)
  /// the current scalings are expressed in; undefined for K-FAC.
  const Tensor<T>& eigenvectors_a(std::size_t layer) const;
  /// EKFAC: the eigenvectors U_G of G_l ((out, out)); undefined for K-FAC.
  const Tensor<T>& eigenvectors_g(std::size_t layer) const;
  /// EKFAC: the scalings s_l ((rows, out), s[i * out + j] for the basis vector U_A e_i (x) U_G
  /// e_j); undefined for K-FAC.
  const Tensor<T>& scalings(std::size_t layer) const;
  /// pi_l of the last update_inverses() (1 for EKFAC).
  double pi(std::size_t layer) const;
  /// lambda actually used for layer l at the last update_inverses() (> lambda after retries).
  double damping_used(std::size_t layer) const;
  /// Number of update() calls so far (the k of the sampled labels and of the EMA weight).
  std::uint64_t updates() const;
  /// True once update_inverses() has succeeded.
  bool has_inverses() const;
  /// P, the number of parameters of the model.
  Index num_parameters() const;
  /// The options given at construction.
  const KfacOptions& options() const;
  /// "K-FAC(true Fisher, 2 layers, P=31)", "K-FAC(KFLR, ...)" or "K-FAC(EMPIRICAL Fisher, ...)"
  /// ("EKFAC(...)" for EKFAC); ", U untapped" is appended when parameters are left out of the
  /// blocks. The layer accessors above raise ValueError for an index >= layers().size().
  std::string name() const;

 private:
  template <Real>
  friend class Kfac;
  struct Statistics;
  struct State;
  // Checkpoints (Kfac::save_state / load_state): the statistics as named entries of `state`, and
  // back, checked against the model (ValueError naming the entry or layer; nothing is changed).
  void save_statistics(nn::OptimizerState<T>& state) const;
  std::unique_ptr<Statistics> load_statistics(const nn::OptimizerState<T>& state) const;
  // The updates of one process (comm null) or of this rank's rows; `shard` this rank's rows of
  // the batch (nn::shard_of), `used` its statistics rows (shard.spread(statistics_batch)). With
  // `training_step` (Kfac::step: the model itself), the record is the step's forward pass over
  // all N rows and moves the running statistics once, as a plain training pass would; the
  // statistics still read only the first ns rows of that record.
  double update_impl(const Tensor<T>& inputs, const Tensor<T>& targets, Tensor<T>* gradient,
                     nn::Communicator* comm, const nn::Shard& shard, const nn::Shard& used,
                     nn::Model<T>* training_step = nullptr);
  void update_inverses_impl(double lambda, nn::Communicator* comm);
  // Kfac::step's rollback: a copy of the statistics (O(layers): tensors are never written in
  // place once stored, so sharing their storage is a snapshot), and putting one back.
  std::unique_ptr<Statistics> snapshot() const;
  void restore(std::unique_ptr<Statistics> saved) noexcept;
  std::unique_ptr<State> s_;
};

/// What the adaptive mode (KfacOptions::adaptive) adds to a K-FAC step's report.
struct KfacAdaptiveReport {
  double predicted_reduction = 0;  ///< -M(s delta): the decrease the exact quadratic model promises
  std::optional<double> rho;       ///< reduction ratio; empty when the loss after was not evaluated
  double momentum = 0;             ///< mu of this step (alpha is StepReport::step_scale)
};

/// What Kfac::step returns (see Kfac for each field's meaning in each mode).
struct KfacReport : StepReport {
  std::optional<KfacAdaptiveReport> adaptive;  ///< set in the adaptive mode only
  /// StepReport's line, with "| rho 0.82 mu 0.31" in the adaptive mode.
  std::string str() const;
};

/// K-FAC as an optimizer: the damped-step pipeline of NaturalGradient and HessianFree
/// (DampedStepState in second_order.hpp) with K-FAC as its step source. At every step, update the
/// factors (every statistics_update_every steps) and the gradient from one recorded forward pass,
/// refresh the inverses every inverse_update_every steps (and at the first), then
///   d = F_kfac^{-1} (g + wd theta),  d *= nu (KL clip),  v = momentum v + d,  theta -= s lr v
/// (s = step_multiplier(), 1 unless set), with lambda fixed at KfacOptions::damping; the loss
/// after the step (evaluate_loss_after) guards against a step into NaN/inf, which is undone.
/// Adaptive mode (KfacOptions::adaptive; M&G 2015, secs. 6.5 and 7): with g the gradient of the
/// objective h (mean loss + (wd / 2) ||theta||^2) and lambda the current damping (the inverses are
/// refreshed with lambda + wd), the K-FAC direction Delta = -F_kfac^{-1} g is combined with the
/// previous update delta_0 as delta = alpha Delta + mu delta_0, where (alpha, mu) minimize the
/// quadratic model
///   M(delta) = g^T delta + 1/2 delta^T (F + (lambda + wd) I) delta
/// with F the exact GGN (= the Fisher for amari's heads, SEED-NOTES 3) at theta on the statistics
/// rows (statistics_batch; data-parallel: the union of the ranks' statistics rows, reduced by a
/// DistributedOperator): the 2 x 2 system of M&G 2015, sec. 7,
///   [Delta^T C Delta, Delta^T C delta_0; delta_0^T C Delta, delta_0^T C delta_0] [alpha; mu]
///     = -[g^T Delta; g^T delta_0],   C = F + (lambda + wd) I.
/// Without a previous update (first step, after a step that was undone) or when the system is
/// singular, mu = 0 and alpha = -g^T Delta / Delta^T C Delta. Then theta += s delta and delta_0 =
/// s delta. Every T1 = damping_adaptation_every steps (steps 0, T1, 2 T1, ...), with
/// rho = (h(theta + s delta) - h(theta)) / M(s delta), lambda is multiplied by omega = (19/20)^T1
/// if rho > 3/4 and divided by it if rho < 1/4 (M&G 2015, sec. 6.5), within [min_damping,
/// max_damping] (LevenbergMarquardt of damping.hpp: a non-finite loss after the step or a
/// non-positive predicted reduction gives rho = -infinity, which counts as < 1/4). This M, used
/// for rho too, includes the damping term, as the model of sec. 7 does. Extra cost
/// per step: the exact GGN operator's forward pass and two GGN-vector products (one without a
/// previous update), plus the loss after the step on the damping-update steps.
/// KfacReport of the adaptive mode: lambda = the damping of this step's model (before its LM
/// update), step_scale = alpha (0 if the step was undone because the loss after it was not
/// finite; the previous update is then forgotten), loss, loss_after, gradient_norm and step_norm
/// as below, and `adaptive` holds predicted_reduction = -M(s delta), rho (empty when the loss
/// after the step was not evaluated: evaluate_loss_after false on a step that does not update
/// lambda) and the momentum mu. The losses exclude the weight decay term, rho includes it.
/// In Mode::train a step is a training step like nn::loss_and_gradient's: it advances the model's
/// step (new dropout masks) and, for a model with state, moves the running statistics once with
/// the whole batch, in the step's own recorded pass (the statistics record, or the loss and
/// gradient record of a step without statistics): no extra forward pass.
/// KfacReport (default mode): loss, loss_after (NaN unless evaluate_loss_after), gradient_norm
/// (of the mean loss, without weight decay), lambda, step_scale = nu (0 if the step was undone
/// because the loss after it was not finite), step_norm; `adaptive` is empty.
/// Strong guarantee: a step that throws (bad shapes, a non-finite loss or statistics, a failing
/// forward pass or factorization) leaves the optimizer, the factors and the model's parameters,
/// step counter, first_example() and state as they were, so the next step gives what it would
/// have given without the failed call. Its cost: copies of the parameters and the model state per
/// step.
template <Real T>
class Kfac {
 public:
  /// The model is updated in place by step(); model and head must outlive the optimizer.
  /// ValueError for bad options or an unsupported model (see KroneckerFactors).
  Kfac(nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options = {});
  /// Data-parallel (docs/scaling.md), as NaturalGradient's: collective, every rank constructs it
  /// with the same options (checked: ValueError on every rank otherwise) and a model of the same
  /// structure, whose parameters are then replaced by rank 0's (nn::synchronize_model). step()
  /// then takes this rank's shard of the batch (consecutive rows in rank order, at least one
  /// statistics row per rank) and every rank takes the step one process takes on the union: loss,
  /// gradient and factor statistics reduced (KroneckerFactors::update with a communicator), the
  /// inverse refreshes spread over the ranks layer by layer and broadcast, the loss after the step
  /// reduced. Batch norm in train mode moves its running statistics with this rank's rows, and
  /// dropout masks are keyed by the example's index in the union (the model's first_example() is
  /// set to the rank's offset, as by nn::loss_and_gradient(..., comm, shard)). The communicator
  /// must outlive the optimizer.
  Kfac(nn::Model<T>& model, const nn::Head<T>& head, KfacOptions options, nn::Communicator& comm);
  /// One step on the minibatch (inputs (N, ...), targets (N, C)); see the class comment.
  KfacReport step(const Tensor<T>& inputs, const Tensor<T>& targets);
  /// Forgets the K-FAC statistics (KroneckerFactors::reset_statistics): the next step starts the
  /// averages afresh and refreshes the inverses. The momentum buffer, the step count and the step
  /// multiplier are kept. Never throws.
  void reset_statistics() noexcept { factors_.reset_statistics(); }
  /// The options given at construction.
  const KfacOptions& options() const { return factors_.options(); }
  /// A multiplier s >= 0 (finite; ValueError otherwise) of every following parameter update:
  /// theta -= s lr v. For learning-rate schedules: unlike a smaller learning_rate, it is applied
  /// after the KL clip, which would otherwise scale a clipped step back up. Default 1.
  void set_step_multiplier(double s);
  /// The current step multiplier.
  double step_multiplier() const { return multiplier_; }
  /// The curvature model (e.g. for a KfacPreconditioner).
  KroneckerFactors<T>& factors() { return factors_; }
  const KroneckerFactors<T>& factors() const { return factors_; }
  /// Steps taken so far.
  std::uint64_t steps() const { return state_.steps; }
  /// The momentum buffer v (undefined without momentum or before the first step).
  const Tensor<T>& velocity() const { return state_.velocity; }
  /// Adaptive mode: the current damping lambda (KfacOptions::damping before the first step); the
  /// next step's model and inverse refreshes use it. Default mode: KfacOptions::damping.
  double damping() const { return state_.lm.lambda; }
  /// Adaptive mode: the previous update delta_0 = s (alpha Delta + mu delta_0') (undefined before
  /// the first step and after a step that was undone).
  const Tensor<T>& previous_update() const { return state_.previous; }
  /// Adaptive mode: the learning rate alpha of this object's last step (0 before it).
  double adaptive_learning_rate() const { return state_.alpha; }
  /// Adaptive mode: the momentum mu of this object's last step (0 before it).
  double adaptive_momentum() const { return state_.mu; }
  /// Everything a resumed run needs to continue bitwise as if it had never stopped (kind "kfac";
  /// see nn/checkpoint.hpp): per tapped layer l, its tap (weight index, kind, bias, convolution
  /// geometry), A_l and G_l, the current damped inverses (K-FAC) or eigenbases and scalings
  /// (EKFAC), pi_l and the damping used; the update count, the momentum buffer, the step count and
  /// the step multiplier; in adaptive mode also lambda and the previous update (the last alpha and
  /// mu are not: they only report). The options are not part of it: construct the resumed
  /// optimizer with the same options. Cost: a copy of the statistics, O(sum_l rows^2 + out^2 + P).
  nn::OptimizerState<T> save_state() const;
  /// Restores a state from save_state(), all or nothing. The layer plan (offsets, names, untapped
  /// parameters) is derived again from this model's layout for the stored taps, and every stored
  /// factor, inverse, eigenbasis and scaling must have the shape the model's layer gives it;
  /// ValueError naming the layer or the entry otherwise (a state of another kind, of EKFAC for
  /// K-FAC or the reverse, a momentum buffer without momentum, non-finite values, ...), and then
  /// nothing is changed. The next step() still checks that the forward pass taps these layers.
  void load_state(const nn::OptimizerState<T>& state);

 private:
  // What a step carries to the next, updated in a copy by step() and kept only if the step
  // succeeds (strong guarantee): lambda and its Levenberg-Marquardt rule (adaptive mode: omega =
  // (19/20)^T1 within [min_damping, max_damping]; the default mode never moves lambda), the
  // previous update delta_0 (adaptive mode), the step count, the momentum buffer, and the last
  // alpha and mu (adaptive mode, for reports).
  struct StepState : DampedStepState<T> {
    Tensor<T> velocity;
    double alpha = 0, mu = 0;
  };
  // K-FAC's stages of the damped-step pipeline (kfac.cpp; curvature/detail/damped_step.hpp).
  class StepSource;
  // lambda = KfacOptions::damping and its rule (see StepState); after the options are validated.
  void init_damping();
  nn::Model<T>* model_;
  const nn::Head<T>* head_;
  nn::Communicator* comm_ = nullptr;  // null: one process
  KroneckerFactors<T> factors_;
  StepState state_;
  double multiplier_ = 1;
};

/// z = F_kfac^{-1} r with the current damped inverses of a KroneckerFactors (borrowed: it must
/// outlive the preconditioner, and its inverses must have been computed): an SPD preconditioner
/// for conjugate_gradient on a curvature operator (e.g. the damped GGN of natural gradient / HF).
/// Cost per application: KroneckerFactors::precondition.
template <Real T>
class KfacPreconditioner final : public Preconditioner<T> {
 public:
  /// Borrows `factors` (see the class comment).
  explicit KfacPreconditioner(KroneckerFactors<T>& factors) : factors_(&factors) {}
  /// P, the number of parameters of the model.
  Index size() const override { return factors_->num_parameters(); }
  /// z = F_kfac^{-1} r (KroneckerFactors::precondition); r and z (P).
  void apply(const Tensor<T>& r, Tensor<T>& z) override;
  /// "KfacPreconditioner(<factors name>)".
  std::string name() const override { return "KfacPreconditioner(" + factors_->name() + ")"; }

 private:
  KroneckerFactors<T>* factors_;
};

/// The K-FAC curvature as a forward operator (EKFAC: blockdiag_l(U (diag(s_l) + lambda I) U^T)
/// with U = U_A (x) U_G): out = blockdiag_l(A_l (x) G_l) v, plus
/// untapped_curvature * v on the parameters in no tapped layer; with lambda > 0, the factored
/// damping of M&G 2015, sec. 6.3, is included: blockdiag_l((A_l + pi_l sqrt(lambda) I) (x)
/// (G_l + sqrt(lambda) / pi_l I)) and (c + lambda) I, the matrix KroneckerFactors::precondition
/// inverts (without its damping retries). For spectra, Laplace approximations or comparisons with
/// the exact curvature. The factors are borrowed (they must outlive the operator) and read at
/// every apply, so the operator follows their updates; ValueError at apply before any update.
/// Cost per application: 2 rows out (rows + out) flops per layer (EKFAC: twice that); two scratch
/// blocks.
template <Real T>
class KfacOperator final : public LinearOperator<T> {
 public:
  /// ValueError if lambda is negative or not finite.
  explicit KfacOperator(const KroneckerFactors<T>& factors, double lambda = 0);
  /// P, the number of parameters of the model.
  Index size() const override { return factors_->num_parameters(); }
  /// out = K v (see the class comment); v and out (P), not sharing storage.
  void apply(const Tensor<T>& v, Tensor<T>& out) override;
  /// "KfacOperator(<factors name>)" or "KfacOperator(<factors name>, factored damping <lambda>)".
  std::string name() const override;
  /// The factored damping lambda (0: none).
  double lambda() const { return lambda_; }

 private:
  const KroneckerFactors<T>* factors_;
  double lambda_;
  Tensor<T> scratch_;
};

extern template Index layer_input_rows<float>(const KfacLayer&, const Tensor<float>&, const Shape&,
                                              Index, Index, std::vector<float>&);
extern template Index layer_input_rows<double>(const KfacLayer&, const Tensor<double>&,
                                               const Shape&, Index, Index, std::vector<double>&);
extern template class KroneckerFactors<float>;
extern template class KroneckerFactors<double>;
extern template class Kfac<float>;
extern template class Kfac<double>;
extern template class KfacPreconditioner<float>;
extern template class KfacPreconditioner<double>;
extern template class KfacOperator<float>;
extern template class KfacOperator<double>;

}  // namespace amari::curvature

// Hostile inputs: empty tensors through every op, shapes too large to exist, NaN and infinity in
// losses, curvature solves and optimizers, derivatives at the points where they are a convention,
// tapes used after clear() and after destruction, and values of two tapes mixed. Each case either
// gives the documented result or raises a typed amari::Error; none may crash.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <amari/amari.hpp>

#include "fuzz/harness/ops.hpp"
#include "reliability/child_process.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define AMARI_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define AMARI_TEST_SANITIZED 1
#endif
#endif

namespace {

using namespace amari;
using amari::test::Outcome;
using amari::test::run_in_child;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

template <Real T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

template <Real T>
Tensor<T> values(const Shape& s, std::initializer_list<T> v) {
  return Tensor<T>::from(s, v);
}

// ---- empty tensors through every op
// ---------------------------------------------------------------

// Every instruction of the ops harness applied to operands a = pool[0], b = pool[1]: every opcode
// with every axis -5..5 (with and without keep_dims), every transpose combination and every kind of
// reshape target, so out-of-range axes and mismatched shapes are covered too.
template <Real T>
std::vector<fuzz::ops_detail::Instruction<T>> every_instruction() {
  using fuzz::ops_detail::Op;
  std::vector<fuzz::ops_detail::Instruction<T>> code;
  for (int op = 0; op < static_cast<int>(Op::count); ++op) {
    for (int param = 0; param < 128; ++param) {
      const Op o = static_cast<Op>(op);
      const bool axis_op = o == Op::sum_axis || o == Op::mean_axis || o == Op::max ||
                           o == Op::logsumexp || o == Op::softmax || o == Op::log_softmax;
      const bool wanted = (axis_op && (param & 15) < 11 && (param & 96) == 0) ||
                          (o == Op::matmul && (param & 31) == 0) ||
                          (o == Op::reshape && param < 6) || (o == Op::linear && param < 2) ||
                          param == 0;
      if (!wanted) continue;
      fuzz::ops_detail::Instruction<T> ins;
      ins.op = o;
      ins.a = 0;
      ins.b = 1;
      ins.c = static_cast<std::uint8_t>(param & 1);
      ins.param = static_cast<std::uint8_t>(param);
      ins.s1 = T(2);
      ins.s2 = T(-1);
      ins.reshape_rank = 2;
      ins.reshape_dims[0] = 0;
      ins.reshape_dims[1] = 3;
      code.push_back(ins);
    }
  }
  return code;
}

template <Real T>
void every_op_on_empty_shapes() {
  const std::vector<Shape> shapes = {
      Shape{0},          Shape{0, 3}, Shape{3, 0}, Shape{0, 0}, Shape{2, 0, 4}, Shape{1, 0, 1, 2},
      Shape{0, 1, 5, 1}, Shape{},     Shape{1},    Shape{3},    Shape{1, 3}};
  const auto code = every_instruction<T>();
  for (const Shape& sa : shapes) {
    for (const Shape& sb : shapes) {
      if (sa.numel() != 0 && sb.numel() != 0) continue;  // at least one operand empty
      fuzz::ops_detail::Program<T> p;
      for (const Shape& s : {sa, sb}) {
        fuzz::ops_detail::InputSpec<T> in;
        in.value = Tensor<T>::full(s, T(1.5));
        in.tangent = Tensor<T>::full(s, T(-0.5));
        p.inputs.push_back(in);
      }
      p.code = code;
      INFO("operands " << sa.str() << " and " << sb.str());
      CHECK(run_in_child([&] { fuzz::ops_detail::check_program(p); }) == Outcome::returned);
    }
  }
}

TEST_CASE(
    "empty tensors: every op in every mode returns a result or raises amari::Error, and the "
    "modes agree",
    "[reliability][hostile][empty]") {
  every_op_on_empty_shapes<double>();
  every_op_on_empty_shapes<float>();
}

TEST_CASE("empty tensors: reductions follow the documented conventions",
          "[reliability][hostile][empty]") {
  const Tensor<double> e(Shape{0, 3});
  CHECK(sum(e).item() == 0.0);
  CHECK(sum(e, 0).shape() == Shape{3});
  CHECK(sum(e, 0)[0] == 0.0);
  CHECK(sum(e, 1).shape() == Shape{0});
  CHECK(std::isnan(mean(e).item()));       // documented: mean of an empty tensor is NaN
  CHECK_THROWS_AS(max(e, 0), ShapeError);  // a max over nothing is an error, not -inf
  CHECK(max(e, 1).shape() == Shape{0});    // a max over a non-empty axis of no rows
  CHECK(logsumexp(e, 0)[0] == -kInf);      // log of an empty sum
  CHECK(softmax(e, 0).shape() == e.shape());
  const Tensor<double> a = Tensor<double>::full(Shape{2, 0}, 1.0), b(Shape{0, 3});
  const Tensor<double> c = matmul(a, b);  // (2, 0) x (0, 3): a sum over nothing
  REQUIRE(c.shape() == Shape{2, 3});
  for (Index i = 0; i < c.size(); ++i) CHECK(c[i] == 0.0);
}

TEST_CASE(
    "empty tensors: the gradient with respect to an empty variable is empty and the rest is "
    "unaffected",
    "[reliability][hostile][empty]") {
  Tape<double> tape;
  const Var<double> x = tape.variable(Tensor<double>(Shape{0, 4}));
  const Var<double> w = tape.variable(Tensor<double>::full(Shape{4, 2}, 0.5));
  const Var<double> loss = sum(matmul(x, w)) + sum(w);
  const Tensor<double> one = Tensor<double>::scalar(1.0);
  const auto g = tape.vjp(std::span<const Var<double>>(&loss, 1),
                          std::span<const Tensor<double>>(&one, 1), std::vector<Var<double>>{x, w});
  CHECK(g[0].shape() == Shape{0, 4});
  REQUIRE(g[1].shape() == Shape{4, 2});
  for (Index i = 0; i < g[1].size(); ++i) CHECK(g[1][i] == 1.0);
}

// ---- sizes that cannot exist --------------------------------------------------------------------

TEST_CASE("huge shapes: element counts past 2^48 are a SizeError raised before any allocation",
          "[reliability][hostile][size]") {
  const Index big = Index{1} << 40;
  CHECK_THROWS_AS((Shape{big, big}), SizeError);
  CHECK_THROWS_AS((Shape{Index{1} << 48, 2}), SizeError);
  CHECK_THROWS_AS((Shape{Index{1} << 62, Index{1} << 62, 4}),
                  SizeError);  // the product overflows Index
  CHECK_THROWS_AS(Tensor<double>(Shape{big, big}), SizeError);
  CHECK_THROWS_WITH((Shape{big, big}), Catch::Matchers::Contains("2^48"));
  // The limit itself is a valid shape (no allocation happens here), and a zero dimension makes
  // any other extent harmless.
  CHECK((Shape{Index{1} << 48}).numel() == Index{1} << 48);
  CHECK((Shape{0, Index{1} << 62, Index{1} << 62}).numel() == 0);
  CHECK_NOTHROW(Tensor<double>(Shape{0, Index{1} << 62, Index{1} << 62}));
  // Negative extents and rank 5 are ShapeErrors.
  CHECK_THROWS_AS((Shape{-1}), ShapeError);
  CHECK_THROWS_AS((Shape{1, 1, 1, 1, 1}), ShapeError);
}

TEST_CASE(
    "huge shapes: an op whose result would exceed 2^48 elements raises SizeError from empty "
    "inputs",
    "[reliability][hostile][size]") {
  // (2^25, 0) x (0, 2^25) needs no input memory but promises a (2^25, 2^25) = 2^50 result.
  const Index n = Index{1} << 25;
  const Tensor<double> a(Shape{n, 0}), b(Shape{0, n});
  CHECK_THROWS_AS(matmul(a, b), SizeError);
  CHECK_THROWS_AS(matmul(Dual<double>(a, a), Dual<double>(b)), SizeError);
  Tape<double> tape;
  CHECK_THROWS_AS(matmul(tape.variable(a), tape.variable(b)), SizeError);
  CHECK(tape.size() == 0);  // nothing was recorded
}

TEST_CASE("huge shapes: a representable shape too large for memory is std::bad_alloc, not a crash",
          "[reliability][hostile][size]") {
  // Decision, as documented in detail::aligned_allocate: a shape of at most 2^48 elements is legal,
  // and allocating it goes to the system allocator, whose refusal surfaces as std::bad_alloc (the
  // standard "out of memory" exception, like any C++ container). 2^47 doubles are 1 PiB.
#ifdef AMARI_TEST_SANITIZED
  // ASan and TSan report an allocation this large as a fatal error instead of letting operator new
  // throw, so this case only runs in unsanitized builds.
  SUCCEED("skipped under a sanitizer");
#else
  const Shape s{Index{1} << 47};
  CHECK_THROWS_AS(Tensor<double>(s), std::bad_alloc);
  CHECK_THROWS_AS(Tensor<float>::uninitialized(s), std::bad_alloc);
  // A result of 2^47 elements from empty inputs.
  const Tensor<double> a(Shape{Index{1} << 24, 0}), b(Shape{0, Index{1} << 23});
  CHECK_THROWS_AS(matmul(a, b), std::bad_alloc);
  // Afterwards the allocator and the tensor cache still work.
  CHECK(Tensor<double>::full(Shape{100000}, 1.0)[99999] == 1.0);
#endif
}

// ---- NaN and infinity ---------------------------------------------------------------------------

template <Real T>
void nan_logits_give_nan_losses(const nn::Head<T>& head) {
  INFO(head.name());
  Tensor<T> z = values<T>(Shape{2, 3}, {T(1), T(2), T(3), T(0), T(0), T(0)});
  z[1] = std::numeric_limits<T>::quiet_NaN();
  const Tensor<T> y = nn::one_hot<T>({2, 0}, 3);
  CHECK(std::isnan(head.loss(z, y).item()));
  Tensor<T> tangent = Tensor<T>::full(z.shape(), T(1));
  CHECK(std::isnan(head.loss(Dual<T>(z, tangent), y).primal().item()));
  Tape<T> tape;
  const Var<T> zv = tape.variable(z);
  const Var<T> loss = head.loss(zv, y);
  CHECK(std::isnan(loss.value().item()));
  const Tensor<T> one = Tensor<T>::scalar(T(1));
  const auto g = tape.vjp(std::span<const Var<T>>(&loss, 1), std::span<const Tensor<T>>(&one, 1),
                          std::span<const Var<T>>(&zv, 1));
  CHECK(std::isnan(g[0][1]));
  // The closed-form pieces take NaN without crashing.
  Tensor<T> out(z.shape());
  CHECK_NOTHROW(head.gradient(z, y, out));
  CHECK_NOTHROW(head.hessian_product(z, tangent, out));
  CHECK_NOTHROW(head.sample(z, 1, 0));
  // Infinite logits: no crash, a loss that is not a finite lie about a NaN.
  z[1] = std::numeric_limits<T>::infinity();
  CHECK_NOTHROW(head.loss(z, y));
  z[1] = -std::numeric_limits<T>::infinity();
  CHECK_NOTHROW(head.loss(z, y));
}

TEST_CASE("NaN logits: every head's loss is NaN in all three modes, never a crash",
          "[reliability][hostile][nan]") {
  nan_logits_give_nan_losses(nn::SoftmaxCrossEntropy<double>());
  nan_logits_give_nan_losses(nn::SigmoidBernoulli<double>());
  nan_logits_give_nan_losses(nn::Gaussian<double>(0.5));
  nan_logits_give_nan_losses(nn::SoftmaxCrossEntropy<float>());
  nan_logits_give_nan_losses(nn::SigmoidBernoulli<float>());
  nan_logits_give_nan_losses(nn::Gaussian<float>(2.0));
}

TEST_CASE("NaN inputs: loss_and_gradient of a model returns NaN and a NaN gradient, no crash",
          "[reliability][hostile][nan]") {
  nn::Model<double> model(nn::mlp<double>({3, 5, 2}, nn::Act::relu), 3);
  Tensor<double> x = Tensor<double>::full(Shape{4, 3}, 0.25);
  x[5] = kNaN;
  const Tensor<double> y = nn::one_hot<double>({0, 1, 1, 0}, 2);
  Tensor<double> g = model.zeros_like_parameters();
  CHECK(std::isnan(nn::loss_and_gradient(model, nn::SoftmaxCrossEntropy<double>(), x, y, g)));
  bool any_nan = false;
  for (Index i = 0; i < g.size(); ++i) any_nan = any_nan || std::isnan(g[i]);
  CHECK(any_nan);
}

// An operator whose products turn non-finite from the `bad_from`-th call on (1-based).
class PoisonedOperator final : public curvature::LinearOperator<double> {
 public:
  PoisonedOperator(Index n, int bad_from, double poison)
      : n_(n), bad_from_(bad_from), poison_(poison) {}
  Index size() const override { return n_; }
  void apply(const Tensor<double>& v, Tensor<double>& out) override {
    ++calls;
    for (Index i = 0; i < n_; ++i) out[i] = (2.0 + static_cast<double>(i)) * v[i];  // SPD diagonal
    if (calls >= bad_from_) out[n_ / 2] = poison_;
  }
  std::string name() const override { return "poisoned diagonal"; }
  int calls = 0;

 private:
  Index n_;
  int bad_from_;
  double poison_;
};

TEST_CASE(
    "CG: an operator producing NaN or inf stops the solve at once with status non_finite and "
    "a finite x",
    "[reliability][hostile][nan][cg]") {
  const Index n = 20;
  Tensor<double> b(Shape{n});
  for (Index i = 0; i < n; ++i) b[i] = std::sin(1.0 + static_cast<double>(i));
  for (double poison : {kNaN, kInf, -kInf}) {
    for (int bad_from : {1, 2, 4}) {
      INFO("poison " << poison << " from product " << bad_from);
      PoisonedOperator a(n, bad_from, poison);
      const auto r = curvature::conjugate_gradient<double>(
          a, b, {.max_iterations = 100, .relative_tolerance = 0});
      CHECK(r.status == curvature::CgStatus::non_finite);
      CHECK(a.calls == bad_from);  // promptly: not one product after the bad one
      CHECK(r.products == bad_from);
      CHECK(r.iterations == bad_from - 1);
      for (Index i = 0; i < n; ++i) CHECK(std::isfinite(r.x[i]));
    }
  }
  // A NaN right-hand side costs no product at all.
  PoisonedOperator a(n, 1000, 0.0);
  b[3] = kNaN;
  const auto r = curvature::conjugate_gradient<double>(a, b);
  CHECK(r.status == curvature::CgStatus::non_finite);
  CHECK(a.calls == 0);
  for (Index i = 0; i < n; ++i) CHECK(r.x[i] == 0.0);
}

template <Real T>
void optimizer_refuses_bad_gradient(nn::Optimizer<T>& opt, nn::Optimizer<T>& twin) {
  INFO(opt.describe());
  Tensor<T> params =
      values<T>(Shape{2, 5}, {T(1), T(-2), T(3), T(-4), T(5), T(0.5), T(0.25), T(-1), T(2), T(7)});
  Tensor<T> params_twin = params.clone();
  const Tensor<T> good = values<T>(
      Shape{2, 5}, {T(0.1), T(0.2), T(-0.3), T(0.4), T(-0.5), T(1), T(-1), T(2), T(0), T(3)});
  opt.step(params, good);
  twin.step(params_twin, good);
  for (T bad : {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity(),
                -std::numeric_limits<T>::infinity()}) {
    for (Index at : {Index{0}, Index{7}, Index{9}}) {  // first, a middle, the SIMD tail
      Tensor<T> g = good.clone();
      g[at] = bad;
      const Tensor<T> before = params.clone();
      CHECK_THROWS_AS(opt.step(params, g), ValueError);
      CHECK(same_bits(params, before));
    }
  }
  // The state was not touched either: the next good step is the one the twin takes, which never
  // saw a bad gradient.
  opt.step(params, good);
  twin.step(params_twin, good);
  CHECK(same_bits(params, params_twin));
}

TEST_CASE(
    "optimizers: a NaN or infinite gradient is a ValueError that changes neither the "
    "parameters nor the state",
    "[reliability][hostile][nan][optim]") {
  {
    nn::Sgd<double> a({.learning_rate = 0.1}), b({.learning_rate = 0.1});
    optimizer_refuses_bad_gradient<double>(a, b);
  }
  {
    nn::Sgd<float> a(
        {.learning_rate = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01});
    nn::Sgd<float> b(
        {.learning_rate = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01});
    optimizer_refuses_bad_gradient<float>(a, b);
  }
  {
    nn::Adam<double> a({.learning_rate = 0.01}), b({.learning_rate = 0.01});
    optimizer_refuses_bad_gradient<double>(a, b);
  }
  {
    nn::Adam<float> a({.weight_decay = 0.1, .decoupled_weight_decay = true});
    nn::Adam<float> b({.weight_decay = 0.1, .decoupled_weight_decay = true});
    optimizer_refuses_bad_gradient<float>(a, b);
  }
}

// A step on data whose loss is NaN must leave the model bitwise as it was, keep lambda, and say so
// in its report (step_scale 0, CG status non_finite) instead of throwing: a training loop can log
// the batch and go on. HessianFree with the diag(EF) preconditioner used to throw here.
template <Real T, class Method, class Options>
void second_order_step_on_nan_data_keeps_model(Options options, bool nan_in_targets) {
  nn::Model<T> model(nn::mlp<T>({3, 4, 3}, nn::Act::tanh), 11);
  const nn::SoftmaxCrossEntropy<T> head;
  Tensor<T> x(Shape{5, 3});
  for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<T>(std::cos(static_cast<double>(i)));
  Tensor<T> y = nn::one_hot<T>({0, 1, 2, 1, 0}, 3);
  if (nan_in_targets) {
    y[4] = std::numeric_limits<T>::quiet_NaN();
  } else {
    x[2] = std::numeric_limits<T>::quiet_NaN();
  }
  const Tensor<T> before = model.gather();
  Method method(model, head, options);
  for (int step = 0; step < 2; ++step) {
    const curvature::CgStepReport r = method.step(x, y);
    INFO(r.str());
    CHECK(std::isnan(r.loss));
    CHECK(r.step_scale == 0.0);
    CHECK(r.cg_status == curvature::CgStatus::non_finite);
    CHECK(r.lambda == options.initial_damping);
    CHECK(same_bits(model.parameters(), before));
  }
}

TEST_CASE(
    "natural gradient and Hessian-free: a step on data with a NaN loss leaves the model "
    "bitwise unchanged",
    "[reliability][hostile][nan][second_order]") {
  using curvature::Curvature;
  for (bool nan_targets : {false, true}) {
    INFO((nan_targets ? "NaN in the targets" : "NaN in the inputs"));
    for (Curvature c :
         {Curvature::ggn, Curvature::hessian, Curvature::empirical_fisher, Curvature::mc_fisher}) {
      INFO(curvature::to_string(c));
      second_order_step_on_nan_data_keeps_model<double, curvature::NaturalGradient<double>>(
          curvature::NaturalGradientOptions{.curvature = c}, nan_targets);
      second_order_step_on_nan_data_keeps_model<double, curvature::NaturalGradient<double>>(
          curvature::NaturalGradientOptions{.curvature = c, .line_search = true}, nan_targets);
      second_order_step_on_nan_data_keeps_model<float, curvature::HessianFree<float>>(
          curvature::HessianFreeOptions{.curvature = c}, nan_targets);
    }
    second_order_step_on_nan_data_keeps_model<double, curvature::HessianFree<double>>(
        curvature::HessianFreeOptions{.preconditioner = true}, nan_targets);
  }
}

template <Real T>
void exp_family_limits() {
  using L = std::numeric_limits<T>;
  const T inf = L::infinity(), big = std::is_same_v<T, double> ? T(1e58) : T(1e30);
  const Tensor<T> x = values<T>(Shape{5}, {L::quiet_NaN(), inf, -inf, big, -big});
  auto v = [](const Tensor<T>& t) { return t.to_vector(); };
  const auto e = v(exp(x));
  CHECK(std::isnan(e[0]));
  CHECK((e[1] == inf && e[2] == 0 && e[3] == inf && e[4] == 0));
  const auto th = v(tanh(x));
  CHECK(std::isnan(th[0]));
  CHECK((th[1] == 1 && th[2] == -1 && th[3] == 1 && th[4] == -1));
  const auto sg = v(sigmoid(x));
  CHECK(std::isnan(sg[0]));
  CHECK((sg[1] == 1 && sg[2] == 0 && sg[3] == 1 && sg[4] == 0));
  const auto sp = v(softplus(x));
  CHECK(std::isnan(sp[0]));
  CHECK((sp[1] == inf && sp[2] == 0 && sp[3] == big && sp[4] == 0));
  const auto ge = v(gelu(x));
  CHECK(std::isnan(ge[0]));
  CHECK((ge[3] == big && ge[4] == 0));
  // A logit of -big next to 0: its probability underflows to 0, the other's is 1.
  const Tensor<T> z = values<T>(Shape{1, 2}, {-big, T(0)});
  CHECK(logsumexp(z).item() == 0);
  CHECK(softmax(z).to_vector() == std::vector<T>{T(0), T(1)});
  CHECK(log_softmax(z).to_vector() == std::vector<T>{-big, T(0)});
}

TEST_CASE("extreme arguments: the exp family gives its limits for NaN, +-inf and huge values",
          "[reliability][hostile][nan]") {
  // In the double SIMD code these arguments used to reach xsimd's exp range reduction, which
  // converts x / ln 2 to int64 out of range (undefined behaviour, reported by clang's
  // -fsanitize=float-cast-overflow in the fuzz build; see tests/reliability/crashes/ops).
  exp_family_limits<double>();
  exp_family_limits<float>();
}

// ---- derivatives at non-differentiable points ---------------------------------------------------

TEST_CASE("relu at 0: the derivative is 0 in forward and reverse mode (documented convention)",
          "[reliability][hostile][kinks]") {
  const Tensor<double> x = values<double>(Shape{4}, {-1.0, 0.0, -0.0, 2.0});
  const Tensor<double> t = Tensor<double>::full(Shape{4}, 1.0);
  const Dual<double> yd = relu(Dual<double>(x, t));
  CHECK(yd.tangent().to_vector() == std::vector<double>{0.0, 0.0, 0.0, 1.0});
  Tape<double> tape;
  const Var<double> xv = tape.variable(x);
  const Var<double> y = relu(xv);
  const auto g =
      tape.vjp(std::span<const Var<double>>(&y, 1), std::span<const Tensor<double>>(&t, 1),
               std::span<const Var<double>>(&xv, 1));
  CHECK(g[0].to_vector() == std::vector<double>{0.0, 0.0, 0.0, 1.0});
  const auto jv =
      tape.jvp(std::span<const Var<double>>(&xv, 1), std::span<const Tensor<double>>(&t, 1),
               std::span<const Var<double>>(&y, 1));
  CHECK(jv[0].to_vector() == std::vector<double>{0.0, 0.0, 0.0, 1.0});
}

TEST_CASE(
    "max with ties: the derivative goes to the first maximal element along the axis "
    "(documented convention)",
    "[reliability][hostile][kinks]") {
  // Rows: a tie at positions 1 and 2; all equal; a NaN after the max (the NaN is the max).
  const Tensor<double> x =
      values<double>(Shape{3, 3}, {1.0, 3.0, 3.0, 2.0, 2.0, 2.0, 5.0, kNaN, kNaN});
  Tensor<double> t(Shape{3, 3});
  for (Index i = 0; i < 9; ++i) t[i] = 10.0 + static_cast<double>(i);
  const Dual<double> yd = max(Dual<double>(x, t), -1);
  CHECK(yd.tangent()[0] == t[1]);
  CHECK(yd.tangent()[1] == t[3]);
  CHECK(yd.tangent()[2] == t[7]);  // the first NaN
  Tape<double> tape;
  const Var<double> xv = tape.variable(x);
  const Var<double> y = max(xv, -1);
  const Tensor<double> u = values<double>(Shape{3}, {1.0, 2.0, 3.0});
  const auto g =
      tape.vjp(std::span<const Var<double>>(&y, 1), std::span<const Tensor<double>>(&u, 1),
               std::span<const Var<double>>(&xv, 1));
  CHECK(g[0].to_vector() == std::vector<double>{0, 1, 0, 2, 0, 0, 0, 3, 0});
  // Along axis 0 with keep_dims: column 0 is (4, 4, 0), a tie of rows 0 and 1; column 1 is all 1.
  const Tensor<double> z = values<double>(Shape{3, 2}, {4.0, 1.0, 4.0, 1.0, 0.0, 1.0});
  const Var<double> zv = tape.variable(z);
  const Var<double> m = max(zv, 0, true);
  REQUIRE(m.shape() == Shape{1, 2});
  const Tensor<double> w = values<double>(Shape{1, 2}, {1.0, 1.0});
  const auto gz =
      tape.vjp(std::span<const Var<double>>(&m, 1), std::span<const Tensor<double>>(&w, 1),
               std::span<const Var<double>>(&zv, 1));
  CHECK(gz[0].to_vector() == std::vector<double>{1, 1, 0, 0, 0, 0});
}

TEST_CASE("sqrt at 0: the derivative is +inf (documented), no crash, no silent finite value",
          "[reliability][hostile][kinks]") {
  const Dual<double> y =
      sqrt(Dual<double>(values<double>(Shape{2}, {0.0, 4.0}), Tensor<double>::full(Shape{2}, 1.0)));
  CHECK(y.tangent()[0] == kInf);
  CHECK(y.tangent()[1] == 0.25);
}

// ---- tapes
// ----------------------------------------------------------------------------------------

TEST_CASE(
    "tapes: values recorded before clear() raise TapeError in every use, the tape stays usable",
    "[reliability][hostile][tape]") {
  Tape<double> tape;
  const Var<double> x = tape.variable(Tensor<double>::full(Shape{3}, 2.0));
  const Var<double> y = exp(x);
  tape.clear();
  CHECK_FALSE(x.is_valid());
  CHECK_FALSE(y.is_valid());
  CHECK(y.value()[0] == std::exp(2.0));  // the value itself is still readable
  CHECK_THROWS_AS(exp(y), TapeError);
  CHECK_THROWS_AS(x + x, TapeError);
  CHECK_THROWS_WITH(exp(y), Catch::Matchers::Contains("cleared"));
  const Tensor<double> u = Tensor<double>::full(Shape{3}, 1.0);
  CHECK_THROWS_AS(
      tape.vjp(std::span<const Var<double>>(&y, 1), std::span<const Tensor<double>>(&u, 1),
               std::span<const Var<double>>(&x, 1)),
      TapeError);
  CHECK_THROWS_AS(
      tape.jvp(std::span<const Var<double>>(&x, 1), std::span<const Tensor<double>>(&u, 1),
               std::span<const Var<double>>(&y, 1)),
      TapeError);
  // New records after the error work normally.
  const Var<double> x2 = tape.variable(Tensor<double>::full(Shape{3}, 1.0));
  const Var<double> s = sum(square(x2));
  const Tensor<double> one = Tensor<double>::scalar(1.0);
  const auto g =
      tape.vjp(std::span<const Var<double>>(&s, 1), std::span<const Tensor<double>>(&one, 1),
               std::span<const Var<double>>(&x2, 1));
  CHECK(g[0].to_vector() == std::vector<double>{2.0, 2.0, 2.0});
}

TEST_CASE("tapes: values outliving their tape raise TapeError (no use after free)",
          "[reliability][hostile][tape]") {
  Var<double> x, y;
  {
    Tape<double> tape;
    x = tape.variable(Tensor<double>::full(Shape{2, 2}, 1.0));
    y = tanh(x * x);
  }
  CHECK_FALSE(y.is_valid());
  CHECK(y.value()[0] == std::tanh(1.0));  // the Var keeps its value alive
  CHECK_THROWS_AS(exp(y), TapeError);
  CHECK_THROWS_WITH(exp(y), Catch::Matchers::Contains("destroyed"));
  CHECK_THROWS_AS(matmul(x, y), TapeError);
  // A constant combined with a dead variable is refused too.
  CHECK_THROWS_AS(Var<double>(Tensor<double>::full(Shape{2, 2}, 1.0)) + y, TapeError);
  // A fresh tape may be used with the old values as constants.
  Tape<double> fresh;
  const Var<double> z = fresh.variable(y.value());
  CHECK(exp(z).value()[0] == std::exp(std::tanh(1.0)));
}

TEST_CASE(
    "tapes: combining values of two tapes, or sweeping one tape with another's values, is a "
    "TapeError",
    "[reliability][hostile][tape]") {
  Tape<double> t1, t2;
  const Var<double> a = t1.variable(Tensor<double>::full(Shape{2}, 1.0));
  const Var<double> b = t2.variable(Tensor<double>::full(Shape{2}, 2.0));
  const Var<double> ra = reshape(a, Shape{1, 2}), rb = reshape(b, Shape{2, 1});
  const Var<double> sa = sum(a), sb = sum(b);
  const std::size_t recorded = t1.size();
  CHECK_THROWS_AS(a + b, TapeError);
  CHECK_THROWS_AS(mul(b, a), TapeError);
  CHECK_THROWS_AS(matmul(ra, rb), TapeError);
  CHECK_THROWS_WITH(a + b, Catch::Matchers::Contains("two different tapes"));
  const Tensor<double> one = Tensor<double>::scalar(1.0);
  CHECK_THROWS_AS(
      t1.vjp(std::span<const Var<double>>(&sb, 1), std::span<const Tensor<double>>(&one, 1),
             std::span<const Var<double>>(&a, 1)),
      TapeError);
  CHECK_THROWS_AS(
      t1.vjp(std::span<const Var<double>>(&sa, 1), std::span<const Tensor<double>>(&one, 1),
             std::span<const Var<double>>(&b, 1)),
      TapeError);
  const Tensor<double> t = Tensor<double>::full(Shape{2}, 1.0);
  CHECK_THROWS_AS(
      t1.jvp(std::span<const Var<double>>(&b, 1), std::span<const Tensor<double>>(&t, 1),
             std::span<const Var<double>>(&sa, 1)),
      TapeError);
  CHECK(t1.size() == recorded);  // nothing was recorded by the refused calls
}

// Regression test for a heap-use-after-free in the tape sweeps (found by the ops fuzz harness):
// the sweep workspace (std::vector<Tensor>) was grown slot by slot during a sweep, and growing it
// moved the Tensor handles that earlier slots' pointers still referred to. Any first forward sweep
// through two or more recorded ops, and any reverse sweep from several outputs listed in recording
// order, read freed memory (a crash in the release build, a report under ASan); fixed in
// autodiff/tape.cpp by sizing the buffers before each sweep. Runs in a child process so that a
// crash fails a check rather than the test program.
template <Real T>
void first_sweeps_match_references() {
  const Tensor<T> x0 = values<T>(Shape{2, 3}, {T(0.1), T(-0.2), T(0.3), T(0.4), T(-0.5), T(0.6)});
  const Tensor<T> t = Tensor<T>::full(x0.shape(), T(1));
  auto fail_unless = [](bool ok, const char* what) {
    if (!ok) throw std::runtime_error(what);
  };
  // Forward: the tape's first jvp through a chain equals forward mode with duals.
  {
    Dual<T> d(x0, t);
    for (int i = 0; i < 8; ++i) d = tanh(d * d + d);
    Tape<T> tape;
    const Var<T> x = tape.variable(x0);
    Var<T> y = x;
    for (int i = 0; i < 8; ++i) y = tanh(y * y + y);
    const auto jv = tape.jvp(std::span<const Var<T>>(&x, 1), std::span<const Tensor<T>>(&t, 1),
                             std::span<const Var<T>>(&y, 1));
    fail_unless(same_bits(jv[0], d.tangent()), "first Tape::jvp differs from the duals");
  }
  // Reverse: a first vjp from all intermediate outputs, listed in recording order, equals the sum
  // of single-output vjps (each on its own fresh tape).
  {
    Tape<T> tape;
    const Var<T> x = tape.variable(x0);
    std::vector<Var<T>> outputs;
    Var<T> h = x;
    for (int i = 0; i < 12; ++i) {
      h = sigmoid(h * h - h);
      outputs.push_back(h);
    }
    const std::vector<Tensor<T>> us(outputs.size(), t);
    const auto g = tape.vjp(std::span<const Var<T>>(outputs), std::span<const Tensor<T>>(us),
                            std::span<const Var<T>>(&x, 1));
    const auto h2 = tape.hvp(std::span<const Var<T>>(outputs), std::span<const Tensor<T>>(us),
                             std::span<const Var<T>>(&x, 1), std::span<const Tensor<T>>(&t, 1));
    Tensor<T> expected(x0.shape());
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      Tape<T> single;
      const Var<T> xs = single.variable(x0);
      Var<T> hs = xs;
      for (std::size_t i = 0; i <= k; ++i) hs = sigmoid(hs * hs - hs);
      const auto gk = single.vjp(std::span<const Var<T>>(&hs, 1), std::span<const Tensor<T>>(&t, 1),
                                 std::span<const Var<T>>(&xs, 1));
      for (Index e = 0; e < expected.size(); ++e) expected[e] += gk[0][e];
    }
    for (Index e = 0; e < expected.size(); ++e) {
      fail_unless(std::fabs(g[0][e] - expected[e]) <= T(1e-5) * (T(1) + std::fabs(expected[e])),
                  "first multi-output Tape::vjp differs from the single-output sum");
      fail_unless(std::isfinite(h2[0][e]), "first multi-output Tape::hvp is not finite");
    }
  }
}

TEST_CASE(
    "tapes: the first sweeps of a fresh tape give the reference results (sweep workspace "
    "growth, heap-use-after-free)",
    "[reliability][hostile][tape]") {
  CHECK(run_in_child([] { first_sweeps_match_references<double>(); }) == Outcome::returned);
  CHECK(run_in_child([] { first_sweeps_match_references<float>(); }) == Outcome::returned);
}

// ---- undefined tensors (default-constructed: no storage)
// -----------------------------------------

// An undefined Tensor, a Dual or Var built from one, or an undefined cotangent/tangent passed to a
// sweep, has shape () and no storage. The library should refuse it with an amari::Error
// (ValueError), as Tape::variable and the optimizers already do; these run in a child process
// because they used to dereference a null pointer.
TEST_CASE("undefined tensors: ops refuse them with an amari::Error instead of reading null",
          "[reliability][hostile][undefined]") {
  CHECK(run_in_child([] { (void)exp(Tensor<double>()); }) == Outcome::amari_error);
  CHECK(run_in_child([] { (void)add(Tensor<double>(), Tensor<double>::scalar(1.0)); }) ==
        Outcome::amari_error);
  CHECK(run_in_child([] { (void)sum(Tensor<float>()); }) == Outcome::amari_error);
  CHECK(run_in_child([] { (void)tanh(Dual<double>(Tensor<double>())); }) == Outcome::amari_error);
  CHECK(run_in_child([] { (void)relu(Var<double>()); }) == Outcome::amari_error);
}

TEST_CASE(
    "undefined tensors: a sweep refuses an undefined cotangent or tangent with an amari::Error",
    "[reliability][hostile][undefined]") {
  CHECK(run_in_child([] {
          Tape<double> tape;
          const Var<double> x = tape.variable(Tensor<double>::scalar(1.0));
          const Var<double> y = exp(x);
          const Tensor<double> undefined;
          (void)tape.vjp(std::span<const Var<double>>(&y, 1),
                         std::span<const Tensor<double>>(&undefined, 1),
                         std::span<const Var<double>>(&x, 1));
        }) == Outcome::amari_error);
  CHECK(run_in_child([] {
          Tape<double> tape;
          const Var<double> x = tape.variable(Tensor<double>::scalar(1.0));
          const Var<double> y = exp(x);
          const Tensor<double> undefined;
          (void)tape.jvp(std::span<const Var<double>>(&x, 1),
                         std::span<const Tensor<double>>(&undefined, 1),
                         std::span<const Var<double>>(&y, 1));
        }) == Outcome::amari_error);
}

// ---- heads with zero classes
// ------------------------------------------------------------------------

TEST_CASE("softmax head: logits with zero classes are refused, not sampled out of bounds",
          "[reliability][hostile][empty]") {
  // (N, 0) logits pass check_logits; sample() then writes y[i * 0 + (0 - 1)] = y[-1], one element
  // before the tensor (inside the allocator's padding, so no sanitizer notices).
  const nn::SoftmaxCrossEntropy<double> head;
  const Tensor<double> z(Shape{2, 0});
  CHECK(run_in_child([&] { (void)head.sample(z, 1, 0); }) == Outcome::amari_error);
  CHECK(run_in_child([&] {
          (void)head.loss(z, Tensor<double>(Shape{2, 0}));
        }) == Outcome::amari_error);
}

}  // namespace

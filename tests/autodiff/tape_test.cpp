// The tape as a user sees it: vjp / jvp / hvp over a record with several inputs and outputs,
// intermediates and constants as inputs or outputs, the *_into forms writing into caller buffers,
// the error paths (wrong shapes, wrong counts, stale Vars, foreign tapes), memory accounting,
// clear() and the per-thread current tape. Oracles: separate sweeps, dual numbers, a fresh tape
// recording a sub-function, closed forms and central finite differences.
#include <cmath>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>

#include "support/random.hpp"

namespace {

using amari::Dual;
using amari::Index;
using amari::Shape;
using amari::ShapeError;
using amari::Tape;
using amari::TapeError;
using amari::Tensor;
using amari::Var;
using amari::test::max_abs_diff;
using amari::test::normal_tensor;
using amari::test::Rng;
using amari::test::uniform_tensor;
using Catch::Matchers::Contains;

using TV = std::vector<Tensor<double>>;
using VV = std::vector<Var<double>>;

const Shape kX{3, 4}, kW{4, 5};

// Two outputs of two inputs: y0 = tanh(x w) (3, 5) and y1 = sum(exp(x) * x, axis 1) (3).
template <class V>
std::vector<V> two_outputs(const V& x, const V& w) {
  return {amari::tanh(amari::matmul(x, w)), amari::sum(amari::exp(x) * x, 1)};
}

struct Recorded {
  Tape<double> tape;
  VV in;
  VV out;
};

void record(Recorded& r, const Tensor<double>& x, const Tensor<double>& w) {
  r.in = {r.tape.variable(x), r.tape.variable(w)};
  r.out = two_outputs(r.in[0], r.in[1]);
}

// A tensor of `shape` filled with NaN, so a result that is not fully overwritten shows.
Tensor<double> nan_tensor(const Shape& shape) {
  return Tensor<double>::full(shape, std::numeric_limits<double>::quiet_NaN());
}

Tensor<double> plus(const Tensor<double>& a, const Tensor<double>& b) {
  Tensor<double> s = a.clone();
  for (Index i = 0; i < s.size(); ++i) s[i] += b[i];
  return s;
}

// Central difference of a vector-valued g along v, with one Richardson step.
Tensor<double> fd(const std::function<Tensor<double>(const Tensor<double>&)>& g,
                  const Tensor<double>& x, const Tensor<double>& v, double h = 1e-3) {
  auto at = [&](double s) {
    Tensor<double> p = x.clone();
    for (Index i = 0; i < p.size(); ++i) p[i] += s * v[i];
    return g(p);
  };
  const Tensor<double> a1 = at(h), b1 = at(-h), a2 = at(2 * h), b2 = at(-2 * h);
  Tensor<double> d(a1.shape());
  for (Index i = 0; i < d.size(); ++i) d[i] = (8 * (a1[i] - b1[i]) - (a2[i] - b2[i])) / (12 * h);
  return d;
}

double rel_err(const Tensor<double>& got, const Tensor<double>& want) {
  return amari::test::distance(got, want) / (amari::test::norm(want) + 1e-300);
}

}  // namespace

TEST_CASE("tape: vjp of several outputs with arbitrary cotangents is the sum of separate vjps",
          "[tape]") {
  Rng rng(1);
  const Tensor<double> x = normal_tensor<double>(kX, rng), w = normal_tensor<double>(kW, rng);
  Recorded r;
  record(r, x, w);
  const TV u = {normal_tensor<double>(Shape{3, 5}, rng), normal_tensor<double>(Shape{3}, rng)};
  const TV both = r.tape.vjp(r.out, u, r.in);
  const TV only0 = r.tape.vjp(std::span(r.out).first(1), std::span(u).first(1), r.in);
  const TV only1 = r.tape.vjp(std::span(r.out).last(1), std::span(u).last(1), r.in);
  REQUIRE(both.size() == 2);
  CHECK(both[0].shape() == kX);
  CHECK(both[1].shape() == kW);
  for (std::size_t i = 0; i < 2; ++i) {
    INFO("input " << i);
    CHECK(max_abs_diff(both[i], plus(only0[i], only1[i])) <= 1e-13);
  }
  // y1 does not depend on w: its vjp for w is exactly zero.
  CHECK(amari::test::norm(only1[1]) == 0.0);
  // The adjoint identity <u, J v> = <J^T u, v> against the tape's own jvp.
  const TV v = {normal_tensor<double>(kX, rng), normal_tensor<double>(kW, rng)};
  const TV jv = r.tape.jvp(r.in, v, r.out);
  const double lhs = amari::test::dot(u[0], jv[0]) + amari::test::dot(u[1], jv[1]);
  const double rhs = amari::test::dot(both[0], v[0]) + amari::test::dot(both[1], v[1]);
  CHECK(lhs == Approx(rhs).epsilon(1e-12));
}

TEST_CASE("tape: vjp with respect to an intermediate equals the vjp of the sub-function after it",
          "[tape]") {
  Rng rng(2);
  const Tensor<double> x = normal_tensor<double>(kX, rng), w = normal_tensor<double>(kW, rng);
  const Tensor<double> u = normal_tensor<double>(Shape{3, 5}, rng);
  // y = tanh(h) * h with h = x w: the cotangent of h holds x and w fixed.
  auto tail = [](const Var<double>& h) { return amari::tanh(h) * h; };
  Tape<double> tape;
  const Var<double> xv = tape.variable(x), wv = tape.variable(w);
  const Var<double> h = amari::matmul(xv, wv);
  const Var<double> y = tail(h);
  const TV got = tape.vjp(VV{y}, TV{u}, VV{h});

  Tape<double> fresh;
  const Var<double> hv = fresh.variable(h.value());
  const TV want = fresh.vjp(VV{tail(hv)}, TV{u}, VV{hv});
  CHECK(max_abs_diff(got[0], want[0]) <= 1e-14);
  // Asking for h and x together: x's cotangent still flows through h.
  const TV both = tape.vjp(VV{y}, TV{u}, VV{h, xv});
  CHECK(max_abs_diff(both[0], want[0]) <= 1e-14);
  const TV via_x = tape.vjp(VV{y}, TV{u}, VV{xv});
  CHECK(max_abs_diff(both[1], via_x[0]) <= 1e-14);
  CHECK(amari::test::norm(via_x[0]) > 0.0);
}

TEST_CASE("tape: requesting the same input twice gives two equal results", "[tape]") {
  Rng rng(3);
  const Tensor<double> x = normal_tensor<double>(kX, rng), w = normal_tensor<double>(kW, rng);
  Recorded r;
  record(r, x, w);
  const TV u = {normal_tensor<double>(Shape{3, 5}, rng), normal_tensor<double>(Shape{3}, rng)};
  const TV single = r.tape.vjp(r.out, u, VV{r.in[0]});
  const TV twice = r.tape.vjp(r.out, u, VV{r.in[0], r.in[1], r.in[0]});
  CHECK(max_abs_diff(twice[0], single[0]) <= 1e-15);
  CHECK(max_abs_diff(twice[2], single[0]) <= 1e-15);
  CHECK_FALSE(twice[0].same_storage(twice[2]));
  // Same for the caller-buffer form and for hvp.
  TV into = {nan_tensor(kX), nan_tensor(kX)};
  r.tape.vjp_into(r.out, u, VV{r.in[0], r.in[0]}, into);
  CHECK(max_abs_diff(into[0], single[0]) <= 1e-15);
  CHECK(max_abs_diff(into[1], single[0]) <= 1e-15);
  const TV v = {normal_tensor<double>(kX, rng)};
  const TV h1 = r.tape.hvp(r.out, u, VV{r.in[0]}, v);
  const TV h2 = r.tape.hvp(r.out, u, VV{r.in[0], r.in[0]}, TV{v[0], v[0]});
  CHECK(max_abs_diff(h2[0], h1[0]) <= 1e-14);
  CHECK(max_abs_diff(h2[1], h1[0]) <= 1e-14);
}

TEST_CASE("tape: constants and unrelated inputs get zero cotangents, constant outputs add nothing",
          "[tape]") {
  Rng rng(4);
  const Tensor<double> x = normal_tensor<double>(kX, rng), w = normal_tensor<double>(kW, rng);
  Tape<double> tape;
  const Var<double> xv = tape.variable(x), wv = tape.variable(w);
  const Var<double> unused = tape.variable(normal_tensor<double>(Shape{2}, rng));
  const Var<double> c(normal_tensor<double>(kW, rng));  // a constant
  CHECK_FALSE(c.is_active());
  const Var<double> y = amari::tanh(amari::matmul(xv, wv + c));
  const Var<double> const_out = amari::exp(c);  // depends on no variable: not recorded
  CHECK_FALSE(const_out.is_active());
  const Tensor<double> u = normal_tensor<double>(Shape{3, 5}, rng);
  const TV g = tape.vjp(VV{y}, TV{u}, VV{xv, c, unused});
  CHECK(g[1].shape() == kW);
  CHECK(amari::test::norm(g[1]) == 0.0);
  CHECK(g[2].shape() == Shape{2});
  CHECK(amari::test::norm(g[2]) == 0.0);
  CHECK(amari::test::norm(g[0]) > 0.0);
  const TV with_const =
      tape.vjp(VV{y, const_out}, TV{u, normal_tensor<double>(kW, rng)}, VV{xv, c});
  CHECK(max_abs_diff(with_const[0], g[0]) == 0.0);
  CHECK(amari::test::norm(with_const[1]) == 0.0);
  // Into NaN-filled buffers: zeros are written, not skipped.
  TV into = {nan_tensor(kX), nan_tensor(kW), nan_tensor(Shape{2})};
  tape.vjp_into(VV{y}, TV{u}, VV{xv, c, unused}, into);
  CHECK(max_abs_diff(into[0], g[0]) == 0.0);
  CHECK(amari::test::norm(into[1]) == 0.0);
  CHECK(amari::test::norm(into[2]) == 0.0);
  // jvp of a constant output, and of an output not depending on the seeded input, is zero.
  TV jv = {nan_tensor(kW), nan_tensor(Shape{3, 5})};
  tape.jvp_into(VV{unused}, TV{Tensor<double>::full(Shape{2}, 1.0)}, VV{const_out, y}, jv);
  CHECK(amari::test::norm(jv[0]) == 0.0);
  CHECK(amari::test::norm(jv[1]) == 0.0);
}

TEST_CASE("tape: jvp over the record equals the dual-number JVP, a variable output gets its seed",
          "[tape]") {
  Rng rng(5);
  const Tensor<double> x = normal_tensor<double>(kX, rng), w = normal_tensor<double>(kW, rng);
  const TV v = {normal_tensor<double>(kX, rng), normal_tensor<double>(kW, rng)};
  Recorded r;
  record(r, x, w);
  const TV jv = r.tape.jvp(r.in, v, r.out);
  const std::vector<Dual<double>> d = two_outputs(Dual<double>(x, v[0]), Dual<double>(w, v[1]));
  for (std::size_t k = 0; k < 2; ++k) {
    INFO("output " << k);
    CHECK(max_abs_diff(jv[k], d[k].tangent()) <= 1e-14);
  }
  // Seeding only w: the dual JVP with x a constant.
  const TV jw = r.tape.jvp(VV{r.in[1]}, TV{v[1]}, r.out);
  const std::vector<Dual<double>> dw = two_outputs(Dual<double>(x), Dual<double>(w, v[1]));
  CHECK(max_abs_diff(jw[0], dw[0].tangent()) <= 1e-14);
  CHECK(amari::test::norm(jw[1]) == 0.0);
  // A variable requested as an output: its tangent is the seed itself.
  const TV id = r.tape.jvp(r.in, v, VV{r.in[1]});
  CHECK(max_abs_diff(id[0], v[1]) == 0.0);
  CHECK_FALSE(id[0].same_storage(v[1]));
}

TEST_CASE("tape: jvp seeded at an intermediate or a constant is a TapeError", "[tape]") {
  Rng rng(6);
  Recorded r;
  record(r, normal_tensor<double>(kX, rng), normal_tensor<double>(kW, rng));
  const TV t = {Tensor<double>(Shape{3, 5})};
  CHECK_THROWS_AS(r.tape.jvp(VV{r.out[0]}, t, r.out), TapeError);
  CHECK_THROWS_WITH(r.tape.jvp(VV{r.out[0]}, t, r.out), Contains("not a variable"));
  const Var<double> c{Tensor<double>(kX)};
  CHECK_THROWS_AS(r.tape.jvp(VV{c}, TV{Tensor<double>(kX)}, r.out), TapeError);
  CHECK_THROWS_AS(r.tape.hvp(VV{r.out[1]}, TV{Tensor<double>(Shape{3})}, VV{r.out[0]}, t),
                  TapeError);
}

TEST_CASE(
    "tape: shape and count mismatches of cotangents, tangents and buffers are ShapeErrors "
    "naming the shapes",
    "[tape]") {
  Rng rng(7);
  Recorded r;
  record(r, normal_tensor<double>(kX, rng), normal_tensor<double>(kW, rng));
  const TV good_u = {Tensor<double>(Shape{3, 5}), Tensor<double>(Shape{3})};
  const TV good_v = {Tensor<double>(kX), Tensor<double>(kW)};
  // Cotangent of the wrong shape.
  const TV bad_u = {Tensor<double>(Shape{5, 3}), Tensor<double>(Shape{3})};
  CHECK_THROWS_AS(r.tape.vjp(r.out, bad_u, r.in), ShapeError);
  CHECK_THROWS_WITH(r.tape.vjp(r.out, bad_u, r.in),
                    Contains("cotangent 0") && Contains("(5, 3)") && Contains("(3, 5)"));
  // Wrong number of cotangents.
  CHECK_THROWS_AS(r.tape.vjp(r.out, std::span(good_u).first(1), r.in), ShapeError);
  // Tangent of the wrong shape, wrong number of tangents.
  const TV bad_v = {Tensor<double>(kX), Tensor<double>(Shape{5, 4})};
  CHECK_THROWS_WITH(r.tape.jvp(r.in, bad_v, r.out),
                    Contains("tangent 1") && Contains("(5, 4)") && Contains("(4, 5)"));
  CHECK_THROWS_AS(r.tape.jvp(r.in, std::span(good_v).first(1), r.out), ShapeError);
  CHECK_THROWS_AS(r.tape.hvp(r.out, good_u, r.in, bad_v), ShapeError);
  // Result buffers of the wrong shape or number.
  TV bad_in = {Tensor<double>(kX), Tensor<double>(Shape{20})};
  CHECK_THROWS_WITH(r.tape.vjp_into(r.out, good_u, r.in, bad_in),
                    Contains("(20)") && Contains("(4, 5)"));
  TV one_buffer = {Tensor<double>(kX)};
  CHECK_THROWS_AS(r.tape.vjp_into(r.out, good_u, r.in, one_buffer), ShapeError);
  TV bad_out = {Tensor<double>(Shape{3, 5}), Tensor<double>(Shape{3, 1})};
  CHECK_THROWS_WITH(r.tape.jvp_into(r.in, good_v, r.out, bad_out),
                    Contains("(3, 1)") && Contains("(3)"));
  CHECK_THROWS_AS(r.tape.jvp_into(r.in, good_v, r.out, one_buffer), ShapeError);
  CHECK_THROWS_AS(r.tape.hvp_into(r.out, good_u, r.in, good_v, bad_in), ShapeError);
  CHECK_THROWS_AS(r.tape.hvp_into(r.out, good_u, r.in, good_v, one_buffer), ShapeError);
}

TEST_CASE(
    "tape: *_into forms write views of a larger NaN-filled buffer and equal the "
    "allocating forms",
    "[tape]") {
  Rng rng(8);
  const Tensor<double> x = normal_tensor<double>(kX, rng), w = normal_tensor<double>(kW, rng);
  Recorded r;
  record(r, x, w);
  const TV u = {normal_tensor<double>(Shape{3, 5}, rng), normal_tensor<double>(Shape{3}, rng)};
  const TV v = {normal_tensor<double>(kX, rng), normal_tensor<double>(kW, rng)};
  // One flat buffer holding both results back to back, with guard elements around them.
  const Index n_in = 12 + 20, n_out = 15 + 3;
  Tensor<double> flat = nan_tensor(Shape{1 + n_in + 1});
  TV in_views = {flat.view(1, kX), flat.view(13, kW)};

  const TV g = r.tape.vjp(r.out, u, r.in);
  r.tape.vjp_into(r.out, u, r.in, in_views);
  CHECK(max_abs_diff(in_views[0], g[0]) == 0.0);
  CHECK(max_abs_diff(in_views[1], g[1]) == 0.0);
  CHECK(std::isnan(flat[0]));
  CHECK(std::isnan(flat[n_in + 1]));

  const TV jv = r.tape.jvp(r.in, v, r.out);
  Tensor<double> flat_out = nan_tensor(Shape{n_out});
  TV out_views = {flat_out.view(0, Shape{3, 5}), flat_out.view(15, Shape{3})};
  r.tape.jvp_into(r.in, v, r.out, out_views);
  CHECK(max_abs_diff(out_views[0], jv[0]) == 0.0);
  CHECK(max_abs_diff(out_views[1], jv[1]) == 0.0);

  const TV hv = r.tape.hvp(r.out, u, r.in, v);
  flat.fill(std::numeric_limits<double>::quiet_NaN());
  r.tape.hvp_into(r.out, u, r.in, v, in_views);
  CHECK(max_abs_diff(in_views[0], hv[0]) == 0.0);
  CHECK(max_abs_diff(in_views[1], hv[1]) == 0.0);
  CHECK(std::isnan(flat[0]));
  CHECK(std::isnan(flat[n_in + 1]));

  // Repeated sweeps on the same record reuse buffers and give identical results.
  for (int rep = 0; rep < 3; ++rep) {
    INFO("repeat " << rep);
    flat.fill(std::numeric_limits<double>::quiet_NaN());
    flat_out.fill(std::numeric_limits<double>::quiet_NaN());
    r.tape.vjp_into(r.out, u, r.in, in_views);
    CHECK(max_abs_diff(in_views[0], g[0]) == 0.0);
    CHECK(max_abs_diff(in_views[1], g[1]) == 0.0);
    r.tape.jvp_into(r.in, v, r.out, out_views);
    CHECK(max_abs_diff(out_views[0], jv[0]) == 0.0);
    CHECK(max_abs_diff(out_views[1], jv[1]) == 0.0);
  }
  // The hvp equals finite differences of the vjp in the direction v.
  auto vjp_at = [&](const Tensor<double>& xw) {
    Tape<double> t;
    const Var<double> xs = t.variable(xw.view(0, kX).clone()),
                      ws = t.variable(xw.view(12, kW).clone());
    const VV outs = two_outputs(xs, ws);
    const TV gs = t.vjp(outs, u, VV{xs, ws});
    Tensor<double> flat_g(Shape{n_in});
    for (Index i = 0; i < 12; ++i) flat_g[i] = gs[0][i];
    for (Index i = 0; i < 20; ++i) flat_g[12 + i] = gs[1][i];
    return flat_g;
  };
  Tensor<double> xw(Shape{n_in}), vv(Shape{n_in}), hv_flat(Shape{n_in});
  for (Index i = 0; i < 12; ++i) xw[i] = x[i], vv[i] = v[0][i], hv_flat[i] = hv[0][i];
  for (Index i = 0; i < 20; ++i)
    xw[12 + i] = w[i], vv[12 + i] = v[1][i], hv_flat[12 + i] = hv[1][i];
  CHECK(rel_err(hv_flat, fd(vjp_at, xw, vv)) <= 1e-8);
}

TEST_CASE("tape: size() counts records, memory_bytes() grows with them and is 0 after clear()",
          "[tape]") {
  Tape<double> tape;
  CHECK(tape.size() == 0);
  CHECK(tape.memory_bytes() == 0);
  const Var<double> x = tape.variable(Tensor<double>::full(Shape{1000}, 0.5));
  CHECK(tape.size() == 0);  // variables are slots, not records
  const Var<double> c(Tensor<double>::full(Shape{1000}, 2.0));
  const Var<double> k = amari::exp(c);  // constants are never recorded
  CHECK(tape.size() == 0);
  Var<double> y = amari::tanh(x);
  CHECK(tape.size() == 1);
  const std::size_t one = tape.memory_bytes();
  CHECK(one >= 1000 * sizeof(double));  // tanh keeps its output
  y = amari::tanh(y * k);
  CHECK(tape.size() == 3);
  const std::size_t three = tape.memory_bytes();
  CHECK(three > one);
  const Var<double> s = amari::sum(y);
  CHECK(tape.size() == 4);
  (void)tape.vjp(VV{s}, TV{Tensor<double>::scalar(1.0)}, VV{x});
  CHECK(tape.memory_bytes() > three);  // sweep buffers are kept for the next product
  tape.clear();
  CHECK(tape.size() == 0);
  CHECK(tape.memory_bytes() == 0);
}

TEST_CASE("tape: after clear() old Vars are invalid and the tape records again", "[tape]") {
  Rng rng(9);
  const Tensor<double> x = normal_tensor<double>(Shape{6}, rng);
  Tape<double> tape;
  const Var<double> old = tape.variable(x);
  const Var<double> old_y = amari::sum(amari::tanh(old));
  CHECK(old.is_valid());
  tape.clear();
  CHECK_FALSE(old.is_valid());
  CHECK_FALSE(old_y.is_valid());
  CHECK_THROWS_AS(amari::tanh(old), TapeError);
  CHECK_THROWS_WITH(amari::tanh(old), Contains("tanh") && Contains("cleared"));
  CHECK_THROWS_AS(tape.vjp(VV{old_y}, TV{Tensor<double>::scalar(1.0)}, VV{old}), TapeError);
  // Re-record on the cleared tape: same results as on a fresh one.
  const Var<double> xv = tape.variable(x);
  const Var<double> y = amari::sum(amari::tanh(xv) * xv);
  const TV g = tape.vjp(VV{y}, TV{Tensor<double>::scalar(1.0)}, VV{xv});
  for (Index i = 0; i < x.size(); ++i) {
    const double t = std::tanh(x[i]);
    CHECK(g[0][i] == Approx(t + (1 - t * t) * x[i]).epsilon(1e-14));
  }
  CHECK(xv.is_valid());
  CHECK(Var<double>(x).is_valid());  // a constant is always valid
}

TEST_CASE("tape: a Var outliving its tape is invalid and using it throws TapeError", "[tape]") {
  Var<double> v, y;
  {
    Tape<double> tape;
    v = tape.variable(Tensor<double>::full(Shape{3}, 1.0));
    y = amari::exp(v);
    CHECK(v.is_valid());
  }
  CHECK_FALSE(v.is_valid());
  CHECK_FALSE(y.is_valid());
  CHECK(y.value()[0] == Approx(std::exp(1.0)));  // the value itself stays readable
  CHECK_THROWS_AS(amari::exp(v), TapeError);
  CHECK_THROWS_WITH(amari::mul(y, v), Contains("mul") && Contains("destroyed"));
  Tape<double> other;
  CHECK_THROWS_AS(other.vjp(VV{y}, TV{Tensor<double>(Shape{3})}, VV{v}), TapeError);
}

TEST_CASE("tape: Vars of two tapes cannot be mixed", "[tape]") {
  Tape<double> a, b;
  const Var<double> x = a.variable(Tensor<double>::full(Shape{2}, 1.0));
  const Var<double> y = b.variable(Tensor<double>::full(Shape{2}, 2.0));
  CHECK_THROWS_AS(x + y, TapeError);
  const Var<double> fx = amari::tanh(x);
  CHECK_THROWS_WITH(b.vjp(VV{fx}, TV{Tensor<double>(Shape{2})}, VV{y}), Contains("another tape"));
  CHECK_THROWS_AS(b.jvp(VV{x}, TV{Tensor<double>(Shape{2})}, VV{y}), TapeError);
}

TEST_CASE("tape: Tape<T>::current() is one tape per thread and per element type", "[tape]") {
  Tape<double>& mine = Tape<double>::current();
  CHECK(&mine == &Tape<double>::current());
  mine.clear();
  Tape<float>::current().clear();
  const Var<double> x = mine.variable(Tensor<double>::full(Shape{4}, 0.3));
  const Var<double> y = amari::tanh(x);
  CHECK(mine.size() == 1);
  CHECK(Tape<float>::current().size() == 0);  // the float tape is another tape

  const Tape<double>* theirs = nullptr;
  std::size_t their_size = 99, their_size_after = 0;
  bool their_grad_ok = false;
  std::thread t([&] {
    Tape<double>& tape = Tape<double>::current();
    theirs = &tape;
    their_size = tape.size();
    const Var<double> z = tape.variable(Tensor<double>::full(Shape{2}, 1.0));
    const Var<double> s = amari::sum(amari::exp(z));
    their_size_after = tape.size();
    const TV g = tape.vjp(VV{s}, TV{Tensor<double>::scalar(1.0)}, VV{z});
    their_grad_ok = std::fabs(g[0][0] - std::exp(1.0)) < 1e-15;
  });
  t.join();
  CHECK(theirs != &mine);
  CHECK(their_size == 0);
  CHECK(their_size_after == 2);
  CHECK(their_grad_ok);
  CHECK(mine.size() == 1);  // the other thread recorded on its own tape
  CHECK(y.is_valid());
  mine.clear();
}

TEST_CASE("tape: an input used in several branches accumulates its cotangent (diamond graph)",
          "[tape]") {
  Rng rng(10);
  const Tensor<double> x = normal_tensor<double>(Shape{7}, rng);
  // f = sum(tanh(x) * exp(x)) + sum(x * x): x reaches the output along four edges.
  auto f = [](const Var<double>& v) {
    return amari::sum(amari::tanh(v) * amari::exp(v)) + amari::sum(v * v);
  };
  auto f_plain = [](const Tensor<double>& v) {
    return amari::sum(amari::tanh(v) * amari::exp(v)) + amari::sum(v * v);
  };
  Tape<double> tape;
  const Var<double> xv = tape.variable(x);
  const Var<double> y = f(xv);
  const TV g = tape.vjp(VV{y}, TV{Tensor<double>::scalar(1.0)}, VV{xv});
  for (Index i = 0; i < 7; ++i) {
    const double t = std::tanh(x[i]), e = std::exp(x[i]);
    CHECK(g[0][i] == Approx((1 - t * t) * e + t * e + 2 * x[i]).epsilon(1e-13));
  }
  for (int k = 0; k < 3; ++k) {
    const Tensor<double> v = normal_tensor<double>(Shape{7}, rng);
    const double directional = fd(f_plain, x, v).item();
    CHECK(amari::test::dot(g[0], v) == Approx(directional).epsilon(1e-9));
  }
  // The hvp of the diamond against finite differences of the gradient.
  const Tensor<double> v = normal_tensor<double>(Shape{7}, rng);
  const TV hv = tape.hvp(VV{y}, TV{Tensor<double>::scalar(1.0)}, VV{xv}, TV{v});
  auto grad_at = [&](const Tensor<double>& p) { return amari::grad(f, p); };
  CHECK(rel_err(hv[0], fd(grad_at, x, v)) <= 1e-8);
}

TEST_CASE("tape: hvp through a chain of 50 tanh layers stays finite and matches FD of the gradient",
          "[tape]") {
  Rng rng(11);
  const Index n = 16;
  const int layers = 50;
  std::vector<Tensor<double>> a, b;
  for (int k = 0; k < layers; ++k) {
    a.push_back(uniform_tensor<double>(Shape{n}, rng, 0.8, 1.3));
    b.push_back(uniform_tensor<double>(Shape{n}, rng, -0.3, 0.3));
  }
  const Tensor<double> c = normal_tensor<double>(Shape{n}, rng);
  auto f = [&](const Var<double>& x) {
    Var<double> h = x;
    for (int k = 0; k < layers; ++k) h = amari::tanh(h * Var<double>(a[k]) + Var<double>(b[k]));
    return amari::sum(h * Var<double>(c));
  };
  const Tensor<double> x = normal_tensor<double>(Shape{n}, rng);
  const Tensor<double> v = normal_tensor<double>(Shape{n}, rng);
  Tape<double> tape;
  const Var<double> xv = tape.variable(x);
  const Var<double> y = f(xv);
  CHECK(tape.size() == static_cast<std::size_t>(3 * layers + 2));
  const TV hv = tape.hvp(VV{y}, TV{Tensor<double>::scalar(1.0)}, VV{xv}, TV{v});
  CHECK(amari::test::norm(hv[0]) > 0.0);
  bool finite = true;
  for (Index i = 0; i < n; ++i) finite = finite && std::isfinite(hv[0][i]);
  CHECK(finite);
  auto grad_at = [&](const Tensor<double>& p) { return amari::grad(f, p); };
  CHECK(rel_err(hv[0], fd(grad_at, x, v)) <= 1e-7);
  // The transform form gives the same.
  CHECK(max_abs_diff(amari::hvp(f, x, v), hv[0]) <= 1e-14 * (1 + amari::test::norm(hv[0])));
}

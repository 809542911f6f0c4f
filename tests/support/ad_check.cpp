#include "support/ad_check.hpp"

#include <algorithm>
#include <cmath>

namespace amari::test {

namespace {

template <Real T>
std::vector<Tensor<T>> random_like(const std::vector<Tensor<T>>& xs, Rng& rng) {
  std::vector<Tensor<T>> v;
  for (const auto& x : xs) v.push_back(uniform_tensor<T>(x.shape(), rng));
  return v;
}

template <Real T>
std::vector<Tensor<T>> convert_all(const std::vector<Tensor<double>>& xs) {
  std::vector<Tensor<T>> out;
  for (const auto& x : xs) out.push_back(convert<T>(x));
  return out;
}

// x + s * d, element-wise over lists.
std::vector<Tensor<double>> shifted(const std::vector<Tensor<double>>& x, const std::vector<Tensor<double>>& d,
                                    double s) {
  std::vector<Tensor<double>> out;
  for (std::size_t i = 0; i < x.size(); ++i) {
    Tensor<double> t = x[i].clone();
    for (Index k = 0; k < t.size(); ++k) t[k] += s * d[i][k];
    out.push_back(t);
  }
  return out;
}

// ||a - b|| / (max(||a||, ||b||) + floor): relative error with an absolute floor for near-zero results.
double rel_err(const Tensor<double>& a, const Tensor<double>& b, double floor = 1e-12) {
  return distance(a, b) / (std::max(norm(a), norm(b)) + floor);
}

template <Real T>
struct Results {
  Tensor<T> y, jv_dual, jv_tape;
  std::vector<Tensor<T>> xbar, hv;
};

// Everything the modes compute for one input point, in element type T.
template <Real T>
Results<T> run_modes(const Fn<Tensor<T>>& plain, const Fn<Dual<T>>& dual, const Fn<Var<T>>& var,
                     const std::vector<Tensor<T>>& x, const std::vector<Tensor<T>>& v, const Tensor<T>* u_in,
                     Rng* rng_for_u, Tensor<T>* u_out) {
  Results<T> r;
  r.y = plain(x);
  std::vector<Dual<T>> dx;
  for (std::size_t i = 0; i < x.size(); ++i) dx.emplace_back(x[i], v[i]);
  Dual<T> yd = dual(dx);
  REQUIRE(yd.shape() == r.y.shape());
  CHECK(max_abs_diff(yd.primal(), r.y) == 0.0);
  r.jv_dual = yd.tangent_or_zeros();

  Tape<T> tape;
  std::vector<Var<T>> xv;
  for (const auto& t : x) xv.push_back(tape.variable(t));
  const Var<T> yv = var(xv);
  CHECK(max_abs_diff(yv.value(), r.y) == 0.0);
  const Var<T> outs[] = {yv};
  r.jv_tape = std::move(tape.jvp(xv, v, outs)[0]);

  Tensor<T> u = u_in ? *u_in : uniform_tensor<T>(r.y.shape(), *rng_for_u);
  if (u_out) *u_out = u;
  const Tensor<T> us[] = {u};
  r.xbar = tape.vjp(outs, us, xv);
  r.hv = tape.hvp(outs, us, xv, v);
  return r;
}

}  // namespace

std::vector<Tensor<double>> sample_inputs(const AdCase& c, Rng& rng) {
  std::vector<Tensor<double>> xs;
  for (const auto& in : c.inputs) {
    Tensor<double> t = Tensor<double>::uninitialized(in.shape);
    switch (in.domain) {
      case Domain::any:
        for (Index i = 0; i < t.size(); ++i) t[i] = rng.uniform(-2, 2);
        break;
      case Domain::positive:
        for (Index i = 0; i < t.size(); ++i) t[i] = rng.uniform(0.5, 2);
        break;
      case Domain::separated: {
        // A shuffled grid with spacing 0.25 around 0, plus small noise: no two values within 0.2,
        // none within 0.05 of zero.
        std::vector<double> vals(static_cast<std::size_t>(t.size()));
        for (std::size_t i = 0; i < vals.size(); ++i)
          vals[i] = (static_cast<double>(i) - static_cast<double>(vals.size() / 2)) * 0.25 + 0.125;
        for (std::size_t i = vals.size(); i > 1; --i) std::swap(vals[i - 1], vals[rng.below(i)]);
        for (Index i = 0; i < t.size(); ++i) t[i] = vals[static_cast<std::size_t>(i)] + rng.uniform(-0.02, 0.02);
        break;
      }
    }
    xs.push_back(t);
  }
  return xs;
}

Tensor<double> fd_directional(const std::function<Tensor<double>(const std::vector<Tensor<double>>&)>& g,
                              const std::vector<Tensor<double>>& x, const std::vector<Tensor<double>>& dir,
                              double h) {
  auto central = [&](double step) {
    Tensor<double> a = g(shifted(x, dir, step)), b = g(shifted(x, dir, -step));
    Tensor<double> d = Tensor<double>::uninitialized(a.shape());
    for (Index k = 0; k < d.size(); ++k) d[k] = (a[k] - b[k]) / (2 * step);
    return d;
  };
  Tensor<double> d1 = central(h), d2 = central(h / 2);
  Tensor<double> r = Tensor<double>::uninitialized(d1.shape());
  for (Index k = 0; k < r.size(); ++k) r[k] = (4 * d2[k] - d1[k]) / 3;
  return r;
}

void expect_ad(const AdCase& c, std::uint64_t seed) {
  INFO("case: " << c.primitive << " / " << c.label);
  Rng rng(seed);
  const std::vector<Tensor<double>> x = sample_inputs(c, rng);
  const std::vector<Tensor<double>> v = random_like(x, rng);
  const std::vector<Tensor<double>> w = random_like(x, rng);
  const std::size_t n = x.size();

  Tensor<double> u;
  const Results<double> r = run_modes<double>(c.plain_d, c.dual_d, c.var_d, x, v, nullptr, &rng, &u);
  auto plain = [&](const std::vector<Tensor<double>>& xs) { return c.plain_d(xs); };

  // 2. JVP vs finite differences.
  const Tensor<double> jv_fd = fd_directional(plain, x, v);
  CHECK(rel_err(r.jv_dual, jv_fd, 1e-10 * (1 + norm(r.y))) < 1e-7);
  // 3. Tape forward sweep == duals (same rules on the same numbers).
  CHECK(rel_err(r.jv_tape, r.jv_dual) < 1e-13);

  // 4. Adjoint identity and VJP vs finite differences of a scalar projection.
  double lhs = dot(u, r.jv_dual), rhs = 0, scale = 0;
  for (Index k = 0; k < u.size(); ++k) scale += std::fabs(u[k] * r.jv_dual[k]);
  for (std::size_t i = 0; i < n; ++i) {
    rhs += dot(r.xbar[i], v[i]);
    for (Index k = 0; k < v[i].size(); ++k) scale += std::fabs(r.xbar[i][k] * v[i][k]);
  }
  INFO("<u, J v> = " << lhs << ", sum <J^T u, v> = " << rhs);
  CHECK(std::fabs(lhs - rhs) <= 1e-12 * scale + 1e-300);
  auto projected = [&](const std::vector<Tensor<double>>& xs) {
    return Tensor<double>::scalar(dot(u, c.plain_d(xs)));
  };
  const double vjp_w_fd = fd_directional(projected, x, w)[0];
  double vjp_w = 0, vjp_scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    vjp_w += dot(r.xbar[i], w[i]);
    vjp_scale += norm(r.xbar[i]) * norm(w[i]);
  }
  CHECK(std::fabs(vjp_w - vjp_w_fd) <= 1e-7 * (vjp_scale + std::fabs(vjp_w)) + 1e-10);

  // 5. Constant inputs: one input at a time carries a tangent / is requested.
  if (n > 1) {
    for (std::size_t i = 0; i < n; ++i) {
      INFO("only input " << i << " active");
      std::vector<Dual<double>> d;
      std::vector<Tensor<double>> vi;
      for (std::size_t j = 0; j < n; ++j) {
        d.push_back(j == i ? Dual<double>(x[j], v[j]) : Dual<double>(x[j]));
        vi.push_back(j == i ? v[j] : Tensor<double>(x[j].shape()));
      }
      const Tensor<double> jv_i = c.dual_d(d).tangent_or_zeros();
      CHECK(rel_err(jv_i, fd_directional(plain, x, vi), 1e-10 * (1 + norm(r.y))) < 1e-7);

      Tape<double> tape;
      std::vector<Var<double>> xv;
      for (std::size_t j = 0; j < n; ++j) xv.push_back(j == i ? tape.variable(x[j]) : Var<double>(x[j]));
      const Var<double> outs[] = {c.var_d(xv)};
      const Tensor<double> us[] = {u};
      const Var<double> ins[] = {xv[i]};
      const Tensor<double> xbar_i = tape.vjp(outs, us, ins)[0];
      CHECK(rel_err(xbar_i, r.xbar[i]) < 1e-13);
      const Tensor<double> vs[] = {v[i]};
      const Tensor<double> hv_i = tape.hvp(outs, us, ins, vs)[0];
      // With the other inputs constant, H_ii v_i is the FD derivative of xbar_i along v_i alone.
      auto xbar_only_i = [&](const std::vector<Tensor<double>>& xs) {
        Tape<double> t2;
        std::vector<Var<double>> xv2;
        for (std::size_t j = 0; j < n; ++j) xv2.push_back(j == i ? t2.variable(xs[j]) : Var<double>(xs[j]));
        const Var<double> o2[] = {c.var_d(xv2)};
        const Var<double> in2[] = {xv2[i]};
        return t2.vjp(o2, us, in2)[0];
      };
      CHECK(rel_err(hv_i, fd_directional(xbar_only_i, x, vi), 1e-8 * (1 + norm(r.xbar[i]))) < 1e-6);
    }
  }

  // 6. Second order: H v against finite differences of the VJP, and symmetry.
  for (std::size_t i = 0; i < n; ++i) {
    INFO("hvp, input " << i);
    auto xbar_i = [&](const std::vector<Tensor<double>>& xs) {
      Tape<double> t2;
      std::vector<Var<double>> xv2;
      for (const auto& t : xs) xv2.push_back(t2.variable(t));
      const Var<double> o2[] = {c.var_d(xv2)};
      const Tensor<double> us[] = {u};
      return t2.vjp(o2, us, xv2)[i];
    };
    CHECK(rel_err(r.hv[i], fd_directional(xbar_i, x, v), 1e-8 * (1 + norm(r.xbar[i]))) < 1e-6);
  }
  {
    Tape<double> tape;
    std::vector<Var<double>> xv;
    for (const auto& t : x) xv.push_back(tape.variable(t));
    const Var<double> outs[] = {c.var_d(xv)};
    const Tensor<double> us[] = {u};
    const auto hw = tape.hvp(outs, us, xv, w);
    double w_hv = 0, v_hw = 0, s = 0;
    for (std::size_t i = 0; i < n; ++i) {
      w_hv += dot(w[i], r.hv[i]);
      v_hw += dot(v[i], hw[i]);
      s += norm(w[i]) * norm(r.hv[i]) + norm(v[i]) * norm(hw[i]);
    }
    INFO("<w, H v> = " << w_hv << ", <v, H w> = " << v_hw);
    CHECK(std::fabs(w_hv - v_hw) <= 1e-10 * s + 1e-300);
  }

  // Float: the same computations in single precision, against the double results.
  {
    INFO("float vs double");
    const auto xf = convert_all<float>(x);
    const auto vf = convert_all<float>(v);
    const Tensor<float> uf = convert<float>(u);
    const Results<float> f = run_modes<float>(c.plain_f, c.dual_f, c.var_f, xf, vf, &uf, nullptr, nullptr);
    const double tol = 2e-5;
    CHECK(rel_err(convert<double>(f.y), r.y, 1e-6) < tol);
    CHECK(rel_err(convert<double>(f.jv_dual), r.jv_dual, 1e-6) < tol);
    CHECK(rel_err(convert<double>(f.jv_tape), r.jv_dual, 1e-6) < tol);
    for (std::size_t i = 0; i < n; ++i) {
      CHECK(rel_err(convert<double>(f.xbar[i]), r.xbar[i], 1e-6) < tol);
      CHECK(rel_err(convert<double>(f.hv[i]), r.hv[i], 1e-6) < 1e-4);
    }
  }
}

void expect_errors(const AdCase& c) {
  INFO("case: " << c.primitive << " / " << c.label);
  Rng rng(7);
  const auto x = sample_inputs(c, rng);
  auto contains = [](const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; };
  {
    Tape<double> tape;
    std::vector<Var<double>> xv;
    for (const auto& t : x) xv.push_back(tape.variable(t));
    tape.clear();
    try {
      (void)c.var_d(xv);
      FAIL("no TapeError for inputs from a cleared tape");
    } catch (const TapeError& e) {
      INFO(e.what());
      CHECK(contains(e.what(), "cleared"));
    }
  }
  {
    std::vector<Var<double>> xv;
    {
      Tape<double> tape;
      for (const auto& t : x) xv.push_back(tape.variable(t));
    }
    CHECK_THROWS_AS(c.var_d(xv), TapeError);
  }
  if (x.size() > 1) {
    Tape<double> t1, t2;
    std::vector<Var<double>> xv;
    for (std::size_t i = 0; i < x.size(); ++i) xv.push_back(i == 0 ? t1.variable(x[i]) : t2.variable(x[i]));
    try {
      (void)c.var_d(xv);
      FAIL("no TapeError for inputs from two tapes");
    } catch (const TapeError& e) {
      INFO(e.what());
      CHECK(contains(e.what(), "two different tapes"));
    }
  }
  for (const auto& shapes : c.bad_shapes) {
    std::vector<Tensor<double>> bad;
    for (const auto& s : shapes) bad.push_back(Tensor<double>(s));
    try {
      (void)c.plain_d(bad);
      FAIL("no ShapeError for shapes starting with " << shapes[0].str());
    } catch (const ShapeError& e) {
      INFO(e.what());
      CHECK(contains(e.what(), c.primitive));
      for (const auto& s : shapes) CHECK(contains(e.what(), s.str()));
    }
  }
}

}  // namespace amari::test

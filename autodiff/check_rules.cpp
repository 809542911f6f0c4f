#include <amari/autodiff/check_rules.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include <amari/autodiff/ops.hpp>
#include <amari/autodiff/tape.hpp>

namespace amari {

namespace {

// splitmix64 (Steele, Lea, Flood 2014): the same numbers for a seed with any standard library.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * (static_cast<double>(next() >> 11) * 0x1.0p-53);
  }
  std::uint64_t below(std::uint64_t n) { return next() % n; }

 private:
  std::uint64_t state_;
};

using Tensors = std::vector<Tensor<double>>;

// ---- small tensor arithmetic, in double --------------------------------------------------------

template <Real T>
double dot(const Tensor<T>& a, const Tensor<T>& b) {
  double s = 0;
  for (Index i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}
double norm(const Tensor<double>& a) {
  return std::sqrt(dot(a, a));
}
double distance(const Tensor<double>& a, const Tensor<double>& b) {
  double s = 0;
  for (Index i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}
// max_i |a_i - b_i|, where two NaNs count as equal and a NaN against a number as infinitely apart.
template <Real T>
double max_abs_diff(const Tensor<T>& a, const Tensor<T>& b) {
  double m = 0;
  for (Index i = 0; i < a.size(); ++i) {
    const double x = a[i], y = b[i];
    if (std::isnan(x) || std::isnan(y)) {
      if (!(std::isnan(x) && std::isnan(y))) return std::numeric_limits<double>::infinity();
    } else if (x != y) {
      m = std::max(m, std::fabs(x - y));
    }
  }
  return m;
}
// ||a - b|| / (max(||a||, ||b||) + floor): relative error with an absolute floor for near-zero
// results.
double rel_err(const Tensor<double>& a, const Tensor<double>& b, double floor = 1e-12) {
  return distance(a, b) / (std::max(norm(a), norm(b)) + floor);
}

template <Real To, Real From>
Tensor<To> convert(const Tensor<From>& x) {
  Tensor<To> t = Tensor<To>::uninitialized(x.shape());
  for (Index i = 0; i < x.size(); ++i) t[i] = static_cast<To>(x[i]);
  return t;
}
template <Real To>
std::vector<Tensor<To>> convert_all(const Tensors& xs) {
  std::vector<Tensor<To>> out;
  for (const auto& x : xs) out.push_back(convert<To>(x));
  return out;
}

Tensor<double> uniform_tensor(const Shape& shape, Rng& rng) {
  Tensor<double> t = Tensor<double>::uninitialized(shape);
  for (Index i = 0; i < t.size(); ++i) t[i] = rng.uniform(-1, 1);
  return t;
}
Tensors random_like(const Tensors& xs, Rng& rng) {
  Tensors v;
  for (const auto& x : xs) v.push_back(uniform_tensor(x.shape(), rng));
  return v;
}

// x + s * d, element-wise over lists.
Tensors shifted(const Tensors& x, const Tensors& d, double s) {
  Tensors out;
  for (std::size_t i = 0; i < x.size(); ++i) {
    Tensor<double> t = x[i].clone();
    for (Index k = 0; k < t.size(); ++k) t[k] += s * d[i][k];
    out.push_back(t);
  }
  return out;
}

// Central differences of g along dir, Richardson-extrapolated: (4 D(h/2) - D(h)) / 3, error O(h^4).
Tensor<double> fd_directional(const std::function<Tensor<double>(const Tensors&)>& g,
                              const Tensors& x, const Tensors& dir, double h = 1e-3) {
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

Tensors sample(std::span<const InputSpec> inputs, Rng& rng) {
  Tensors xs;
  for (const auto& in : inputs) {
    Tensor<double> t = Tensor<double>::uninitialized(in.shape);
    switch (in.domain) {
      case Domain::any:
        for (Index i = 0; i < t.size(); ++i) t[i] = rng.uniform(-2, 2);
        break;
      case Domain::positive:
        for (Index i = 0; i < t.size(); ++i) t[i] = rng.uniform(0.5, 2);
        break;
      case Domain::separated: {
        std::vector<double> vals(static_cast<std::size_t>(t.size()));
        for (std::size_t i = 0; i < vals.size(); ++i)
          vals[i] = (static_cast<double>(i) - static_cast<double>(vals.size() / 2)) * 0.25 + 0.125;
        for (std::size_t i = vals.size(); i > 1; --i) std::swap(vals[i - 1], vals[rng.below(i)]);
        for (Index i = 0; i < t.size(); ++i)
          t[i] = vals[static_cast<std::size_t>(i)] + rng.uniform(-0.02, 0.02);
        break;
      }
    }
    xs.push_back(t);
  }
  return xs;
}

// ---- the checks ---------------------------------------------------------------------------------

// Everything the three modes compute at one point, in element type T.
template <Real T>
struct Results {
  Tensor<T> y, y_dual, y_var, jv_dual, jv_tape;
  std::vector<Tensor<T>> xbar, hv;
};

// f at x in the three modes, J v by duals and by the tape's forward sweep, J^T u and the
// Hessian-vector product along v by the tape. u is drawn from rng (after f is evaluated, for its
// shape) unless given.
template <Real T>
Results<T> run_modes(const ValueFn<Tensor<T>>& plain, const ValueFn<Dual<T>>& dual,
                     const ValueFn<Var<T>>& var, const std::vector<Tensor<T>>& x,
                     const std::vector<Tensor<T>>& v, Tensor<T>& u, Rng* rng) {
  Results<T> r;
  r.y = plain(x);
  std::vector<Dual<T>> dx;
  for (std::size_t i = 0; i < x.size(); ++i) dx.emplace_back(x[i], v[i]);
  const Dual<T> yd = dual(dx);
  r.y_dual = yd.primal();
  r.jv_dual = yd.tangent_or_zeros();

  Tape<T> tape;
  std::vector<Var<T>> xv;
  for (const auto& t : x) xv.push_back(tape.variable(t));
  const Var<T> yv = var(xv);
  r.y_var = yv.value();
  if (!(r.y_dual.shape() == r.y.shape()) || !(r.y_var.shape() == r.y.shape())) return r;
  const Var<T> outs[] = {yv};
  r.jv_tape = std::move(tape.jvp(xv, v, outs)[0]);
  if (rng) u = convert<T>(uniform_tensor(r.y.shape(), *rng));
  const Tensor<T> us[] = {u};
  r.xbar = tape.vjp(outs, us, xv);
  r.hv = tape.hvp(outs, us, xv, v);
  return r;
}

// Appends one check to the report.
void add(CheckReport& report, std::string name, double error, double tolerance,
         std::string detail = {}) {
  report.checks.push_back({std::move(name), error, tolerance, std::move(detail)});
}

std::string fmt(const char* format, double a, double b) {
  char buf[128];
  std::snprintf(buf, sizeof buf, format, a, b);
  return buf;
}

// " (input i)" when f has several inputs, else nothing.
std::string of_input(std::size_t i, std::size_t n) {
  return n > 1 ? " (input " + std::to_string(i) + ")" : "";
}

// The point, the directions and the double results every check compares against.
struct Point {
  Tensors x, v, w;
  Tensor<double> u;
  Results<double> r;
};

// True if the three modes returned values of one shape (else the later checks cannot run).
template <Real T>
bool check_primal(CheckReport& report, const Results<T>& r, const char* prefix) {
  const std::string p = prefix;
  if (!(r.y_dual.shape() == r.y.shape()) || !(r.y_var.shape() == r.y.shape())) {
    add(report, p + "primal: Dual and Var values have the shape of the Tensor value (1 if not)", 1,
        0,
        "shapes " + r.y.shape().str() + ", " + r.y_dual.shape().str() + ", " +
            r.y_var.shape().str());
    return false;
  }
  add(report, p + "primal: Dual and Var values equal the Tensor value (max abs difference)",
      std::max(max_abs_diff(r.y_dual, r.y), max_abs_diff(r.y_var, r.y)), 0);
  return true;
}

void check_first_order(CheckReport& report, const CheckedFunction& f, const Point& p) {
  const Results<double>& r = p.r;
  auto plain = [&](const Tensors& xs) { return f.plain_d(xs); };
  const Tensor<double> jv_fd = fd_directional(plain, p.x, p.v);
  add(report, "JVP: forward mode (Dual) J v vs finite differences (relative)",
      rel_err(r.jv_dual, jv_fd, 1e-10 * (1 + norm(r.y))), 1e-7);
  add(report, "JVP: tape forward sweep equals forward mode (relative)",
      rel_err(r.jv_tape, r.jv_dual), 1e-13);

  double lhs = dot(p.u, r.jv_dual), rhs = 0, scale = 0;
  for (Index k = 0; k < p.u.size(); ++k) scale += std::fabs(p.u[k] * r.jv_dual[k]);
  for (std::size_t i = 0; i < p.x.size(); ++i) {
    rhs += dot(r.xbar[i], p.v[i]);
    for (Index k = 0; k < p.v[i].size(); ++k) scale += std::fabs(r.xbar[i][k] * p.v[i][k]);
  }
  add(report, "VJP: adjoint identity <u, J v> = sum_i <J_i^T u, v_i> (absolute)",
      std::fabs(lhs - rhs), 1e-12 * scale + 1e-300,
      fmt("<u, J v> = %.6g, sum <J^T u, v> = %.6g", lhs, rhs));

  auto projected = [&](const Tensors& xs) {
    return Tensor<double>::scalar(dot(p.u, f.plain_d(xs)));
  };
  const double vjp_w_fd = fd_directional(projected, p.x, p.w)[0];
  double vjp_w = 0, vjp_scale = 0;
  for (std::size_t i = 0; i < p.x.size(); ++i) {
    vjp_w += dot(r.xbar[i], p.w[i]);
    vjp_scale += norm(r.xbar[i]) * norm(p.w[i]);
  }
  add(report, "VJP: <J^T u, w> vs finite differences of <u, f(x + h w)> (absolute)",
      std::fabs(vjp_w - vjp_w_fd), 1e-7 * (vjp_scale + std::fabs(vjp_w)) + 1e-10,
      fmt("<J^T u, w> = %.6g, finite differences %.6g", vjp_w, vjp_w_fd));
}

// The reverse sweep hands a rule the first contribution to an adjoint buffer as a fresh buffer to
// overwrite, and later ones to add to (NodeBase::vjp_fresh, "Overwrite" in ops/primitive.hpp).
// Fresh: the result buffers are filled with NaN, which a rule that reads a fresh buffer keeps.
// Adding: inputs also feed reshape(x_i), recorded after f, so the sweep reaches x_i's buffer
// through reshape first (cotangent w_i) and f's rules then add J_i^T u to it; once for every
// input and once for the even-numbered ones (mixed fresh and adding buffers in one rule).
void check_adjoint_buffers(CheckReport& report, const CheckedFunction& f, const Point& p) {
  const std::size_t n = p.x.size();
  {
    Tape<double> tape;
    std::vector<Var<double>> xv;
    for (const auto& t : p.x) xv.push_back(tape.variable(t));
    const Var<double> outs[] = {f.var_d(xv)};
    const Tensor<double> us[] = {p.u};
    Tensors results;
    for (const auto& t : p.x) {
      results.push_back(Tensor<double>::uninitialized(t.shape()));
      results.back().fill(std::numeric_limits<double>::quiet_NaN());
    }
    tape.vjp_into(outs, us, xv, results);
    double diff = 0;
    for (std::size_t i = 0; i < n; ++i) diff = std::max(diff, max_abs_diff(results[i], p.r.xbar[i]));
    add(report, "VJP: into NaN-filled buffers equals J^T u (the rules overwrite fresh adjoints)", diff, 0);
  }
  for (const std::size_t every : {std::size_t{1}, std::size_t{2}}) {
    Tape<double> tape;
    std::vector<Var<double>> xv;
    for (const auto& t : p.x) xv.push_back(tape.variable(t));
    std::vector<Var<double>> outs{f.var_d(xv)};
    Tensors cotangents{p.u};
    for (std::size_t i = 0; i < n; i += every) {
      outs.push_back(reshape(xv[i], p.x[i].shape()));
      cotangents.push_back(p.w[i]);
    }
    const Tensors sums = tape.vjp(outs, cotangents, xv);
    double err = 0;
    for (std::size_t i = 0; i < n; ++i) {
      Tensor<double> added = sums[i].clone();
      const bool seeded = i % every == 0;
      for (Index k = 0; seeded && k < added.size(); ++k) added[k] -= p.w[i][k];
      err = std::max(err, distance(added, p.r.xbar[i]) /
                              (norm(p.r.xbar[i]) + (seeded ? norm(p.w[i]) : 0.0) + 1e-300));
    }
    add(report,
        every == 1 ? "VJP: added to adjoints that hold a value, J^T u + w - w = J^T u (relative)"
                   : "VJP: even inputs' adjoints hold a value, odd ones fresh (relative)",
        err, 1e-14);
  }
}

// With several inputs: input i alone carries a tangent / is requested, the others are constants
// (the rules' "zero tangent" and "not wanted" paths).
void check_constant_inputs(CheckReport& report, const CheckedFunction& f, const Point& p) {
  const std::size_t n = p.x.size();
  auto plain = [&](const Tensors& xs) { return f.plain_d(xs); };
  const Tensor<double> us[] = {p.u};
  for (std::size_t i = 0; i < n; ++i) {
    const std::string in = " (input " + std::to_string(i) + " alone, the others constant)";
    std::vector<Dual<double>> d;
    Tensors vi;
    for (std::size_t j = 0; j < n; ++j) {
      d.push_back(j == i ? Dual<double>(p.x[j], p.v[j]) : Dual<double>(p.x[j]));
      vi.push_back(j == i ? p.v[j] : Tensor<double>(p.x[j].shape()));
    }
    const Tensor<double> jv_i = f.dual_d(d).tangent_or_zeros();
    add(report, "JVP: J_i v_i vs finite differences (relative)" + in,
        rel_err(jv_i, fd_directional(plain, p.x, vi), 1e-10 * (1 + norm(p.r.y))), 1e-7);

    Tape<double> tape;
    std::vector<Var<double>> xv;
    for (std::size_t j = 0; j < n; ++j)
      xv.push_back(j == i ? tape.variable(p.x[j]) : Var<double>(p.x[j]));
    const Var<double> outs[] = {f.var_d(xv)};
    const Var<double> ins[] = {xv[i]};
    const Tensor<double> xbar_i = tape.vjp(outs, us, ins)[0];
    add(report, "VJP: J_i^T u equals the VJP of all inputs (relative)" + in,
        rel_err(xbar_i, p.r.xbar[i]), 1e-13);

    const Tensor<double> vs[] = {p.v[i]};
    const Tensor<double> hv_i = tape.hvp(outs, us, ins, vs)[0];
    // With the other inputs constant, H_ii v_i is the derivative of xbar_i along v_i alone.
    auto xbar_only_i = [&](const Tensors& xs) {
      Tape<double> t2;
      std::vector<Var<double>> xv2;
      for (std::size_t j = 0; j < n; ++j)
        xv2.push_back(j == i ? t2.variable(xs[j]) : Var<double>(xs[j]));
      const Var<double> o2[] = {f.var_d(xv2)};
      const Var<double> in2[] = {xv2[i]};
      return t2.vjp(o2, us, in2)[0];
    };
    add(report, "second order: H_ii v_i vs finite differences of J_i^T u (relative)" + in,
        rel_err(hv_i, fd_directional(xbar_only_i, p.x, vi), 1e-8 * (1 + norm(p.r.xbar[i]))), 1e-6);
  }
}

void check_second_order(CheckReport& report, const CheckedFunction& f, const Point& p) {
  const std::size_t n = p.x.size();
  const Tensor<double> us[] = {p.u};
  for (std::size_t i = 0; i < n; ++i) {
    auto xbar_i = [&](const Tensors& xs) {
      Tape<double> t2;
      std::vector<Var<double>> xv2;
      for (const auto& t : xs) xv2.push_back(t2.variable(t));
      const Var<double> o2[] = {f.var_d(xv2)};
      return t2.vjp(o2, us, xv2)[i];
    };
    add(report,
        "second order: H v vs finite differences of J^T u along v (relative)" + of_input(i, n),
        rel_err(p.r.hv[i], fd_directional(xbar_i, p.x, p.v), 1e-8 * (1 + norm(p.r.xbar[i]))), 1e-6);
  }
  Tape<double> tape;
  std::vector<Var<double>> xv;
  for (const auto& t : p.x) xv.push_back(tape.variable(t));
  const Var<double> outs[] = {f.var_d(xv)};
  const auto hw = tape.hvp(outs, us, xv, p.w);
  double w_hv = 0, v_hw = 0, s = 0;
  for (std::size_t i = 0; i < n; ++i) {
    w_hv += dot(p.w[i], p.r.hv[i]);
    v_hw += dot(p.v[i], hw[i]);
    s += norm(p.w[i]) * norm(p.r.hv[i]) + norm(p.v[i]) * norm(hw[i]);
  }
  add(report, "second order: symmetry <w, H v> = <v, H w> (absolute)", std::fabs(w_hv - v_hw),
      1e-10 * s + 1e-300, fmt("<w, H v> = %.6g, <v, H w> = %.6g", w_hv, v_hw));

  // The rules add to adjoint tangents (custom_primitive.hpp): every input also feeds x_i * x_i,
  // recorded after f with cotangent w_i, whose second-order term 2 w_i v_i the sweep writes into
  // x_i's adjoint tangent before f's rules add theirs.
  Tape<double> both;
  std::vector<Var<double>> xb;
  for (const auto& t : p.x) xb.push_back(both.variable(t));
  std::vector<Var<double>> ends{f.var_d(xb)};
  Tensors cotangents{p.u};
  for (std::size_t i = 0; i < n; ++i) {
    ends.push_back(xb[i] * xb[i]);
    cotangents.push_back(p.w[i]);
  }
  const Tensors hv_both = both.hvp(ends, cotangents, xb, p.v);
  double err = 0;
  for (std::size_t i = 0; i < n; ++i) {
    Tensor<double> h = hv_both[i].clone();
    double seeded = 0;
    for (Index k = 0; k < h.size(); ++k) {
      h[k] -= 2 * p.w[i][k] * p.v[i][k];
      seeded += 4 * p.w[i][k] * p.w[i][k] * p.v[i][k] * p.v[i][k];
    }
    err = std::max(err, distance(h, p.r.hv[i]) / (norm(p.r.hv[i]) + std::sqrt(seeded) + 1e-300));
  }
  add(report,
      "second order: added to adjoint tangents that hold a value, H v + 2 w v - 2 w v = H v "
      "(relative)",
      err, 1e-13);
}

// The same evaluations in single precision, against the double results.
void check_float(CheckReport& report, const CheckedFunction& f, const Point& p) {
  const auto xf = convert_all<float>(p.x);
  const auto vf = convert_all<float>(p.v);
  Tensor<float> uf = convert<float>(p.u);
  const Results<float> r = run_modes<float>(f.plain_f, f.dual_f, f.var_f, xf, vf, uf, nullptr);
  if (!check_primal(report, r, "float ")) return;
  const double tol = 2e-5;
  const auto err = [](const Tensor<float>& a, const Tensor<double>& b) {
    return rel_err(convert<double>(a), b, 1e-6);
  };
  add(report, "float vs double: primal (relative)", err(r.y, p.r.y), tol);
  add(report, "float vs double: JVP by forward mode (relative)", err(r.jv_dual, p.r.jv_dual), tol);
  add(report, "float vs double: JVP by the tape (relative)", err(r.jv_tape, p.r.jv_dual), tol);
  const std::size_t n = p.x.size();
  for (std::size_t i = 0; i < n; ++i)
    add(report, "float vs double: VJP (relative)" + of_input(i, n), err(r.xbar[i], p.r.xbar[i]),
        tol);
  for (std::size_t i = 0; i < n; ++i)
    add(report, "float vs double: H v (relative)" + of_input(i, n), err(r.hv[i], p.r.hv[i]), 1e-4);
}

std::string subject_of(const std::string& name, const CheckedFunction& f,
                       const CheckOptions& options) {
  std::string t = name + ", input";
  t += f.inputs.size() == 1 ? " " : "s ";
  for (std::size_t i = 0; i < f.inputs.size(); ++i) t += (i ? ", " : "") + f.inputs[i].shape.str();
  t += options.point.empty() ? ", seed " + std::to_string(options.seed) : ", given point";
  return t;
}

}  // namespace

std::vector<Tensor<double>> sample_inputs(std::span<const InputSpec> inputs, std::uint64_t seed) {
  Rng rng(seed);
  return sample(inputs, rng);
}

CheckReport check_rules(const std::string& name, const CheckedFunction& f,
                        const CheckOptions& options) {
  if (f.inputs.empty()) throw ValueError("check_rules: " + name + " has no input to differentiate");
  if (!options.point.empty()) {
    bool fits = options.point.size() == f.inputs.size();
    for (std::size_t i = 0; fits && i < f.inputs.size(); ++i)
      fits = options.point[i].defined() && options.point[i].shape() == f.inputs[i].shape;
    if (!fits) {
      throw ShapeError("check_rules: " + name + ": the given point has " +
                       std::to_string(options.point.size()) + " tensors (or undefined ones), not " +
                       std::to_string(f.inputs.size()) + " of the declared input shapes");
    }
  }
  CheckReport report;
  report.subject = subject_of(name, f, options);

  // The draws come in the order of amari's registry tests: x, v, w, then u once f(x) has a shape.
  Rng rng(options.seed);
  Point p;
  p.x = options.point.empty() ? sample(f.inputs, rng) : options.point;
  p.v = random_like(p.x, rng);
  p.w = random_like(p.x, rng);
  p.r = run_modes<double>(f.plain_d, f.dual_d, f.var_d, p.x, p.v, p.u, &rng);
  if (!check_primal(report, p.r, "")) return report;

  check_first_order(report, f, p);
  check_adjoint_buffers(report, f, p);
  if (p.x.size() > 1) check_constant_inputs(report, f, p);
  check_second_order(report, f, p);
  check_float(report, f, p);
  return report;
}

bool CheckReport::ok() const {
  return std::all_of(checks.begin(), checks.end(), [](const CheckResult& c) { return c.passed(); });
}

std::vector<std::string> CheckReport::failed() const {
  std::vector<std::string> names;
  for (const auto& c : checks)
    if (!c.passed()) names.push_back(c.name);
  return names;
}

std::string CheckReport::str() const {
  std::size_t width = 0;
  for (const auto& c : checks) width = std::max(width, c.name.size());
  const std::size_t failures = failed().size();
  std::string out = "check_rules: " + subject + ": " + std::to_string(checks.size()) + " checks, " +
                    (failures ? std::to_string(failures) + " FAILED" : std::string("all passed")) +
                    "\n";
  for (const auto& c : checks) {
    out += c.passed() ? "PASS  " : "FAIL  ";
    out += c.name + std::string(width - c.name.size(), ' ');
    out += fmt("  error %9.2e  tolerance %9.2e", c.error, c.tolerance);
    if (!c.detail.empty()) out += "  (" + c.detail + ")";
    out += '\n';
  }
  return out;
}

}  // namespace amari

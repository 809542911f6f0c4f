// Stochastic Lanczos quadrature (see spectral_density.hpp).
#include <amari/curvature/spectral_density.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include <amari/curvature/detail/format.hpp>

namespace amari::curvature {
namespace {

using detail::format_number;

void check_sigma(const char* fn, double sigma) {
  if (!(sigma > 0.0) || !std::isfinite(sigma)) {
    throw ValueError(std::string(fn) + ": sigma = " + format_number(sigma) +
                     ", expected positive and finite");
  }
}

}  // namespace

template <Real T>
SpectralDensity spectral_density(LinearOperator<T>& A, const SpectralDensityOptions& o) {
  if (o.probes < 1) {
    throw ValueError("spectral_density: probes = " + std::to_string(o.probes) + ", expected >= 1");
  }
  if (o.steps < 1) {
    throw ValueError("spectral_density: steps = " + std::to_string(o.steps) + ", expected >= 1");
  }
  if (!(o.breakdown_tolerance >= 0.0)) {
    throw ValueError("spectral_density: breakdown_tolerance = " +
                     format_number(o.breakdown_tolerance) + ", expected >= 0");
  }
  SpectralDensity out;
  out.probe_offsets.push_back(0);
  const Index n = A.size();
  if (n == 0) {
    out.message = "empty operator (n = 0): no eigenvalues";
    return out;
  }
  const int steps = static_cast<int>(std::min<Index>(o.steps, n));
  LanczosProcess<T> process(A, o.breakdown_tolerance);
  Tensor<T> probe = Tensor<T>::uninitialized(Shape{n});
  std::vector<double> tau;  // unnormalized weights, divided by the number of probes at the end
  for (int l = 0; l < o.probes; ++l) {
    fill_probe(probe, o.distribution, o.seed, static_cast<std::uint64_t>(l));
    process.restart(probe);  // normalizes the probe
    while (process.steps() < steps && process.step()) {
    }
    out.products += process.products();
    if (process.status() == SpectrumStatus::non_finite) {
      out.status = SpectrumStatus::non_finite;
      out.message = "probe " + std::to_string(l) + ": " + process.message() + "; using the " +
                    std::to_string(l) + " probes before it";
      break;
    }
    if (process.status() == SpectrumStatus::invariant_subspace) ++out.early_stops;
    const std::vector<double>& beta = process.beta();
    const std::vector<double> off(beta.begin(), beta.end() - 1);
    const TridiagonalEigen eig = symmetric_tridiagonal_eigen(process.alpha(), off, false);
    for (std::size_t k = 0; k < eig.values.size(); ++k) {
      out.nodes.push_back(eig.values[k]);
      tau.push_back(eig.first[k] * eig.first[k]);
    }
    ++out.probes;
    out.probe_offsets.push_back(static_cast<int>(out.nodes.size()));
  }
  out.weights.resize(tau.size());
  for (std::size_t k = 0; k < tau.size(); ++k) out.weights[k] = tau[k] / out.probes;
  if (out.status == SpectrumStatus::converged) {
    out.message = std::to_string(out.probes) + " " + to_string(o.distribution) + " probes x " +
                  std::to_string(steps) + " Lanczos steps";
    if (out.early_stops > 0) {
      out.message += "; " + std::to_string(out.early_stops) +
                     " probes stopped early at an invariant subspace (exact quadrature)";
    }
  }
  return out;
}

double spectral_moment(const SpectralDensity& density, int p) {
  if (p < 0) throw ValueError("spectral_moment: p = " + std::to_string(p) + ", expected >= 0");
  double s = 0.0;
  for (std::size_t k = 0; k < density.nodes.size(); ++k) {
    s += density.weights[k] * std::pow(density.nodes[k], p);
  }
  return s;
}

std::vector<double> broadened_density(const SpectralDensity& density,
                                      const std::vector<double>& grid, double sigma) {
  check_sigma("broadened_density", sigma);
  const double c = 1.0 / (sigma * std::sqrt(2.0 * 3.14159265358979323846));
  std::vector<double> rho(grid.size(), 0.0);
  for (std::size_t i = 0; i < grid.size(); ++i) {
    double s = 0.0;
    for (std::size_t k = 0; k < density.nodes.size(); ++k) {
      const double z = (grid[i] - density.nodes[k]) / sigma;
      s += density.weights[k] * std::exp(-0.5 * z * z);
    }
    rho[i] = c * s;
  }
  return rho;
}

DensityCurve broadened_density(const SpectralDensity& density, double sigma, int points,
                               double margin) {
  check_sigma("broadened_density", sigma);
  if (points < 2) {
    throw ValueError("broadened_density: points = " + std::to_string(points) + ", expected >= 2");
  }
  if (!(margin >= 0.0) || !std::isfinite(margin)) {
    throw ValueError("broadened_density: margin = " + format_number(margin) +
                     ", expected >= 0 and finite");
  }
  if (density.nodes.empty()) throw ValueError("broadened_density: the density has no nodes");
  const auto [lo, hi] = std::minmax_element(density.nodes.begin(), density.nodes.end());
  const double a = *lo - margin * sigma;
  const double b = *hi + margin * sigma;
  DensityCurve curve;
  curve.spacing = (b - a) / (points - 1);
  curve.t.resize(static_cast<std::size_t>(points));
  for (int i = 0; i < points; ++i) curve.t[static_cast<std::size_t>(i)] = a + i * curve.spacing;
  curve.density = broadened_density(density, curve.t, sigma);
  return curve;
}

template SpectralDensity spectral_density<float>(LinearOperator<float>&,
                                                 const SpectralDensityOptions&);
template SpectralDensity spectral_density<double>(LinearOperator<double>&,
                                                  const SpectralDensityOptions&);

}  // namespace amari::curvature

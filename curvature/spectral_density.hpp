// The eigenvalue density of a symmetric LinearOperator by stochastic Lanczos quadrature (SLQ;
// Ubaru, Chen, Saad 2017, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature";
// Ghorbani, Krishnan, Xiao 2019, "An investigation into neural net optimization via Hessian
// eigenvalue density"; Papyan 2019).
//
// The spectral density of A (n x n, eigenvalues lambda_i) is phi(t) = (1/n) sum_i delta(t -
// lambda_i), so that int f(t) phi(t) dt = tr(f(A)) / n. For a unit vector u uniformly distributed
// on the sphere (a normalized Rademacher or Gaussian probe), E[u^T f(A) u] = tr(f(A)) / n. Running
// m Lanczos steps from q_1 = u gives T_m = S diag(theta) S^T, and the m-point Gauss quadrature
//   u^T f(A) u ~ sum_k tau_k f(theta_k),  tau_k = (e_1^T s_k)^2,
// is exact for polynomials f of degree <= 2m - 1 (Golub, Meurant 2010, ch. 6). Averaging over
// probes l = 1..L gives the discrete measure with nodes theta_k^(l) and weights tau_k^(l) / L,
// whose weights sum to 1. Broadening each node by a Gaussian of width sigma gives a smooth density.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <amari/autodiff/tensor.hpp>
#include <amari/curvature/lanczos.hpp>
#include <amari/curvature/linear_operator.hpp>

namespace amari::curvature {

/// Options of spectral_density().
struct SpectralDensityOptions {
  /// Number of random probes L (>= 1). The estimate of tr(f(A))/n has a standard error of order
  /// 1/sqrt(L n) for Rademacher probes on a dense A.
  int probes = 10;
  /// Lanczos steps m per probe (>= 1), clamped to n: nodes per probe. Quadrature is exact for
  /// moments of degree <= 2m - 1.
  int steps = 30;
  /// Distribution of the probe entries (each probe is normalized to unit length).
  ProbeDistribution distribution = ProbeDistribution::rademacher;
  /// Seed of the probes: probe l is fill_probe(.., seed, l).
  std::uint64_t seed = 0;
  /// As LanczosOptions::breakdown_tolerance (0: automatic). A probe whose Krylov space is
  /// invariant stops early with an exact quadrature on fewer nodes.
  double breakdown_tolerance = 0.0;
};

/// A discrete estimate of the spectral density: sum_k weights[k] delta(t - nodes[k]).
struct SpectralDensity {
  /// Ritz values theta_k^(l) of all probes, probe by probe (ascending within a probe).
  std::vector<double> nodes;
  /// (e_1^T s_k)^2 / L for each node; they sum to 1 (up to rounding) unless no probe completed.
  std::vector<double> weights;
  /// Nodes of probe l are [probe_offsets[l], probe_offsets[l + 1]); probes + 1 entries.
  std::vector<int> probe_offsets;
  /// Probes L used (completed).
  int probes = 0;
  /// Probes whose Krylov space became invariant before m steps (their quadrature is exact).
  int early_stops = 0;
  /// Operator products made (about L m).
  int products = 0;
  /// converged: every requested probe was used; non_finite: a product failed (the message names
  /// the probe and the iteration) and only the probes before it are used.
  SpectrumStatus status = SpectrumStatus::converged;
  /// What happened.
  std::string message;
};

/// The SLQ estimate of the spectral density of a symmetric A (see the top of this file): L probes,
/// m Lanczos steps each with full reorthogonalization. Cost: L m products, L m^2 n multiply-adds of
/// reorthogonalization, (m + 1) n elements of memory. n = 0 gives no nodes and status converged.
/// A NaN/inf product stops the run (status non_finite); the weights are then renormalized over the
/// probes that completed, so the result is still a probability measure (empty if none did).
/// ValueError (naming spectral_density and the value) if probes < 1, steps < 1 or the breakdown
/// tolerance is negative or NaN.
template <Real T>
SpectralDensity spectral_density(LinearOperator<T>& A, const SpectralDensityOptions& options = {});

/// sum_k w_k theta_k^p: the SLQ estimate of tr(A^p) / n (exact in expectation over the probes for
/// 2 steps - 1 >= p). p >= 0 (ValueError otherwise). Cost: O(nodes).
double spectral_moment(const SpectralDensity& density, int p);

/// The density broadened by a Gaussian kernel of width sigma, evaluated at `grid`:
///   rho(t) = sum_k w_k exp(-(t - theta_k)^2 / (2 sigma^2)) / (sigma sqrt(2 pi)),
/// a probability density (it integrates to sum_k w_k = 1 over the real line). ValueError if
/// sigma <= 0 or not finite. Cost: O(nodes * grid points).
std::vector<double> broadened_density(const SpectralDensity& density,
                                      const std::vector<double>& grid, double sigma);

/// A density sampled on an equispaced grid.
struct DensityCurve {
  /// Grid points t_0 < .. < t_{points-1}, equispaced.
  std::vector<double> t;
  /// rho(t_i).
  std::vector<double> density;
  /// The grid spacing; the trapezoid sum of density * spacing is ~1 when the grid covers the
  /// nodes with a margin of a few sigma.
  double spacing = 0.0;
};

/// broadened_density on `points` equispaced points from min(nodes) - margin * sigma to
/// max(nodes) + margin * sigma (margin 6 leaves out less than 1e-9 of the mass). ValueError if
/// sigma <= 0, points < 2, margin < 0 or the density has no nodes.
DensityCurve broadened_density(const SpectralDensity& density, double sigma, int points = 1000,
                               double margin = 6.0);

extern template SpectralDensity spectral_density<float>(LinearOperator<float>&,
                                                        const SpectralDensityOptions&);
extern template SpectralDensity spectral_density<double>(LinearOperator<double>&,
                                                         const SpectralDensityOptions&);

}  // namespace amari::curvature

// Internal: one record of the tape, with the derivative rules of its primitive behind a virtual
// call per record (never per element).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <amari/autodiff/tensor.hpp>

namespace amari::detail {

/// Largest number of tensor inputs a primitive takes.
inline constexpr int kMaxArity = 3;

/// A recorded application of a primitive: which tape slots it read and wrote, and the residuals its
/// rules need. Pointer arrays have kMaxArity entries; a null entry means "zero" (tangents) or "not
/// wanted" (cotangents).
template <Real T>
class NodeBase {
 public:
  virtual ~NodeBase() = default;
  /// Name of the primitive, for error messages and tape dumps.
  virtual const char* name() const = 0;
  /// True when the primitive is linear in its inputs (its VJP does not depend on them).
  virtual bool is_linear() const = 0;
  /// JVP rule: dy = sum_i J_i dx[i]; overwrites dy. At least one dx[i] is non-null.
  virtual void jvp(const Tensor<T>* const* dx, Tensor<T>& dy) const = 0;
  /// VJP rule: xbar[i] += J_i^T ybar for each non-null xbar[i].
  virtual void vjp(const Tensor<T>& ybar, Tensor<T>* const* xbar) const = 0;
  /// The VJP rule where some adjoint buffers are fresh: bit i of `fresh` set means xbar[i] holds
  /// no value yet (its contents are arbitrary) and receives xbar[i] = J_i^T ybar; the others
  /// accumulate as in vjp(). The reverse sweep passes the first contribution to each adjoint this
  /// way, so a buffer is written once instead of zero-filled and then read back and written. This
  /// default zero-fills the fresh buffers and calls vjp(); primitives whose rules can write
  /// directly override it (autodiff/ops/primitive.hpp, "Overwrite").
  virtual void vjp_fresh(const Tensor<T>& ybar, Tensor<T>* const* xbar, unsigned fresh) const {
    for (int i = 0; i < kMaxArity; ++i) {
      if ((fresh >> i & 1u) && xbar[i]) xbar[i]->fill(T(0));
    }
    vjp(ybar, xbar);
  }
  /// Tangent of the VJP rule along the input tangents dx (output tangent dy), ybar held fixed:
  /// xbar_dot[i] += d/de [J_i(x + e dx)^T ybar]. Drives exact Hessian-vector products
  /// (forward-over-reverse). Never called for linear primitives.
  virtual void vjp_tangent(const Tensor<T>* const* dx, const Tensor<T>& dy, const Tensor<T>& ybar,
                           Tensor<T>* const* xbar_dot) const = 0;
  /// Appends the residual tensors this record keeps alive (for memory accounting and tape dumps):
  /// exactly arity + 1 entries, x0..x(arity-1) then y, undefined for residuals not saved.
  virtual void collect_saved(std::vector<const Tensor<T>*>& out) const = 0;
  /// Which residuals the rules read (save::x0 | save::x1 | save::x2 | save::y), for tape dumps.
  virtual unsigned saved_mask() const { return 0; }
  /// The primitive's attributes, e.g. "axis=1 keep_dims=0" ("" if none), for tape dumps.
  virtual std::string describe() const { return {}; }

  /// Tape slots of the inputs; -1 for constants (values not depending on any variable).
  std::array<std::int32_t, kMaxArity> inputs{-1, -1, -1};
  int arity = 0;
  /// Tape slot of the output.
  std::int32_t output = -1;
};

}  // namespace amari::detail

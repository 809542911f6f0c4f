// Reductions and normalizations along one axis (internal).
//
// A tensor reduced along `axis` is viewed as (outer, n, inner): n is the reduced extent, outer the
// product of the axes before it, inner of the axes after it. The result has shape (outer, inner)
// in memory, whether the caller keeps the reduced axis as size 1 or drops it.
#pragma once

#include <amari/autodiff/shape.hpp>

namespace amari::kernels {

/// The (outer, n, inner) view of a tensor for a reduction along one axis.
struct AxisView {
  Index outer = 1;
  Index n = 1;
  Index inner = 1;
};

/// View of `shape` for a reduction along `axis` (already normalized to 0..rank-1). When an axis
/// other than `axis` is empty, outer = inner = 0 (no slice); the products never overflow. Every
/// kernel below returns at once when there is no slice (and softmax / log_softmax when n = 0);
/// a reduction over an empty axis (n = 0) writes its identity: 0 for sums, -inf for max and
/// logsumexp.
AxisView axis_view(const Shape& shape, int axis);
/// Shape after reducing `axis` of `shape`: the axis becomes 1 (keep_dims) or disappears.
Shape reduced_shape(const Shape& shape, int axis, bool keep_dims);

/// y[o, i] = sum_j x[o, j, i].
template <class T>
void reduce_sum(AxisView v, const T* x, T* y);
/// y[o, i] = sum_j a[o, j, i] * b[o, j, i].
template <class T>
void reduce_dot(AxisView v, const T* a, const T* b, T* y);
/// y[o, i] = max_j x[o, j, i]; NaN if any element in the slice is NaN.
template <class T>
void reduce_max(AxisView v, const T* x, T* y);
/// For each (o, i) writes the first j where x[o, j, i] == y[o, i] (the max), or where x is NaN.
template <class T>
void argmax_of(AxisView v, const T* x, const T* max, Index* idx);
/// y[o, i] = log sum_j exp(x[o, j, i]), computed as m + log sum exp(x - m) with m the max, so
/// logits of +-1e4 stay finite. All -inf slices give -inf.
template <class T>
void reduce_logsumexp(AxisView v, const T* x, T* y);
/// y = exp(x - logsumexp(x)) along the axis.
template <class T>
void softmax(AxisView v, const T* x, T* y);
/// y = x - logsumexp(x) along the axis.
template <class T>
void log_softmax(AxisView v, const T* x, T* y);

}  // namespace amari::kernels

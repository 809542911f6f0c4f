// Conversions between amari's array layouts and PyTorch's, for bringing data and weights across.
//
// amari keeps images channels-last (N, H, W, C) and convolution weights (KH, KW, C_in/g, C_out),
// the layouts its kernels are fast in; PyTorch keeps images (N, C, H, W) and weights
// (C_out, C_in/g, KH, KW), and a Linear weight as (out, in) where amari's is (in, out). Every
// function here copies into a new contiguous tensor (cost: one pass over the elements) and
// leaves its argument unchanged. ParamInfo::torch_layout says which conversion a parameter needs;
// nn/safetensors.hpp uses these functions to exchange whole models.
#pragma once

#include <amari/nn/module.hpp>

namespace amari::nn {

/// Images (N, C, H, W) -> (N, H, W, C) (PyTorch's activations to amari's). ShapeError unless
/// rank 4.
template <Real T>
Tensor<T> nchw_to_nhwc(const Tensor<T>& x);
/// Images (N, H, W, C) -> (N, C, H, W) (amari's activations to PyTorch's). ShapeError unless
/// rank 4.
template <Real T>
Tensor<T> nhwc_to_nchw(const Tensor<T>& x);
/// Convolution weights (C_out, C_in/g, KH, KW) -> (KH, KW, C_in/g, C_out) (PyTorch's to amari's).
/// ShapeError unless rank 4.
template <Real T>
Tensor<T> oihw_to_hwio(const Tensor<T>& w);
/// Convolution weights (KH, KW, C_in/g, C_out) -> (C_out, C_in/g, KH, KW) (amari's to PyTorch's).
/// ShapeError unless rank 4.
template <Real T>
Tensor<T> hwio_to_oihw(const Tensor<T>& w);

/// The shape PyTorch gives a parameter whose amari shape is `amari_shape`: unchanged for
/// TorchLayout::same, (out, in) for transposed (in, out), (O, I, KH, KW) for hwio (KH, KW, I, O).
/// ShapeError if the rank does not fit the layout (2 for transposed, 4 for hwio).
Shape torch_shape(const Shape& amari_shape, TorchLayout layout);
/// A parameter in amari's layout -> the same parameter in PyTorch's (a copy, shape
/// torch_shape(t.shape(), layout)). ShapeError if the rank does not fit the layout.
template <Real T>
Tensor<T> to_torch_layout(const Tensor<T>& t, TorchLayout layout);
/// A parameter in PyTorch's layout -> amari's layout with shape `amari_shape` (a copy).
/// ShapeError naming both shapes unless t.shape() == torch_shape(amari_shape, layout).
template <Real T>
Tensor<T> from_torch_layout(const Tensor<T>& t, TorchLayout layout, const Shape& amari_shape);

/// "same", "transposed" or "hwio".
const char* torch_layout_name(TorchLayout layout);

}  // namespace amari::nn

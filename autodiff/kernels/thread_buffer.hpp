// Internal: the calling thread's scratch buffers of the convolution kernels (kernels/conv.cpp,
// conv_pool.cpp, conv_pool_selected.cpp), so a convolution allocates nothing in steady state.
//
// One grow-only, 64-byte aligned buffer per element type and slot, private to its thread (concurrent
// calls from different threads never share one; a kernel may hand its own to the threads of its
// parallel region, which outlive it only inside the call). Contents are unspecified on return. A
// kernel holds several at once only under distinct slots:
//   T:            0 column matrix, 1 per-chunk weight adjoints, 2 padded source images, 3 packed
//                 weights, 4 packed ybar slivers, 5 per-chunk bias adjoints (conv.cpp);
//                 6 padded image(s) (conv_pool.cpp, conv_pool_selected.cpp), 7 a second padded
//                 source or one image's masked cotangents, 8 lane sums, 9 per-chunk partial sums
//                 (conv_pool.cpp, conv_pool_selected.cpp), 10 and 11 transposed weights
//                 (conv_pool_selected.cpp);
//   Index:        0 tap runs, 1 the weight adjoint's taps, 2 pixel origins (conv.cpp), 3 channel
//                 lists (conv_pool_selected.cpp);
//   std::int32_t: 0 one image's window positions (conv_pool_selected.cpp).
#pragma once

#include <cstddef>
#include <new>

#include <amari/autodiff/shape.hpp>

namespace amari::kernels {

template <class T, int Slot = 0>
T* thread_buffer(Index count) {
  struct Buffer {
    T* data = nullptr;
    Index capacity = 0;
    ~Buffer() { release(); }
    void release() {
      if (data != nullptr) ::operator delete (data, std::align_val_t{64});
      data = nullptr;
      capacity = 0;
    }
  };
  thread_local Buffer buffer;
  if (count > buffer.capacity) {
    buffer.release();
    buffer.data = static_cast<T*>(
        ::operator new (static_cast<std::size_t>(count) * sizeof(T), std::align_val_t{64}));
    buffer.capacity = count;
  }
  return buffer.data;
}

}  // namespace amari::kernels

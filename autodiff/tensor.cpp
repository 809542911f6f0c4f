#include <amari/autodiff/tensor.hpp>

#include <algorithm>
#include <new>
#include <vector>

namespace amari {
namespace detail {

namespace {

constexpr std::size_t kAlignment = 64;
// Blocks of at least this size go through the per-thread cache below; smaller ones are served well
// by malloc's own per-thread caches (below 4 KiB, frees and reuses cost malloc little).
constexpr std::size_t kCacheMinBytes = std::size_t{4} << 10;
constexpr std::size_t kCachePage = std::size_t{4} << 10;
constexpr std::size_t kCacheMaxBytes = std::size_t{512} << 20;
constexpr std::size_t kCacheMaxBlocks = 128;

// Per-thread cache of freed large blocks, reused by later allocations of the same rounded size.
//
// Why: a training step or a curvature product allocates the same large buffers (activations,
// gradients, sweep buffers) again and again. Large blocks come from mmap and go back to the kernel
// when freed, so every reuse paid page faults on first touch: up to half the time of a fresh
// curvature product on the "mnist" MLP. Reusing blocks keeps their pages mapped. The cache holds
// at most kCacheMaxBytes per thread, evicting the oldest block first, never changes any value,
// and is emptied by release_cached_memory() or when the thread ends.
struct BlockCache {
  struct Block {
    std::size_t bytes;
    void* ptr;
  };
  std::vector<Block> blocks;
  std::size_t total = 0;
  ~BlockCache();
};

thread_local bool cache_alive = false;  // trivially destructible: readable during thread exit
thread_local MemoryStats stats;          // tensor bytes allocated and freed by this thread

// Frees a block returned by aligned_allocate (its size header sits kAlignment bytes in front).
void free_block(void* p) { ::operator delete(static_cast<char*>(p) - kAlignment, std::align_val_t{kAlignment}); }

BlockCache& cache() {
  thread_local BlockCache c;
  cache_alive = true;
  return c;
}

BlockCache::~BlockCache() {
  cache_alive = false;
  for (const Block& b : blocks) free_block(b.ptr);
}

}  // namespace

void* aligned_allocate(Index count, std::size_t bytes_each) {
  if (count < 0 || static_cast<std::size_t>(count) > (std::size_t(-1) - kCachePage) / bytes_each) {
    throw SizeError("Tensor: " + std::to_string(count) + " elements of " + std::to_string(bytes_each) +
                    " bytes cannot be allocated");
  }
  // Round up to whole cache lines so SIMD kernels may read the last partial line safely and
  // zero-size tensors still get a unique, non-null pointer.
  std::size_t bytes = static_cast<std::size_t>(count) * bytes_each;
  bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (bytes == 0) bytes = kAlignment;
  if (bytes >= kCacheMinBytes) bytes = (bytes + kCachePage - 1) / kCachePage * kCachePage;
  stats.live_bytes += bytes;
  stats.peak_bytes = std::max(stats.peak_bytes, stats.live_bytes);
  if (bytes >= kCacheMinBytes) {
    BlockCache& c = cache();
    for (std::size_t i = c.blocks.size(); i-- > 0;) {  // most recently freed first: warmest in cache
      if (c.blocks[i].bytes == bytes) {
        void* p = c.blocks[i].ptr;
        c.total -= bytes;
        c.blocks.erase(c.blocks.begin() + static_cast<std::ptrdiff_t>(i));
        return p;
      }
    }
  }
  // The block size is stored in front of the block so aligned_free knows whether to cache it.
  void* raw = ::operator new(bytes + kAlignment, std::align_val_t{kAlignment});
  *static_cast<std::size_t*>(raw) = bytes;
  return static_cast<char*>(raw) + kAlignment;
}

void aligned_free(void* p) noexcept {
  if (!p) return;
  void* raw = static_cast<char*>(p) - kAlignment;
  const std::size_t bytes = *static_cast<std::size_t*>(raw);
  stats.live_bytes = stats.live_bytes >= bytes ? stats.live_bytes - bytes : 0;
  if (bytes >= kCacheMinBytes && bytes <= kCacheMaxBytes && cache_alive) {
    BlockCache& c = cache();
    try {
      c.blocks.push_back({bytes, p});
      c.total += bytes;
      while (c.total > kCacheMaxBytes || c.blocks.size() > kCacheMaxBlocks) {
        const BlockCache::Block old = c.blocks.front();
        c.blocks.erase(c.blocks.begin());
        c.total -= old.bytes;
        free_block(old.ptr);
      }
      return;
    } catch (...) {
      // push_back failed (out of memory): fall through and free the block directly.
    }
  }
  ::operator delete(raw, std::align_val_t{kAlignment});
}

}  // namespace detail

MemoryStats memory_stats() { return detail::stats; }

void reset_peak_memory() { detail::stats.peak_bytes = detail::stats.live_bytes; }

void release_cached_memory() {
  if (!detail::cache_alive) return;
  auto& c = detail::cache();
  for (const auto& b : c.blocks) detail::free_block(b.ptr);
  c.blocks.clear();
  c.total = 0;
}

template class Tensor<float>;
template class Tensor<double>;

}  // namespace amari

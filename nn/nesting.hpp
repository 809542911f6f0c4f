// Bounded nesting of container modules (internal to nn's containers: Sequential, Residual).
//
// Containers call their children recursively (declare, describe, forward), and a chain of
// shared_ptr-held containers is destroyed recursively too. A net nested 100,000 deep would
// overflow the stack in either; a real network is a few dozen levels deep. So:
//  - every recursive walk through a container counts its depth on the calling thread and raises
//    ValueError past kMaxModuleNesting, before the stack is at risk (Model's constructor walks the
//    net first, so a too-deep net is refused there);
//  - containers hand their children to release_children(), which destroys nested containers
//    one after another from a queue instead of inside each other's destructors.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <amari/autodiff/error.hpp>

namespace amari::nn {

/// The deepest nesting of container modules (Sequential, Residual) a walk accepts.
inline constexpr int kMaxModuleNesting = 1000;

namespace detail {

inline int& nesting_depth() {
  thread_local int depth = 0;
  return depth;
}

/// RAII: one level of container nesting for the current walk; ValueError past the limit.
class NestingLevel {
 public:
  explicit NestingLevel(const char* container) {
    if (nesting_depth() >= kMaxModuleNesting) {
      throw ValueError(std::string(container) + ": modules nested more than " + std::to_string(kMaxModuleNesting) +
                       " containers deep (a recursive walk this deep could overflow the stack)");
    }
    ++nesting_depth();
  }
  ~NestingLevel() { --nesting_depth(); }
  NestingLevel(const NestingLevel&) = delete;
  NestingLevel& operator=(const NestingLevel&) = delete;
};

/// Drops the references in `children` without recursion: the outermost container being destroyed
/// on a thread drains a queue on its own stack frame, and a container destroyed while it drains
/// appends its children to that queue instead of destroying them in place. Only trivially
/// destructible thread_locals are used, so a container destroyed during static or thread-exit
/// destruction is safe too. noexcept as a destructor must be (a failed allocation of the queue
/// terminates, as any destructor would).
template <class Ptr>
void release_children(std::vector<Ptr>& children) noexcept {
  thread_local std::vector<std::shared_ptr<const void>>* queue = nullptr;  // set while draining
  if (queue) {
    for (auto& c : children) {
      if (c) queue->push_back(std::move(c));
    }
    children.clear();
    return;
  }
  std::vector<std::shared_ptr<const void>> local;
  for (auto& c : children) {
    if (c) local.push_back(std::move(c));
  }
  children.clear();
  queue = &local;
  while (!local.empty()) {
    std::shared_ptr<const void> last = std::move(local.back());
    local.pop_back();
    last.reset();  // may run a container's destructor, which appends to `local` and returns
  }
  queue = nullptr;
}

}  // namespace detail
}  // namespace amari::nn

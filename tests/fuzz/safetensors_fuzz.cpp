// libFuzzer entry point for the safetensors harness (tests/fuzz/harness/safetensors.hpp, which
// documents the input layout and the properties checked). Build and run: docs/reliability.md.
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "fuzz/harness/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    amari::fuzz::run_safetensors(data, size);
  } catch (const std::exception& e) {
    // Not an amari::Error (those are caught inside the harness): a bug. Abort so libFuzzer
    // records the input as a crash.
    std::fprintf(stderr, "amari_fuzz_safetensors: %s\n", e.what());
    std::abort();
  }
  return 0;
}

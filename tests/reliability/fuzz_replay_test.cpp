// Replays the fuzz inputs through the same harnesses the fuzzers run (tests/fuzz/harness), in the
// ordinary test build: every seed of the committed corpus (tests/fuzz/corpus/<target>) and every
// input that once crashed a fuzzer (tests/reliability/crashes/<target>). A crash input stays here
// forever as the regression test of its bug. Each input runs in a child process, so one crashing
// input fails one check (named by its file) and the others still run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz/harness/idx.hpp"
#include "fuzz/harness/ops.hpp"
#include "fuzz/harness/parameters.hpp"
#include "fuzz/harness/safetensors.hpp"
#include "reliability/child_process.hpp"

namespace {

namespace fs = std::filesystem;
using amari::fuzz::Bytes;

// Every regular file under <source>/<folder>/<target>, sorted by name (so failures are stable).
std::vector<fs::path> inputs_of(const std::string& folder, const std::string& target) {
  std::vector<fs::path> files;
  const fs::path dir = fs::path(AMARI_SOURCE_DIR) / folder / target;
  if (!fs::is_directory(dir)) return files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

template <class Harness>
void replay(const std::string& target, Harness run, std::size_t min_seeds) {
  // Create the scratch directory here, so the children (which leave through _exit, skipping its
  // removal) share this process's directory, which is removed when the test program ends.
  (void)amari::fuzz::scratch_dir();
  const auto seeds = inputs_of("tests/fuzz/corpus", target);
  CHECK(seeds.size() >= min_seeds);  // the corpus is committed: an empty one is a packaging error
  auto all = seeds;
  const auto crashes = inputs_of("tests/reliability/crashes", target);
  all.insert(all.end(), crashes.begin(), crashes.end());
  for (const auto& file : all) {
    const Bytes bytes = amari::fuzz::read_file(file.string());
    INFO("input " << file.string() << " (" << bytes.size() << " bytes)");
    // In a child process: an input that crashes fails this check, and the others still run.
    CHECK(amari::test::run_in_child([&] { run(bytes.data(), bytes.size()); }) ==
          amari::test::Outcome::returned);
  }
}

}  // namespace

TEST_CASE("fuzz replay: every IDX corpus and crash input is read or refused with an amari::Error",
          "[reliability][fuzz]") {
  replay("idx", amari::fuzz::run_idx, 5);
}

TEST_CASE(
    "fuzz replay: every parameter-file corpus and crash input loads or is refused, model intact",
    "[reliability][fuzz]") {
  replay("parameters", amari::fuzz::run_parameters, 3);
}

TEST_CASE(
    "fuzz replay: every safetensors corpus and crash input loads or is refused, model intact",
    "[reliability][fuzz]") {
  replay("safetensors", amari::fuzz::run_safetensors, 3);
}

TEST_CASE("fuzz replay: every ops corpus and crash program runs in three agreeing modes",
          "[reliability][fuzz]") {
  replay("ops", amari::fuzz::run_ops, 3);
}

TEST_CASE("fuzz harnesses: empty and one-byte inputs are handled", "[reliability][fuzz]") {
  for (int b = 0; b < 256; b += 17) {
    const std::uint8_t byte = static_cast<std::uint8_t>(b);
    CHECK_NOTHROW(amari::fuzz::run_idx(&byte, 1));
    CHECK_NOTHROW(amari::fuzz::run_parameters(&byte, 1));
    CHECK_NOTHROW(amari::fuzz::run_safetensors(&byte, 1));
    CHECK_NOTHROW(amari::fuzz::run_ops(&byte, 1));
  }
  CHECK_NOTHROW(amari::fuzz::run_idx(nullptr, 0));
  CHECK_NOTHROW(amari::fuzz::run_parameters(nullptr, 0));
  CHECK_NOTHROW(amari::fuzz::run_safetensors(nullptr, 0));
  CHECK_NOTHROW(amari::fuzz::run_ops(nullptr, 0));
}

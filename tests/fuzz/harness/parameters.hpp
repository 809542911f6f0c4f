// Fuzz harness for the parameter file loader (nn/serialize.hpp): nn::load_parameters into a small
// fixed model, float and double.
//
// Input layout: one flag byte, then the file contents.
//   flag bit 0 = 1: the last 4 bytes are replaced by the CRC-32 of the bytes before them, so that
//                   mutations get past the checksum and reach the header and layout checks (without
//                   this nearly every mutated file stops at "checksum mismatch")
//   flag bit 1 = 1: the file is loaded into the float model first, else the double model first
// Checks: load_parameters returns or throws amari::Error; after an exception the model's
// parameters are bitwise unchanged (the documented all-or-nothing guarantee); after a successful
// load, save_parameters writes back exactly the bytes that were loaded.
#pragma once

#include <cstring>
#include <memory>

#include <zlib.h>

#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/serialize.hpp>

#include "fuzz/harness/common.hpp"

namespace amari::fuzz {

/// The model every parameter file is loaded into: mlp {3, 4, 2} with tanh, i.e. parameters
/// "0.weight" (3, 4), "0.bias" (4), "2.weight" (4, 2), "2.bias" (2): 26 elements.
template <Real T>
nn::Model<T> parameter_fuzz_model() {
  return nn::Model<T>(nn::mlp<T>({3, 4, 2}, nn::Act::tanh), 7);
}

template <Real T>
void load_into_model(const std::string& path, const Bytes& file) {
  nn::Model<T> model = parameter_fuzz_model<T>();
  const Tensor<T> before = model.gather();
  const auto same_bits = [&] {
    return std::memcmp(before.data(), model.parameters().data(),
                       static_cast<std::size_t>(before.size()) * sizeof(T)) == 0;
  };
  if (!returns_or_amari_error([&] { nn::load_parameters(model, path); })) {
    require(same_bits(), "load_parameters modified the model and then threw");
    return;
  }
  // Loaded: saving must reproduce the file byte for byte (the format has one encoding per model).
  const std::string out = scratch_file("roundtrip.prm");
  require(returns_or_amari_error([&] { nn::save_parameters(model, out); }),
          "save_parameters failed after a successful load");
  require(read_file(out) == file, "save_parameters(load_parameters(file)) differs from the file");
}

inline void run_parameters(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return;
  const std::uint8_t flag = data[0];
  Bytes file(data + 1, data + size);
  if ((flag & 1) && file.size() >= 4) {
    const std::size_t body = file.size() - 4;
    const auto crc = static_cast<std::uint32_t>(crc32(0, file.data(), static_cast<uInt>(body)));
    for (int i = 0; i < 4; ++i)
      file[body + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(crc >> (8 * i));
  }
  const std::string path = scratch_file("input.prm");
  write_file(path, file.data(), file.size());
  if (flag & 2) {
    load_into_model<float>(path, file);
    load_into_model<double>(path, file);
  } else {
    load_into_model<double>(path, file);
    load_into_model<float>(path, file);
  }
}

}  // namespace amari::fuzz

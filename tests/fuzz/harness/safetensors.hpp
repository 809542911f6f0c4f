// Fuzz harness for the safetensors reader (nn/safetensors.hpp): SafetensorsFile::parse and
// nn::load_safetensors into a small fixed model with a convolution and a batch norm, float and
// double, in both conventions.
//
// Input layout: one flag byte, then the file contents.
//   flag bit 0 = 1: Convention::pytorch, else Convention::amari
//   flag bit 1 = 1: the file is loaded into the float model first, else the double model first
//   flag bit 2 = 1: the 8-byte header length is replaced by the length up to and including the
//                   last '}' after it, so that mutations which grow or shrink the JSON still reach
//                   the JSON parser and the offset checks (without this nearly every such mutation
//                   stops at "truncated" or "bad JSON")
// Checks: every call returns or throws amari::Error; a parsed file is consistent (its tensors tile
// the data section, each entry's bytes are numel x element size, get<T> and get_integers return
// that many values or refuse the dtype or rank); writing the real tensors of a parsed file back
// with SafetensorsWriter and parsing that gives bitwise the same values; after a failed load the
// model's parameters and state are bitwise unchanged; after a successful load, save_safetensors
// and load_safetensors into a fresh model reproduce the parameters and state bitwise.
#pragma once

#include <array>
#include <cstring>
#include <memory>

#include <amari/nn/image_layers.hpp>
#include <amari/nn/layers.hpp>
#include <amari/nn/model.hpp>
#include <amari/nn/normalization.hpp>
#include <amari/nn/safetensors.hpp>

#include "fuzz/harness/common.hpp"

namespace amari::fuzz {

/// The model every safetensors file is loaded into: Conv2d(1 -> 2, kernel 2x1) ("0.weight"
/// (2, 1, 1, 2), PyTorch (2, 1, 2, 1); "0.bias" (2)), BatchNorm(2) ("1.weight", "1.bias", state
/// "1.running_mean", "1.running_var"), Flatten, Linear(3 -> 2) ("3.weight" (3, 2), PyTorch (2, 3);
/// "3.bias" (2)): 18 parameters and 4 state elements. Only loaded and saved, never run.
template <Real T>
nn::Model<T> safetensors_fuzz_model() {
  auto net = std::make_shared<nn::Sequential<T>>();
  net->template emplace<nn::Conv2d<T>>(1, 2, std::array<Index, 2>{2, 1});
  net->template emplace<nn::BatchNorm<T>>(2);
  net->template emplace<nn::Flatten<T>>();
  net->template emplace<nn::Linear<T>>(3, 2);
  nn::Model<T> m(net, 5);
  for (Index i = 0; i < m.state().size(); ++i)
    m.state()[i] = static_cast<T>(0.25 * static_cast<double>(i + 1));
  return m;
}

namespace safetensors_detail {

template <Real T>
Bytes bits(const Tensor<T>& t) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(t.data());
  return Bytes(p, p + t.size() * static_cast<Index>(sizeof(T)));
}

// The structural promises of a parsed file, and the values read back after a rewrite.
inline void check_parsed(const nn::SafetensorsFile& f, std::size_t file_size) {
  std::uint64_t covered = 0;
  nn::SafetensorsWriter rewrite;
  std::vector<std::string> rewritten;
  for (const std::string& name : f.names()) {
    const nn::SafetensorsEntry& e = f.entry(name);
    require(e.end >= e.begin, "entry end before begin");
    const std::uint64_t span = e.end - e.begin;
    covered += span;
    require(f.data(name).size() == span, "data() size differs from the offsets");
    require(e.numel() == 0 ? span == 0 : span / e.numel() == nn::safetensors_dtype_size(e.dtype),
            "span is not numel x element size");
    Tensor<double> d;
    if (returns_or_amari_error([&] { d = f.get<double>(name); })) {
      require(static_cast<std::uint64_t>(d.size()) == e.numel(),
              "get<double> size differs from numel");
      if (e.dtype == nn::SafetensorsDType::F64 || e.dtype == nn::SafetensorsDType::F32) {
        if (e.dtype == nn::SafetensorsDType::F64)
          rewrite.add(name, d);
        else
          rewrite.add(name, f.get<float>(name));
        rewritten.push_back(name);
      }
    }
    Tensor<float> s;
    if (returns_or_amari_error([&] { s = f.get<float>(name); })) {
      require(static_cast<std::uint64_t>(s.size()) == e.numel(),
              "get<float> size differs from numel");
    }
    std::vector<std::int64_t> ints;
    if (returns_or_amari_error([&] { ints = f.get_integers(name); })) {
      require(ints.size() == e.numel(), "get_integers size differs from numel");
    }
  }
  require(covered <= file_size, "tensors cover more bytes than the file has");
  // Rewritten and parsed again, the F32 / F64 tensors keep their bits.
  const nn::SafetensorsFile again = nn::SafetensorsFile::parse(rewrite.bytes(), "rewrite");
  for (const std::string& name : rewritten) {
    const bool f64 = f.entry(name).dtype == nn::SafetensorsDType::F64;
    require(again.entry(name).dtype == f.entry(name).dtype, "rewrite changed a dtype");
    require(again.entry(name).shape == f.entry(name).shape, "rewrite changed a shape");
    require(f64 ? bits(again.get<double>(name)) == bits(f.get<double>(name))
                : bits(again.get<float>(name)) == bits(f.get<float>(name)),
            "rewrite changed the values of " + name);
  }
}

template <Real T>
void load_into_model(const std::string& path, nn::Convention convention) {
  nn::Model<T> model = safetensors_fuzz_model<T>();
  const Bytes params = bits(model.parameters()), state = bits(model.state());
  if (!returns_or_amari_error([&] { nn::load_safetensors(model, path, convention); })) {
    require(bits(model.parameters()) == params && bits(model.state()) == state,
            "load_safetensors modified the model and then threw");
    return;
  }
  const std::string out = scratch_file("roundtrip.safetensors");
  require(returns_or_amari_error([&] { nn::save_safetensors(model, out, convention); }),
          "save_safetensors failed after a successful load");
  nn::Model<T> back = safetensors_fuzz_model<T>();
  back.parameters().fill(T(0));
  require(returns_or_amari_error([&] { nn::load_safetensors(back, out, convention); }),
          "load_safetensors refused what save_safetensors wrote");
  require(bits(back.parameters()) == bits(model.parameters()) &&
              bits(back.state()) == bits(model.state()),
          "save_safetensors(load_safetensors(file)) does not load back to the same model");
}

}  // namespace safetensors_detail

inline void run_safetensors(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return;
  const std::uint8_t flag = data[0];
  Bytes file(data + 1, data + size);
  if ((flag & 4) && file.size() >= 8) {
    std::size_t n = 0;
    for (std::size_t i = file.size(); i > 8; --i) {
      if (file[i - 1] == '}') {
        n = i - 8;
        break;
      }
    }
    for (int i = 0; i < 8; ++i)
      file[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  }
  nn::SafetensorsFile parsed;
  bool ok = false;
  if (returns_or_amari_error([&] { parsed = nn::SafetensorsFile::parse(file, "fuzz input"); }))
    ok = true;
  if (ok) safetensors_detail::check_parsed(parsed, file.size());

  const std::string path = scratch_file("input.safetensors");
  write_file(path, file.data(), file.size());
  const nn::Convention convention = (flag & 1) ? nn::Convention::pytorch : nn::Convention::amari;
  if (flag & 2) {
    safetensors_detail::load_into_model<float>(path, convention);
    safetensors_detail::load_into_model<double>(path, convention);
  } else {
    safetensors_detail::load_into_model<double>(path, convention);
    safetensors_detail::load_into_model<float>(path, convention);
  }
}

}  // namespace amari::fuzz

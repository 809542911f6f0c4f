// Fuzz harness for the IDX reader (nn/idx.hpp): nn::read_idx and the readers built on it.
//
// Input layout: one flag byte, then the file contents.
//   flag bit 0 = 0: the contents are written as they are (a plain file; contents starting with the
//                   gzip magic 1f 8b still go through zlib's decoder, which fuzzes it with
//                   arbitrary compressed data)
//   flag bit 0 = 1: the contents are gzip-compressed with zlib first (level = (flag >> 1) % 10), so
//                   valid compressed files of arbitrary IDX contents are read too
//   flag bit 7 = 1: when read_idx refuses the file, check that read_idx_images and
//                   read_idx_labels refuse it too
// Checks: read_idx returns or throws amari::Error; a returned array is consistent (rank 1..4, byte
// count = elements * type size, at most kMaxIdxElements elements); idx_to_tensor agrees with
// IdxArray::value; writing it back with write_idx gives the exact input bytes (when the input was
// a plain IDX file or the gzip of one); read_idx_images / read_idx_labels accept exactly the
// arrays of their type and rank and agree with read_idx.
#pragma once

#include <cmath>
#include <cstring>

#include <zlib.h>

#include <amari/nn/idx.hpp>

#include "fuzz/harness/common.hpp"

namespace amari::fuzz {

/// gzip (RFC 1952) compression of bytes with zlib at the given level.
inline Bytes gzip_compress(const std::uint8_t* data, std::size_t size, int level) {
  z_stream zs{};
  // windowBits 15 + 16: a gzip header and trailer instead of the zlib ones.
  require(deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK,
          "harness: deflateInit2 failed");
  Bytes out(deflateBound(&zs, static_cast<uLong>(size)) + 64);
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = static_cast<uInt>(size);
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  require(rc == Z_STREAM_END, "harness: deflate did not finish");
  return out;
}

/// True if both doubles are NaN or bitwise equal.
inline bool same_value(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

inline void run_idx(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return;
  const std::uint8_t flag = data[0];
  const std::uint8_t* contents = data + 1;
  const std::size_t contents_size = size - 1;
  const bool gzip = flag & 1;
  const std::string path = scratch_file("input.idx");
  if (gzip) {
    const Bytes z = gzip_compress(contents, contents_size, (flag >> 1) % 10);
    write_file(path, z.data(), z.size());
  } else {
    write_file(path, contents, contents_size);
  }

  nn::IdxArray array;
  if (!returns_or_amari_error([&] { array = nn::read_idx(path); })) {
    // Whatever read_idx refused, the typed readers must refuse too (and with an amari::Error).
    // Only when flag bit 7 asks for it: a header promising much more data than the file holds
    // makes each read allocate and zero a 16 MiB chunk first, and three reads per input would
    // cut the fuzzer's speed by three.
    if (!(flag & 0x80)) return;
    require(!returns_or_amari_error([&] { (void)nn::read_idx_labels(path); }),
            "read_idx_labels accepted a file read_idx refused");
    require(!returns_or_amari_error([&] { (void)nn::read_idx_images<float>(path); }),
            "read_idx_images accepted a file read_idx refused");
    return;
  }

  // A returned array is consistent with its header.
  require(!array.dims.empty() && array.dims.size() <= 4, "read_idx returned a rank outside 1..4");
  const Index n = array.numel();
  require(n >= 0 && n <= nn::kMaxIdxElements, "read_idx returned too many elements");
  require(array.bytes.size() ==
              static_cast<std::size_t>(n) * static_cast<std::size_t>(nn::idx_type_size(array.type)),
          "read_idx returned a byte count that is not elements * type size");

  // The conversions agree with the element decoder.
  Tensor<double> td;
  Tensor<float> tf;
  require(returns_or_amari_error([&] { td = nn::idx_to_tensor<double>(array); }),
          "idx_to_tensor<double> refused an array read_idx returned");
  require(returns_or_amari_error([&] { tf = nn::idx_to_tensor<float>(array); }),
          "idx_to_tensor<float> refused an array read_idx returned");
  require(td.size() == n && tf.size() == n, "idx_to_tensor: wrong element count");
  for (std::size_t a = 0; a < array.dims.size(); ++a) {
    require(td.shape()[static_cast<int>(a)] == array.dims[a], "idx_to_tensor: wrong shape");
  }
  for (Index i = 0; i < n; i += 1 + n / 64) {
    require(same_value(td[i], array.value(i)),
            "idx_to_tensor<double> differs from IdxArray::value");
    require(same_value(static_cast<double>(tf[i]),
                       static_cast<double>(static_cast<float>(array.value(i)))),
            "idx_to_tensor<float> differs from IdxArray::value rounded to float");
  }

  // Round trip: the decoded IDX contents are exactly the input's (for a plain IDX file or the gzip
  // of one; a plain input that is itself a gzip stream decodes to something else).
  const bool contents_are_gzip = contents_size >= 2 && contents[0] == 0x1f && contents[1] == 0x8b;
  if (gzip || !contents_are_gzip) {
    const std::string out = scratch_file("roundtrip.idx");
    require(returns_or_amari_error([&] { nn::write_idx(out, array, nn::IdxCompression::plain); }),
            "write_idx refused an array read_idx returned");
    const Bytes written = read_file(out);
    require(written.size() == contents_size &&
                (contents_size == 0 || std::memcmp(written.data(), contents, contents_size) == 0),
            "write_idx(read_idx(file)) differs from the file's IDX contents");
  }

  // The typed readers accept exactly their type and rank, and agree with read_idx.
  const bool u8 = array.type == nn::IdxType::u8;
  std::vector<int> labels;
  const bool labels_ok = returns_or_amari_error([&] { labels = nn::read_idx_labels(path); });
  require(labels_ok == (u8 && array.dims.size() == 1), "read_idx_labels: wrong accept/refuse");
  if (labels_ok) {
    require(labels.size() == array.bytes.size(), "read_idx_labels: wrong count");
    for (std::size_t i = 0; i < labels.size(); ++i) {
      require(labels[i] == array.bytes[i], "read_idx_labels: wrong value");
    }
  }
  Tensor<float> images;
  const bool images_ok = returns_or_amari_error([&] { images = nn::read_idx_images<float>(path); });
  // ... and images of at most 2^31 pixels each (with zero images read_idx allows any rows, cols).
  const bool pixels_fit = array.dims.size() == 3 &&
                          (array.dims[2] == 0 || array.dims[1] <= nn::kMaxIdxElements / array.dims[2]);
  require(images_ok == (u8 && array.dims.size() == 3 && pixels_fit), "read_idx_images: wrong accept/refuse");
  if (images_ok) {
    require(images.rank() == 2 && images.shape()[0] == array.dims[0] &&
                images.shape()[1] == array.dims[1] * array.dims[2],
            "read_idx_images: wrong shape");
    for (Index i = 0; i < images.size(); ++i) {
      require(images[i] == static_cast<float>(array.bytes[static_cast<std::size_t>(i)]) / 255.0f,
              "read_idx_images: wrong pixel value");
    }
  }
}

}  // namespace amari::fuzz

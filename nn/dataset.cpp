#include <amari/nn/dataset.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include <amari/nn/idx.hpp>
#include <amari/nn/random.hpp>

namespace amari::nn {

namespace {

std::string resolve_fashion_file(const std::string& dir, const std::string& name) {
  const std::filesystem::path base = std::filesystem::path(dir) / name;
  std::filesystem::path gz = base;
  gz += ".gz";
  std::error_code ec;
  if (std::filesystem::exists(gz, ec)) return gz.string();
  if (std::filesystem::exists(base, ec)) return base.string();
  throw IoError("load_fashion_mnist: neither " + gz.string() + " nor " + base.string() +
                " exists (Debian's dataset-fashion-mnist package installs the files in " +
                kFashionMnistDir + ")");
}

}  // namespace

namespace {

// The Dataset invariant (dataset.hpp), checked with errors naming `op`.
template <Real T>
void check_dataset(const char* op, const Tensor<T>& inputs, const std::vector<int>& labels,
                   Index num_classes) {
  if (!inputs.defined() || inputs.rank() != 2) {
    throw ShapeError(
        std::string(op) + ": inputs must have rank 2 (N, D), got " +
        (inputs.defined() ? inputs.shape().str() : std::string("an undefined tensor")));
  }
  if (inputs.dim(0) != static_cast<Index>(labels.size())) {
    throw ShapeError(std::string(op) + ": inputs " + inputs.shape().str() + " have " +
                     std::to_string(inputs.dim(0)) + " rows but there are " +
                     std::to_string(labels.size()) + " labels");
  }
  if (num_classes < 1) {
    throw ValueError(std::string(op) + ": num_classes must be >= 1, got " +
                     std::to_string(num_classes));
  }
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      throw ValueError(std::string(op) + ": label " + std::to_string(labels[i]) + " of example " +
                       std::to_string(i) + " is outside [0, " + std::to_string(num_classes) + ")");
    }
  }
}

}  // namespace

template <Real T>
Dataset<T>::Dataset(Tensor<T> inputs_, std::vector<int> labels_, Index num_classes_) {
  check_dataset("Dataset", inputs_, labels_, num_classes_);
  inputs = std::move(inputs_);
  labels = std::move(labels_);
  num_classes = num_classes_;
}

template <Real T>
void Dataset<T>::check(const char* op) const {
  check_dataset(op, inputs, labels, num_classes);
}

template <Real T>
Dataset<T> make_dataset(Tensor<T> inputs, std::vector<int> labels, Index num_classes) {
  check_dataset("make_dataset", inputs, labels, num_classes);
  return Dataset<T>{std::move(inputs), std::move(labels), num_classes};
}

template <Real T>
Dataset<T> load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                            Index num_classes) {
  if (num_classes < 1) {
    throw ValueError("load_idx_dataset: num_classes must be >= 1, got " +
                     std::to_string(num_classes));
  }
  // Labels first: the small file, so a mismatch is found before reading the large one.
  std::vector<int> labels = read_idx_labels(labels_path);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= num_classes) {
      throw FormatError("load_idx_dataset: " + labels_path + ": label " +
                        std::to_string(labels[i]) + " of example " + std::to_string(i) +
                        " is outside [0, " + std::to_string(num_classes) + ")");
    }
  }
  Tensor<T> inputs = read_idx_images<T>(images_path);
  if (inputs.dim(0) != static_cast<Index>(labels.size())) {
    throw FormatError("load_idx_dataset: " + images_path + " holds " +
                      std::to_string(inputs.dim(0)) + " images but " + labels_path + " holds " +
                      std::to_string(labels.size()) + " labels; expected equal counts");
  }
  return Dataset<T>{std::move(inputs), std::move(labels), num_classes};
}

template <Real T>
Dataset<T> load_fashion_mnist(Split split, const std::string& dir) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string labels = resolve_fashion_file(dir, prefix + "-labels-idx1-ubyte");
  const std::string images = resolve_fashion_file(dir, prefix + "-images-idx3-ubyte");
  return load_idx_dataset<T>(images, labels, 10);
}

template <Real T>
Dataset<T> take(const Dataset<T>& data, Index n) {
  data.check("take");
  if (n < 0 || n > data.size()) {
    throw ValueError("take: cannot take the first " + std::to_string(n) +
                     " examples of a dataset of " + std::to_string(data.size()));
  }
  const Index d = data.num_features();
  return Dataset<T>{data.inputs.view(0, Shape{n, d}),
                    std::vector<int>(data.labels.begin(), data.labels.begin() + n),
                    data.num_classes};
}

template <Real T>
std::vector<Index> class_counts(const Dataset<T>& data) {
  data.check("class_counts");
  std::vector<Index> counts(static_cast<std::size_t>(data.num_classes), 0);
  for (int label : data.labels) {
    if (label < 0 || label >= data.num_classes) {
      throw ValueError("class_counts: label " + std::to_string(label) + " is outside [0, " +
                       std::to_string(data.num_classes) + ")");
    }
    ++counts[static_cast<std::size_t>(label)];
  }
  return counts;
}

template <Real T>
Standardizer<T> Standardizer<T>::fit(const Dataset<T>& train, Standardization mode,
                                     double min_std) {
  train.check("Standardizer::fit");
  const Index n = train.size();
  if (n < 1) throw ValueError("Standardizer::fit: the training set is empty");
  if (!(min_std >= 0)) {
    throw ValueError("Standardizer::fit: min_std must be >= 0, got " + std::to_string(min_std));
  }
  const Index d = train.num_features();
  const T* x = train.inputs.data();
  const auto du = static_cast<std::size_t>(d);

  // Refused, not propagated: a NaN mean or scale would turn every value of its column of every
  // set it is applied to (the clean test set too) into NaN. Checked per column after each pass,
  // before the global mode pools the columns, so the message can name the column at fault.
  const auto refuse = [&](std::size_t j, const char* statistic) {
    Index row = -1;
    for (Index i = 0; i < n && row < 0; ++i)
      if (!std::isfinite(x[i * d + static_cast<Index>(j)])) row = i;
    throw ValueError(
        "Standardizer::fit: column " + std::to_string(j) + " has a non-finite " + statistic +
        (row >= 0 ? " (row " + std::to_string(row) + " holds " +
                        std::to_string(static_cast<double>(x[row * d + static_cast<Index>(j)])) + ")"
                  : std::string(" (its values are too large: their sum or squares overflow)")) +
        "; clean or drop the bad values first");
  };

  std::vector<double> sum(du, 0.0);
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < d; ++j) sum[static_cast<std::size_t>(j)] += x[i * d + j];
  }
  for (std::size_t j = 0; j < du; ++j)
    if (!std::isfinite(sum[j])) refuse(j, "mean");
  std::vector<double> mean(du);
  if (mode == Standardization::global) {
    double total = 0;
    for (double s : sum) total += s;
    if (!std::isfinite(total)) refuse(0, "mean (global mode: the sum of all columns overflows)");
    std::fill(mean.begin(), mean.end(), total / static_cast<double>(n * d));
  } else {
    for (std::size_t j = 0; j < du; ++j) mean[j] = sum[j] / static_cast<double>(n);
  }
  // Second pass over deviations: sum(x^2) - n*mean^2 cancels catastrophically for data far from 0.
  std::vector<double> sq(du, 0.0);
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < d; ++j) {
      const double dev = x[i * d + j] - mean[static_cast<std::size_t>(j)];
      sq[static_cast<std::size_t>(j)] += dev * dev;
    }
  }
  for (std::size_t j = 0; j < du; ++j)
    if (!std::isfinite(sq[j])) refuse(j, "standard deviation");
  if (mode == Standardization::global) {
    double total = 0;
    for (double s : sq) total += s;
    if (!std::isfinite(total)) refuse(0, "standard deviation (global mode: the squares of all columns overflow)");
    std::fill(sq.begin(), sq.end(), total / static_cast<double>(d));
  }

  Standardizer s;
  s.mean_.resize(du);
  s.scale_.resize(du);
  for (std::size_t j = 0; j < du; ++j) {
    const double sd = std::sqrt(sq[j] / static_cast<double>(n));
    const T mean_t = static_cast<T>(mean[j]), sd_t = static_cast<T>(sd);
    if (!std::isfinite(mean_t)) refuse(j, "mean");  // finite in double, not in T
    if (!std::isfinite(sd_t)) refuse(j, "standard deviation");
    // A scale that is not a normal number of T (below min_std, or rounded to 0 or a subnormal in
    // T) would blow values up to inf: such features are only centered.
    const bool tiny = sd < min_std || !(sd_t >= std::numeric_limits<T>::min());
    s.mean_[j] = mean_t;
    s.scale_[j] = tiny ? T(1) : sd_t;
  }
  return s;
}

template <Real T>
Tensor<T> Standardizer<T>::apply(const Tensor<T>& inputs) const {
  const auto d = static_cast<Index>(mean_.size());
  if (!inputs.defined() || inputs.rank() != 2 || inputs.dim(1) != d) {
    throw ShapeError(
        "Standardizer::apply: expected inputs (N, " + std::to_string(d) +
        ") like the training set, got " +
        (inputs.defined() ? inputs.shape().str() : std::string("an undefined tensor")));
  }
  Tensor<T> out = Tensor<T>::uninitialized(inputs.shape());
  const T* x = inputs.data();
  T* y = out.data();
  for (Index i = 0, n = inputs.dim(0); i < n; ++i) {
    for (Index j = 0; j < d; ++j) {
      const auto ju = static_cast<std::size_t>(j);
      y[i * d + j] = (x[i * d + j] - mean_[ju]) / scale_[ju];
    }
  }
  return out;
}

template <Real T>
Dataset<T> Standardizer<T>::apply(const Dataset<T>& data) const {
  data.check("Standardizer::apply");
  return Dataset<T>{apply(data.inputs), data.labels, data.num_classes};
}

std::vector<Index> shuffled_indices(Index n, std::uint64_t seed, std::uint64_t epoch) {
  if (n < 0) throw ValueError("shuffled_indices: n must be >= 0, got " + std::to_string(n));
  std::vector<Index> order(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  Rng rng(seed, epoch);
  // Fisher-Yates, from the back: position i receives a uniform choice among the first i + 1.
  for (Index i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i) + 1));
    std::swap(order[static_cast<std::size_t>(i)], order[j]);
  }
  return order;
}

template <Real T>
Batches<T>::Batches(const Dataset<T>& data, Index batch_size, std::uint64_t seed,
                    std::uint64_t epoch, LastBatch last)
    : Batches(data, batch_size, shuffled_indices(data.size(), seed, epoch), last) {}

template <Real T>
Batches<T> Batches<T>::in_order(const Dataset<T>& data, Index batch_size, LastBatch last) {
  std::vector<Index> order(static_cast<std::size_t>(data.size()));
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<Index>(i);
  return Batches(data, batch_size, std::move(order), last);
}

template <Real T>
Batches<T>::Batches(const Dataset<T>& data, Index batch_size, std::vector<Index> order,
                    LastBatch last)
    : data_(data), batch_size_(batch_size), order_(std::move(order)) {
  data.check("Batches");
  const Index n = data.size();
  if (batch_size < 1 || batch_size > n) {
    throw ValueError("Batches: batch size must be in 1..N = " + std::to_string(n) +
                     " (the number of examples), got " + std::to_string(batch_size));
  }
  if (data.inputs.rank() != 2 || data.inputs.dim(0) != n) {
    throw ShapeError("Batches: dataset inputs " + data.inputs.shape().str() + " do not hold " +
                     std::to_string(n) + " rows, one per label");
  }
  num_batches_ = last == LastBatch::drop ? n / batch_size : (n + batch_size - 1) / batch_size;
}

template <Real T>
Batch<T> Batches<T>::batch(Index b) const {
  if (b < 0 || b >= num_batches_) {
    throw ValueError("Batches::batch: batch " + std::to_string(b) + " is out of range, there are " +
                     std::to_string(num_batches_));
  }
  const Index begin = b * batch_size_;
  const Index count = std::min(batch_size_, data_.size() - begin);
  const Index d = data_.num_features();
  Batch<T> out;
  out.inputs = Tensor<T>::uninitialized(Shape{count, d});
  out.labels.resize(static_cast<std::size_t>(count));
  out.indices.assign(order_.begin() + begin, order_.begin() + begin + count);
  const T* src = data_.inputs.data();
  T* dst = out.inputs.data();
  for (Index r = 0; r < count; ++r) {
    const Index i = out.indices[static_cast<std::size_t>(r)];
    if (d > 0) std::memcpy(dst + r * d, src + i * d, static_cast<std::size_t>(d) * sizeof(T));
    out.labels[static_cast<std::size_t>(r)] = data_.labels[static_cast<std::size_t>(i)];
  }
  return out;
}

template struct Dataset<float>;
template struct Dataset<double>;
template class Standardizer<float>;
template class Standardizer<double>;
template class Batches<float>;
template class Batches<double>;

#define AMARI_DATASET_INSTANTIATE(T)                                                      \
  template Dataset<T> make_dataset<T>(Tensor<T>, std::vector<int>, Index);                \
  template Dataset<T> load_idx_dataset<T>(const std::string&, const std::string&, Index); \
  template Dataset<T> load_fashion_mnist<T>(Split, const std::string&);                   \
  template Dataset<T> take<T>(const Dataset<T>&, Index);                                  \
  template std::vector<Index> class_counts<T>(const Dataset<T>&);
AMARI_DATASET_INSTANTIATE(float)
AMARI_DATASET_INSTANTIATE(double)
#undef AMARI_DATASET_INSTANTIATE

}  // namespace amari::nn

// In-memory classification datasets: loading (Fashion-MNIST or any IDX image/label pair),
// subsets, standardization with training-set statistics, and shuffled minibatches.
//
// Shuffles are a fixed function of (seed, epoch, dataset size): amari uses its own generator
// (xoshiro256** seeded by splitmix64) and Fisher-Yates with an unbiased bounded draw, so the batch
// order is the same with every standard library, compiler and platform.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include <amari/autodiff/error.hpp>
#include <amari/autodiff/shape.hpp>
#include <amari/autodiff/tensor.hpp>

namespace amari::nn {

/// A labelled classification dataset held in memory: inputs (N, D), one label in
/// [0, num_classes) per row. Copies share the inputs' storage (Tensor is a handle).
///
/// Invariant: inputs is a defined rank-2 tensor with exactly one row per label, num_classes >= 1
/// and every label lies in [0, num_classes); the empty Dataset() (inputs (0, 0), no labels,
/// num_classes 1) satisfies it too. Every constructor establishes it (ShapeError / ValueError
/// otherwise), so a dataset built as Dataset<T>{inputs, labels, num_classes} cannot be
/// inconsistent. The fields stay public for reading; code that assigns to them must keep the
/// invariant, and every amari function taking a Dataset re-checks it (check(), O(N)) before
/// reading, so an inconsistent one is refused, never read past its end.
template <Real T>
struct Dataset {
  Tensor<T> inputs = Tensor<T>(Shape{0, 0});  ///< (N, D), one example per row
  std::vector<int> labels;                    ///< N labels in [0, num_classes)
  Index num_classes = 1;

  /// The empty dataset: no examples, no features, one class.
  Dataset() = default;
  /// Checks and takes the parts: inputs of rank 2 with one row per label (ShapeError otherwise),
  /// num_classes >= 1 and every label in [0, num_classes) (ValueError otherwise).
  Dataset(Tensor<T> inputs, std::vector<int> labels, Index num_classes);

  /// Number of examples N.
  Index size() const { return static_cast<Index>(labels.size()); }
  /// Number of features D.
  Index num_features() const { return inputs.dim(1); }
  /// Throws (ShapeError / ValueError naming `op`) if the invariant above does not hold, e.g.
  /// after a caller changed the fields. Cost O(N).
  void check(const char* op) const;
};

/// Builds a dataset after checking it: the same as the constructor Dataset(inputs, labels,
/// num_classes).
template <Real T>
Dataset<T> make_dataset(Tensor<T> inputs, std::vector<int> labels, Index num_classes);

/// Loads an IDX image file and an IDX label file (e.g. MNIST's) as a dataset with inputs
/// (N, rows * cols) in [0, 1]. Throws FormatError if the counts differ or a label is outside
/// [0, num_classes), plus every error of read_idx_images / read_idx_labels. Cost: one pass over
/// the files; memory: the float data plus the raw bytes while converting.
template <Real T>
Dataset<T> load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                            Index num_classes);

/// Which half of a dataset with a fixed train/test split to load.
enum class Split { train, test };

/// Where Debian's dataset-fashion-mnist package installs the four Fashion-MNIST files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST (Xiao et al. 2017): 60000 train or 10000 test images of 28x28 pixels as inputs
/// (N, 784) in [0, 1], 10 classes. Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from
/// `dir`, or the same names without ".gz" if the compressed files are absent (compression is
/// detected from the contents). Throws IoError naming both candidates if neither exists, plus
/// every error of load_idx_dataset.
template <Real T>
Dataset<T> load_fashion_mnist(Split split, const std::string& dir = kFashionMnistDir);

/// The first n examples of `data` (0 <= n <= N, ValueError otherwise), sharing its input storage;
/// for quick runs on part of a dataset.
template <Real T>
Dataset<T> take(const Dataset<T>& data, Index n);

/// Number of examples of each class: a vector of num_classes counts.
template <Real T>
std::vector<Index> class_counts(const Dataset<T>& data);

/// How standardization statistics are pooled.
enum class Standardization {
  per_feature,  ///< each column j has its own mean and standard deviation
  global,       ///< one mean and standard deviation over all N * D values
};

/// Standardization x' = (x - mean) / std with statistics of a training set, to be applied
/// unchanged to the training and the test set. Pixel data already comes scaled to [0, 1] from
/// read_idx_images; this centers and rescales it further. Features whose standard deviation is
/// below `min_std` (e.g. MNIST's always-black border pixels), or is not a normal number of T, are
/// only centered, not divided, so no value becomes inf or nan. Statistics are always finite: fit()
/// refuses a training set whose mean or standard deviation is not (one NaN or inf value, or values
/// whose squares overflow), so a bad training value can never spread into a clean test set.
template <Real T>
class Standardizer {
 public:
  /// Statistics of `train.inputs` (N >= 1; ValueError otherwise), accumulated in double with two
  /// passes (mean, then squared deviations) for accuracy. Population standard deviation (divides
  /// by N). ValueError naming the column (and the first row holding a NaN or inf in it, if any)
  /// when a statistic is not finite; ShapeError / ValueError if `train` breaks the Dataset
  /// invariant. Cost: two passes over N * D values.
  static Standardizer fit(const Dataset<T>& train,
                          Standardization mode = Standardization::per_feature,
                          double min_std = 1e-6);

  /// Standardized copy of `inputs` (N, D) with the fitted D (ShapeError otherwise); fresh storage.
  Tensor<T> apply(const Tensor<T>& inputs) const;
  /// The dataset with standardized inputs (fresh storage) and the same labels.
  Dataset<T> apply(const Dataset<T>& data) const;

  /// Per-feature means (D values; all equal in global mode).
  const std::vector<T>& mean() const { return mean_; }
  /// Per-feature standard deviations used as divisors (D values; 1 where the feature's standard
  /// deviation was below min_std).
  const std::vector<T>& scale() const { return scale_; }

 private:
  std::vector<T> mean_;
  std::vector<T> scale_;
};

/// Random permutation of 0..n-1 determined by (seed, epoch) alone: Fisher-Yates driven by
/// xoshiro256** seeded from splitmix64(seed) and the epoch. Identical on every platform.
/// Cost: O(n).
std::vector<Index> shuffled_indices(Index n, std::uint64_t seed, std::uint64_t epoch);

/// One minibatch: rows of the dataset copied contiguously.
template <Real T>
struct Batch {
  Tensor<T> inputs;            ///< (B, D), row i is example indices[i] of the dataset
  std::vector<int> labels;     ///< B labels
  std::vector<Index> indices;  ///< positions of the examples in the dataset

  /// Number of examples B.
  Index size() const { return static_cast<Index>(labels.size()); }
};

/// What to do with the final batch when batch_size does not divide N.
enum class LastBatch {
  keep,  ///< a smaller final batch of N % batch_size examples
  drop,  ///< no final partial batch: every batch has exactly batch_size examples
};

/// The minibatches of one epoch, in an order shuffled by (seed, epoch) or in dataset order.
/// Every example appears exactly once per epoch (minus the dropped tail with LastBatch::drop).
/// Holds a copy of the dataset handle, so it stays valid if the caller's Dataset goes away.
/// Use as a range, `for (const Batch<float>& b : Batches(train, 128, seed, epoch)) ...`, or index
/// batches with batch(b). Each batch is copied out on demand: O(B * D) per batch.
template <Real T>
class Batches {
 public:
  /// Batches in the order shuffled_indices(N, seed, epoch). Throws ValueError unless
  /// 1 <= batch_size <= N.
  Batches(const Dataset<T>& data, Index batch_size, std::uint64_t seed, std::uint64_t epoch,
          LastBatch last = LastBatch::keep);
  /// Batches in dataset order (for evaluation). Same checks as the shuffling constructor.
  static Batches in_order(const Dataset<T>& data, Index batch_size,
                          LastBatch last = LastBatch::keep);

  /// Number of batches in the epoch.
  Index size() const { return num_batches_; }
  /// Batch b (0 <= b < size(), ValueError otherwise), copied into fresh storage.
  Batch<T> batch(Index b) const;
  /// The example order of the epoch (a permutation of 0..N-1).
  const std::vector<Index>& order() const { return order_; }

  /// Input iterator over the batches; dereferencing copies the current batch out.
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch<T>;
    using difference_type = std::ptrdiff_t;

    Iterator() = default;
    Batch<T> operator*() const { return batches_->batch(b_); }
    Iterator& operator++() {
      ++b_;
      return *this;
    }
    Iterator operator++(int) {
      Iterator old = *this;
      ++b_;
      return old;
    }
    friend bool operator==(const Iterator& x, const Iterator& y) { return x.b_ == y.b_; }

   private:
    friend class Batches;
    Iterator(const Batches* batches, Index b) : batches_(batches), b_(b) {}
    const Batches* batches_ = nullptr;
    Index b_ = 0;
  };
  /// First batch.
  Iterator begin() const { return Iterator(this, 0); }
  /// One past the last batch.
  Iterator end() const { return Iterator(this, num_batches_); }

 private:
  Batches(const Dataset<T>& data, Index batch_size, std::vector<Index> order, LastBatch last);

  Dataset<T> data_;
  Index batch_size_ = 0;
  Index num_batches_ = 0;
  std::vector<Index> order_;
};

extern template struct Dataset<float>;
extern template struct Dataset<double>;
extern template class Standardizer<float>;
extern template class Standardizer<double>;
extern template class Batches<float>;
extern template class Batches<double>;

}  // namespace amari::nn

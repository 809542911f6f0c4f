// Shape and Tensor: validation and its error messages, the handle semantics (copies share, clone
// is deep, views share and are bounds-checked), alignment, empty tensors, and the per-thread block
// cache never leaking old values into zero-initialized tensors.
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/tensor.hpp>

namespace {

using amari::Index;
using amari::Shape;
using amari::ShapeError;
using amari::SizeError;
using amari::Tensor;
using Catch::Matchers::Contains;

bool aligned64(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 64 == 0;
}

}  // namespace

TEST_CASE("shape: rank 0..4 accepted, rank 5 is a ShapeError naming the rank", "[tensor]") {
  CHECK(Shape{}.rank() == 0);
  CHECK(Shape{}.numel() == 1);
  CHECK(Shape{2, 3, 4, 5}.rank() == 4);
  CHECK(Shape{2, 3, 4, 5}.numel() == 120);
  CHECK_THROWS_WITH(Shape({1, 2, 3, 4, 5}), Contains("rank 5"));
  CHECK_THROWS_AS(Shape({1, 1, 1, 1, 1}), ShapeError);
}

TEST_CASE("shape: a negative dimension is a ShapeError naming the dimension and value",
          "[tensor]") {
  CHECK_THROWS_AS(Shape({2, -1}), ShapeError);
  CHECK_THROWS_WITH(Shape({2, -3}), Contains("dimension 1") && Contains("-3"));
  CHECK_THROWS_AS(Shape({-1}), ShapeError);
}

TEST_CASE("shape: more than 2^48 elements is a SizeError naming the shape, never an overflow",
          "[tensor]") {
  const Index big = Index{1} << 30;
  CHECK_THROWS_AS(Shape({big, big}), SizeError);
  CHECK_THROWS_WITH(Shape({big, big}), Contains("(1073741824, 1073741824)"));
  // The int64 product itself would overflow here: the check must come before the multiplication.
  const Index huge = Index{1} << 40;
  CHECK_THROWS_AS(Shape({huge, huge, huge}), SizeError);
  CHECK_THROWS_AS(Shape({std::numeric_limits<Index>::max(), 2}), SizeError);
  // Exactly 2^48 is allowed, one more row is not.
  const Index half = Index{1} << 24;
  CHECK(Shape({half, half}).numel() == amari::kMaxElements);
  CHECK_THROWS_AS(Shape({half + 1, half}), SizeError);
  // An empty tensor has no elements, however large its other dimensions.
  CHECK(Shape({huge, huge, 0}).numel() == 0);
  CHECK(Shape({3, 0}).numel() == 0);
}

TEST_CASE("shape: normalize_axis maps negative axes and names the op and shape when out of range",
          "[tensor]") {
  const Shape s{2, 3, 4};
  CHECK(s.normalize_axis(0, "op") == 0);
  CHECK(s.normalize_axis(2, "op") == 2);
  CHECK(s.normalize_axis(-1, "op") == 2);
  CHECK(s.normalize_axis(-3, "op") == 0);
  CHECK_THROWS_AS(s.normalize_axis(3, "myop"), ShapeError);
  CHECK_THROWS_AS(s.normalize_axis(-4, "myop"), ShapeError);
  CHECK_THROWS_WITH(s.normalize_axis(3, "myop"), Contains("myop") && Contains("(2, 3, 4)"));
  CHECK_THROWS_AS(Shape{}.normalize_axis(0, "op"), ShapeError);
  CHECK(s.dim(-1) == 4);
  CHECK(s.dim(1) == 3);
  CHECK_THROWS_AS(s.dim(5), ShapeError);
}

TEST_CASE("shape: str() and equality", "[tensor]") {
  CHECK(Shape{}.str() == "()");
  CHECK(Shape{7}.str() == "(7)");
  CHECK(Shape{3, 4}.str() == "(3, 4)");
  CHECK(Shape{1, 2, 3, 4}.str() == "(1, 2, 3, 4)");
  CHECK(Shape{3, 4} == Shape{3, 4});
  CHECK_FALSE(Shape{3, 4} == Shape{4, 3});
  CHECK_FALSE(Shape{3} == Shape{3, 1});
  CHECK_FALSE(Shape{} == Shape{1});
}

TEST_CASE("tensor: Tensor(shape) and zeros are zero-filled, full fills, scalar has rank 0",
          "[tensor]") {
  const Tensor<double> z(Shape{5, 7});
  CHECK(z.defined());
  CHECK(std::all_of(z.begin(), z.end(), [](double v) { return v == 0.0; }));
  const Tensor<float> f = Tensor<float>::full(Shape{3, 3}, 2.5f);
  CHECK(std::all_of(f.begin(), f.end(), [](float v) { return v == 2.5f; }));
  const Tensor<double> s = Tensor<double>::scalar(-4.0);
  CHECK(s.rank() == 0);
  CHECK(s.item() == -4.0);
  CHECK_FALSE(Tensor<double>().defined());
}

TEST_CASE("tensor: from() checks the value count against the shape", "[tensor]") {
  const Tensor<double> t = Tensor<double>::from(Shape{2, 2}, {1, 2, 3, 4});
  CHECK(t.at(1, 0) == 3.0);
  CHECK_THROWS_AS(Tensor<double>::from(Shape{2, 2}, {1, 2, 3}), ShapeError);
  CHECK_THROWS_WITH(Tensor<double>::from(Shape{2, 3}, {1, 2, 3, 4, 5, 6, 7}),
                    Contains("(2, 3)") && Contains("6") && Contains("7"));
}

TEST_CASE("tensor: at() is row-major and bounds-checked on every axis and on the index count",
          "[tensor]") {
  Tensor<double> t(Shape{2, 3, 4});
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<double>(i);
  CHECK(t.at(1, 2, 3) == 23.0);
  CHECK(t.at(0, 1, 0) == 4.0);
  CHECK_THROWS_AS(t.at(2, 0, 0), ShapeError);
  CHECK_THROWS_AS(t.at(0, 3, 0), ShapeError);
  CHECK_THROWS_AS(t.at(0, 0, 4), ShapeError);
  CHECK_THROWS_AS(t.at(0, -1, 0), ShapeError);
  CHECK_THROWS_WITH(t.at(0, 0, 4), Contains("axis 2") && Contains("(2, 3, 4)"));
  CHECK_THROWS_AS(t.at(0, 0), ShapeError);
  CHECK_THROWS_AS(t.at(0, 0, 0, 0), ShapeError);
  CHECK(Tensor<double>::scalar(3.0).at() == 3.0);
}

TEST_CASE("tensor: item() needs exactly one element, of any rank", "[tensor]") {
  CHECK(Tensor<double>::full(Shape{1, 1, 1}, 9.0).item() == 9.0);
  CHECK_THROWS_AS(Tensor<double>(Shape{2}).item(), ShapeError);
  CHECK_THROWS_AS(Tensor<double>(Shape{0}).item(), ShapeError);
  CHECK_THROWS_WITH(Tensor<double>(Shape{2, 3}).item(), Contains("(2, 3)") && Contains("6"));
}

TEST_CASE("tensor: copies share storage, clone() is a deep copy", "[tensor]") {
  Tensor<double> a = Tensor<double>::full(Shape{4}, 1.0);
  Tensor<double> b = a;
  b[2] = 5.0;
  CHECK(a[2] == 5.0);
  CHECK(a.same_storage(b));
  Tensor<double> c = a.clone();
  CHECK_FALSE(c.same_storage(a));
  CHECK(c.shape() == a.shape());
  c[0] = -1.0;
  CHECK(a[0] == 1.0);
  CHECK(c[2] == 5.0);
  // Cloning an empty tensor gives an empty, defined tensor.
  CHECK(Tensor<double>(Shape{0, 3}).clone().defined());
}

TEST_CASE("tensor: reshaped() shares storage and checks the element count", "[tensor]") {
  Tensor<double> a(Shape{2, 6});
  Tensor<double> r = a.reshaped(Shape{3, 4});
  CHECK(r.shape() == Shape{3, 4});
  CHECK(r.same_storage(a));
  r.at(2, 3) = 8.0;
  CHECK(a.at(1, 5) == 8.0);
  CHECK(a.shape() == Shape{2, 6});
  CHECK_THROWS_AS(a.reshaped(Shape{5, 2}), ShapeError);
  CHECK_THROWS_WITH(a.reshaped(Shape{13}), Contains("(2, 6)") && Contains("(13)"));
}

TEST_CASE("tensor: view() shares a window of the storage and refuses ranges that do not fit",
          "[tensor]") {
  Tensor<double> a(Shape{10});
  Tensor<double> v = a.view(3, Shape{2, 2});
  CHECK(v.data() == a.data() + 3);
  v.at(1, 1) = 4.0;
  CHECK(a[6] == 4.0);
  CHECK(a.view(10, Shape{0}).size() == 0);  // an empty view at the end fits
  CHECK(a.view(0, Shape{10}).size() == 10);
  CHECK_THROWS_AS(a.view(8, Shape{3}), ShapeError);
  CHECK_THROWS_AS(a.view(-1, Shape{1}), ShapeError);
  CHECK_THROWS_AS(a.view(11, Shape{0}), ShapeError);
  CHECK_THROWS_AS(a.view(0, Shape{11}), ShapeError);
  CHECK_THROWS_WITH(a.view(8, Shape{3}), Contains("offset 8") && Contains("10"));
  // A view keeps the storage alive after the original handle is gone.
  Tensor<double> kept;
  {
    Tensor<double> tmp = Tensor<double>::full(Shape{100}, 3.0);
    kept = tmp.view(50, Shape{5});
  }
  CHECK(kept[4] == 3.0);
}

TEST_CASE("tensor: copy_from copies elements and requires the same shape", "[tensor]") {
  Tensor<double> dst(Shape{2, 3});
  const Tensor<double> src = Tensor<double>::from(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  dst.copy_from(src);
  CHECK(dst.to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK_FALSE(dst.same_storage(src));
  CHECK_THROWS_AS(dst.copy_from(Tensor<double>(Shape{3, 2})), ShapeError);
  CHECK_THROWS_WITH(dst.copy_from(Tensor<double>(Shape{6})), Contains("(6)") && Contains("(2, 3)"));
  dst.copy_from(dst);  // self copy is a no-op
  CHECK(dst.at(1, 2) == 6.0);
}

TEST_CASE("tensor: fresh storage is 64-byte aligned for every size and element type", "[tensor]") {
  for (Index n :
       {Index{0}, Index{1}, Index{3}, Index{17}, Index{1000}, Index{4097}, Index{100000}}) {
    INFO("n = " << n);
    CHECK(aligned64(Tensor<double>(Shape{n}).data()));
    CHECK(aligned64(Tensor<float>(Shape{n}).data()));
    CHECK(aligned64(Tensor<float>::uninitialized(Shape{n}).data()));
    CHECK(aligned64(Tensor<double>::full(Shape{n}, 1.0).clone().data()));
  }
}

TEST_CASE("tensor: zero-size tensors have non-null, distinct storage", "[tensor]") {
  const Tensor<double> a(Shape{0});
  const Tensor<double> b(Shape{3, 0});
  CHECK(a.data() != nullptr);
  CHECK(b.data() != nullptr);
  CHECK(a.data() != b.data());
  CHECK(a.size() == 0);
  CHECK(b.begin() == b.end());
  CHECK(a.to_vector().empty());
}

TEST_CASE("tensor: the block cache never leaks old values into zero-initialized tensors",
          "[tensor]") {
  // Large blocks (>= 32 KiB) are recycled through a per-thread cache; Tensor(shape) must still be
  // all zeros when it gets a recycled block.
  for (Index n : {Index{5000}, Index{1} << 16, Index{300001}}) {
    INFO("n = " << n);
    const double* first = nullptr;
    {
      Tensor<double> dirty = Tensor<double>::full(Shape{n}, 7.0);
      first = dirty.data();
    }
    const Tensor<double> clean(Shape{n});
    // The cache normally hands the just-freed block back; that is what makes this test bite.
    if (clean.data() != first) WARN("the freed block was not reused; the check below is weaker");
    CHECK(std::all_of(clean.begin(), clean.end(), [](double v) { return v == 0.0; }));
    { Tensor<float> dirty = Tensor<float>::full(Shape{n, 2}, 7.0f); }
    const Tensor<float> zeros = Tensor<float>::zeros(Shape{2, n});
    CHECK(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.0f; }));
  }
}

TEST_CASE("tensor: release_cached_memory() may be called at any time, tensors stay valid",
          "[tensor]") {
  amari::release_cached_memory();  // possibly with an empty cache
  Tensor<double> live = Tensor<double>::full(Shape{20000}, 1.5);
  { Tensor<double> freed = Tensor<double>::full(Shape{20000}, 7.0); }
  amari::release_cached_memory();
  amari::release_cached_memory();
  CHECK(std::all_of(live.begin(), live.end(), [](double v) { return v == 1.5; }));
  const Tensor<double> fresh(Shape{20000});
  CHECK(std::all_of(fresh.begin(), fresh.end(), [](double v) { return v == 0.0; }));
  CHECK(aligned64(fresh.data()));
  { Tensor<double> again = Tensor<double>::full(Shape{20000}, 7.0); }
  const Tensor<double> reused(Shape{20000});
  CHECK(std::all_of(reused.begin(), reused.end(), [](double v) { return v == 0.0; }));
}

#include "frugal/data/transforms.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FRUGAL_X86_SIMD 1
#endif

#include "frugal/error.h"

namespace frugal {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

SampleRng::SampleRng(uint64_t seed, int64_t epoch, int64_t index)
    : key_(splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                      static_cast<uint64_t>(index))) {}

uint64_t SampleRng::next_u64() { return splitmix64(key_ + 0x632BE59BD9B4E019ull * ++counter_); }

float SampleRng::uniform(float lo, float hi) {
  const float u = static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f);
  return u * (hi - lo) + lo;
}

int64_t SampleRng::randint(int64_t n) {
  FRUGAL_CHECK(n >= 1, "SampleRng::randint: n must be >= 1, got ", n);
  // Lemire's multiply-shift; the bias (n / 2^64) is far below anything measurable.
  return static_cast<int64_t>(
      (static_cast<unsigned __int128>(next_u64()) * static_cast<uint64_t>(n)) >> 64);
}

// ---- PIL's bilinear resample (Pillow Resample.c: precompute_coeffs, normalize_coeffs_8bpc,
// ImagingResampleHorizontal_8bpc / Vertical_8bpc, ImagingResampleInner) ----
namespace {
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int32_t kHalf = int32_t{1} << (kPrecisionBits - 1);

struct Coefficients {
  int64_t ksize = 0;
  std::vector<int32_t> bounds;   // (min, count) per output pixel
  std::vector<int32_t> weights;  // ksize per output pixel
};

// Pillow takes the box as C floats and subtracts them in float (exact for integer boxes).
Coefficients precompute(int64_t in_size, float in0, float in1, int64_t out_size) {
  const double scale = static_cast<double>(in1 - in0) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // bilinear support 1
  Coefficients c;
  c.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(2 * out_size);
  c.weights.assign(out_size * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      double t = (x + xmin - center + 0.5) * ss;
      if (t < 0) t = -t;
      const double w = t < 1.0 ? 1.0 - t : 0.0;
      k[x] = w;
      ww += w;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      double w = ww != 0.0 ? k[x] / ww : k[x];
      w *= static_cast<double>(1 << kPrecisionBits);
      c.weights[xx * c.ksize + x] = static_cast<int32_t>(w < 0 ? -0.5 + w : 0.5 + w);
    }
    c.bounds[2 * xx] = static_cast<int32_t>(xmin);
    c.bounds[2 * xx + 1] = static_cast<int32_t>(xmax);
  }
  return c;
}

// Pillow sums in int32: 255 * (2^22 + ksize / 2) + 2^21 < 2^31, so no sum overflows.
inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One row of the horizontal pass: `in` holds the input row, C channels per pixel.
template <int C>
void horizontal_row(const uint8_t* in, const Coefficients& c, int64_t out_w, uint8_t* out) {
  for (int64_t xx = 0; xx < out_w; ++xx) {
    const int32_t n = c.bounds[2 * xx + 1];
    const uint8_t* p = in + int64_t{c.bounds[2 * xx]} * C;
    const int32_t* k = c.weights.data() + xx * c.ksize;
    int32_t ss[C];
    for (int ch = 0; ch < C; ++ch) ss[ch] = kHalf;
    for (int32_t x = 0; x < n; ++x) {
      for (int ch = 0; ch < C; ++ch) ss[ch] += int32_t{p[x * C + ch]} * k[x];
    }
    for (int ch = 0; ch < C; ++ch) out[xx * C + ch] = clip8(ss[ch]);
  }
}

// Two rows at a time for C channels: each output pixel's bounds and weights are loaded once for
// both rows (the same sums as horizontal_row, in the same order).
template <int C>
void horizontal_two_rows(const uint8_t* in0, const uint8_t* in1, const Coefficients& c,
                         int64_t out_w, uint8_t* out0, uint8_t* out1) {
  for (int64_t xx = 0; xx < out_w; ++xx) {
    const int32_t n = c.bounds[2 * xx + 1];
    const int64_t offset = int64_t{c.bounds[2 * xx]} * C;
    const uint8_t* p = in0 + offset;
    const uint8_t* q = in1 + offset;
    const int32_t* k = c.weights.data() + xx * c.ksize;
    int32_t ss[C], tt[C];
    for (int ch = 0; ch < C; ++ch) ss[ch] = tt[ch] = kHalf;
    for (int32_t x = 0; x < n; ++x) {
      const int32_t w = k[x];
      for (int ch = 0; ch < C; ++ch) {
        ss[ch] += int32_t{p[x * C + ch]} * w;
        tt[ch] += int32_t{q[x * C + ch]} * w;
      }
    }
    for (int ch = 0; ch < C; ++ch) {
      out0[xx * C + ch] = clip8(ss[ch]);
      out1[xx * C + ch] = clip8(tt[ch]);
    }
  }
}

#ifdef FRUGAL_X86_SIMD
__attribute__((target("sse4.1"))) inline __m128i load_pixel_sse41(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v));
}

__attribute__((target("sse4.1"))) inline void store_pixel_sse41(__m128i acc, uint8_t* o) {
  acc = _mm_srai_epi32(acc, kPrecisionBits);
  const __m128i words = _mm_packs_epi32(acc, acc);  // saturating, then clamped to 0..255
  const int32_t bytes = _mm_cvtsi128_si32(_mm_packus_epi16(words, words));
  std::memcpy(o, &bytes, 3);
}

// The horizontal pass of 3-channel rows with SSE4.1: one int32 lane per channel, the same
// products and sums as horizontal_row<3> (exact), two rows per coefficient load. A pixel is read
// as 4 bytes; an output pixel whose last read would pass `src_end` is left to the scalar code.
__attribute__((target("sse4.1"))) void horizontal_rgb_sse41(const uint8_t* src, int64_t stride,
                                                            int64_t rows, const Coefficients& c,
                                                            int64_t out_w, uint8_t* out,
                                                            const uint8_t* src_end) {
  const __m128i half = _mm_set1_epi32(kHalf);
  const int64_t out_row = out_w * 3;
  for (int64_t y = 0; y < rows; y += 2) {
    const bool two = y + 1 < rows;
    const uint8_t* in0 = src + y * stride;
    const uint8_t* in1 = two ? in0 + stride : in0;
    uint8_t* o0 = out + y * out_row;
    uint8_t* o1 = two ? o0 + out_row : o0;
    for (int64_t xx = 0; xx < out_w; ++xx) {
      const int32_t n = c.bounds[2 * xx + 1];
      const int64_t offset = int64_t{c.bounds[2 * xx]} * 3;
      const int32_t* k = c.weights.data() + xx * c.ksize;
      if (in1 + offset + 3 * int64_t{n} + 1 > src_end) {
        horizontal_row<3>(in0, c, out_w, o0);  // the scalar code for these rows' tail
        if (two) horizontal_row<3>(in1, c, out_w, o1);
        break;
      }
      const uint8_t* p = in0 + offset;
      const uint8_t* q = in1 + offset;
      __m128i a = half, b = half;
      for (int32_t x = 0; x < n; ++x) {
        const __m128i w = _mm_set1_epi32(k[x]);
        a = _mm_add_epi32(a, _mm_mullo_epi32(load_pixel_sse41(p + 3 * x), w));
        b = _mm_add_epi32(b, _mm_mullo_epi32(load_pixel_sse41(q + 3 * x), w));
      }
      store_pixel_sse41(a, o0 + 3 * xx);
      if (two) store_pixel_sse41(b, o1 + 3 * xx);
    }
  }
}

bool have_sse41() {
  static const bool yes = __builtin_cpu_supports("sse4.1");
  return yes;
}
#endif

// `src_end`: one past the last byte of the input that may be read.
void horizontal_pass(const uint8_t* src, int64_t stride, int64_t rows, int64_t channels,
                     const Coefficients& c, int64_t out_w, uint8_t* out, const uint8_t* src_end) {
#ifdef FRUGAL_X86_SIMD
  if (channels == 3 && have_sse41()) {
    horizontal_rgb_sse41(src, stride, rows, c, out_w, out, src_end);
    return;
  }
#endif
  const int64_t out_row = out_w * channels;
  int64_t y = 0;
  if (channels == 3 || channels == 1) {
    for (; y + 1 < rows; y += 2) {
      const uint8_t* in = src + y * stride;
      uint8_t* o = out + y * out_row;
      if (channels == 3) {
        horizontal_two_rows<3>(in, in + stride, c, out_w, o, o + out_row);
      } else {
        horizontal_two_rows<1>(in, in + stride, c, out_w, o, o + out_row);
      }
    }
  }
  for (; y < rows; ++y) {
    const uint8_t* in = src + y * stride;
    uint8_t* o = out + y * out_row;
    switch (channels) {
      case 1:
        horizontal_row<1>(in, c, out_w, o);
        break;
      case 3:
        horizontal_row<3>(in, c, out_w, o);
        break;
      default:
        for (int64_t ch = 0; ch < channels; ++ch) {
          for (int64_t xx = 0; xx < out_w; ++xx) {
            const int32_t n = c.bounds[2 * xx + 1];
            const uint8_t* p = in + int64_t{c.bounds[2 * xx]} * channels + ch;
            const int32_t* k = c.weights.data() + xx * c.ksize;
            int32_t ss = kHalf;
            for (int32_t x = 0; x < n; ++x) ss += int32_t{p[x * channels]} * k[x];
            o[xx * channels + ch] = clip8(ss);
          }
        }
    }
  }
}

// The vertical pass, a whole output row at a time: contiguous int32 sums (in `acc`, row_bytes
// long) that vectorise. Row r of the input is at src + (r - first_row) * stride; output rows are
// `row_bytes` long. (No thread_local or other object with a destructor in here: clang's
// target_clones then leaves std::vector's instantiations unemitted and the link fails.)
#ifdef FRUGAL_X86_SIMD
__attribute__((target_clones("avx2", "default")))
#endif
void vertical_kernel(const uint8_t* src, int64_t stride, int64_t first_row, int64_t row_bytes,
                     const int32_t* bounds, const int32_t* weights, int64_t ksize, int64_t out_h,
                     uint8_t* out, int32_t* acc) {
  for (int64_t yy = 0; yy < out_h; ++yy) {
    const int64_t ymin = bounds[2 * yy] - first_row;
    const int32_t n = bounds[2 * yy + 1];
    const int32_t* k = weights + yy * ksize;
    for (int64_t i = 0; i < row_bytes; ++i) acc[i] = kHalf;
    for (int32_t y = 0; y < n; ++y) {
      const uint8_t* row = src + (ymin + y) * stride;
      const int32_t w = k[y];
      for (int64_t i = 0; i < row_bytes; ++i) acc[i] += int32_t{row[i]} * w;
    }
    uint8_t* o = out + yy * row_bytes;
    for (int64_t i = 0; i < row_bytes; ++i) o[i] = clip8(acc[i]);
  }
}

void vertical_pass(const uint8_t* src, int64_t stride, int64_t first_row, int64_t row_bytes,
                   const Coefficients& c, int64_t out_h, uint8_t* out) {
  thread_local std::vector<int32_t> sums;
  sums.resize(static_cast<size_t>(row_bytes));
  vertical_kernel(src, stride, first_row, row_bytes, c.bounds.data(), c.weights.data(), c.ksize,
                  out_h, out, sums.data());
}
}  // namespace

namespace detail {
void resample_bilinear(const uint8_t* src, int64_t stride, int64_t in_height, int64_t in_width,
                       int64_t channels, double top, double left, double bottom, double right,
                       int64_t out_height, int64_t out_width, uint8_t* out) {
  // As ImagingResample: a pass is skipped when it would not change its dimension.
  const bool horizontal = out_width != in_width || static_cast<float>(left) != 0.0f ||
                          static_cast<float>(right) != static_cast<float>(out_width);
  const bool vertical = out_height != in_height || static_cast<float>(top) != 0.0f ||
                        static_cast<float>(bottom) != static_cast<float>(out_height);
  const int64_t out_row = out_width * channels;
  if (!horizontal && !vertical) {
    for (int64_t y = 0; y < in_height; ++y) {
      std::memcpy(out + y * out_row, src + y * stride, static_cast<size_t>(out_row));
    }
    return;
  }
  Coefficients vert;
  int64_t first_row = 0, rows = in_height;
  if (vertical) {
    vert = precompute(in_height, static_cast<float>(top), static_cast<float>(bottom), out_height);
    // The horizontal pass covers only the rows the vertical pass reads.
    first_row = vert.bounds[0];
    rows = vert.bounds[2 * out_height - 2] + vert.bounds[2 * out_height - 1] - first_row;
  }
  if (!horizontal) {
    vertical_pass(src, stride, 0, out_row, vert, out_height, out);
    return;
  }
  const Coefficients horiz =
      precompute(in_width, static_cast<float>(left), static_cast<float>(right), out_width);
  const uint8_t* src_end = src + (in_height - 1) * stride + in_width * channels;
  if (!vertical) {
    horizontal_pass(src, stride, rows, channels, horiz, out_width, out, src_end);
    return;
  }
  thread_local std::vector<uint8_t> mid;
  mid.resize(static_cast<size_t>(rows * out_row));
  horizontal_pass(src + first_row * stride, stride, rows, channels, horiz, out_width, mid.data(),
                  src_end);
  vertical_pass(mid.data(), out_row, first_row, out_row, vert, out_height, out);
}
}  // namespace detail

namespace {
Image new_image(int64_t height, int64_t width, int64_t channels) {
  Image image;
  image.height = height;
  image.width = width;
  image.channels = channels;
  image.pixels.resize(static_cast<size_t>(height * width * channels));
  return image;
}

// PIL's crop(box).resize(...) of `box`, which lies inside `image`.
Image resize_box(const Image& image, const CropBox& box, int64_t out_height, int64_t out_width) {
  Image result = new_image(out_height, out_width, image.channels);
  detail::resample_bilinear(
      image.pixels.data() + (box.top * image.width + box.left) * image.channels,
      image.width * image.channels, box.height, box.width, image.channels, 0.0, 0.0,
      static_cast<double>(box.height), static_cast<double>(box.width), out_height, out_width,
      result.pixels.data());
  return result;
}

// The DCT scale n/8 for JpegScaling::kDctScaled: the smallest of PIL's draft scales 1/8, 1/4,
// 1/2 with `height x width` * n/8 still covering `out_height x out_width`, else 8/8.
// libjpeg-turbo has SIMD inverse DCTs for these; its 3/8, 5/8, 6/8, 7/8 are plain C and were no
// faster than a full decode (docs/performance.md).
int dct_scale(double height, double width, int64_t out_height, int64_t out_width) {
  for (int n : {1, 2, 4}) {
    if (height * n >= 8.0 * static_cast<double>(out_height) &&
        width * n >= 8.0 * static_cast<double>(out_width)) {
      return n;
    }
  }
  return 8;
}
}  // namespace

Image resize_bilinear(const Image& image, const CropBox& box, int64_t out_height,
                      int64_t out_width) {
  FRUGAL_CHECK(out_height >= 1 && out_width >= 1, "resize: the output size must be >= 1, got ",
               out_height, "x", out_width);
  FRUGAL_CHECK(box.top >= 0 && box.left >= 0 && box.height >= 1 && box.width >= 1 &&
                   box.top + box.height <= image.height && box.left + box.width <= image.width,
               "resize: crop box (top ", box.top, ", left ", box.left, ", ", box.height, "x",
               box.width, ") is not inside the ", image.height, "x", image.width, " image");
  return resize_box(image, box, out_height, out_width);
}

// ---- Transform ----
Image Transform::apply_encoded(const uint8_t* data, size_t size, ColorMode mode,
                               const std::string& name, SampleRng& rng) const {
  return apply(decode_image(data, size, mode, name), rng);
}

Image Transform::apply_owned(Image&& image, SampleRng& rng) const { return apply(image, rng); }

// ---- Compose ----
Compose::Compose(std::vector<TransformPtr> transforms) : transforms_(std::move(transforms)) {
  for (const auto& t : transforms_) FRUGAL_CHECK(t != nullptr, "Compose: a transform is null");
}

Image Compose::apply(const Image& image, SampleRng& rng) const {
  if (transforms_.empty()) return image;
  Image current = transforms_[0]->apply(image, rng);
  for (size_t i = 1; i < transforms_.size(); ++i) {
    current = transforms_[i]->apply_owned(std::move(current), rng);
  }
  return current;
}

Image Compose::apply_encoded(const uint8_t* data, size_t size, ColorMode mode,
                             const std::string& name, SampleRng& rng) const {
  if (transforms_.empty()) return decode_image(data, size, mode, name);
  Image current = transforms_[0]->apply_encoded(data, size, mode, name, rng);
  for (size_t i = 1; i < transforms_.size(); ++i) {
    current = transforms_[i]->apply_owned(std::move(current), rng);
  }
  return current;
}

Image Compose::apply_owned(Image&& image, SampleRng& rng) const {
  Image current = std::move(image);
  for (const auto& t : transforms_) current = t->apply_owned(std::move(current), rng);
  return current;
}

std::string Compose::describe() const {
  std::vector<std::string> names;
  for (const auto& t : transforms_) names.push_back(t->describe());
  return fmt::format("Compose({})", fmt::join(names, ", "));
}

TransformPtr compose(std::vector<TransformPtr> transforms) {
  return std::make_shared<Compose>(std::move(transforms));
}

// ---- Resize ----
Resize::Resize(int64_t size, JpegScaling jpeg) : height_(size), width_(0), jpeg_(jpeg) {
  FRUGAL_CHECK(size >= 1, "Resize: size must be >= 1, got ", size);
}
Resize::Resize(int64_t height, int64_t width, JpegScaling jpeg)
    : height_(height), width_(width), jpeg_(jpeg) {
  FRUGAL_CHECK(height >= 1 && width >= 1, "Resize: size must be >= 1, got ", height, "x", width);
}

ImageSize Resize::output_size(ImageSize input) const {
  if (width_ != 0) return {height_, width_};
  // torchvision: the shorter side becomes `size`.
  const int64_t short_side = std::min(input.height, input.width);
  const int64_t long_side = std::max(input.height, input.width);
  const int64_t new_long =
      static_cast<int64_t>(static_cast<double>(height_) * static_cast<double>(long_side) /
                           static_cast<double>(short_side));
  return input.width <= input.height ? ImageSize{new_long, height_} : ImageSize{height_, new_long};
}

Image Resize::apply(const Image& image, SampleRng&) const {
  const ImageSize out = output_size({image.height, image.width});
  if (width_ == 0 && out.height == image.height && out.width == image.width) {
    return image;  // torchvision returns it
  }
  return resize_box(image, {0, 0, image.height, image.width}, out.height, out.width);
}

Image Resize::apply_encoded(const uint8_t* data, size_t size, ColorMode mode,
                            const std::string& name, SampleRng& rng) const {
  if (jpeg_ == JpegScaling::kExact || detect_image_format(data, size) != ImageFormat::kJpeg) {
    return Transform::apply_encoded(data, size, mode, name, rng);
  }
  const ImageSize full = jpeg_size(data, size, name);
  const ImageSize out = output_size(full);
  const int n = dct_scale(static_cast<double>(full.height), static_cast<double>(full.width),
                          out.height, out.width);
  if (n == 8) return Transform::apply_encoded(data, size, mode, name, rng);
  // PIL's draft, then resize of the whole (scaled) image.
  const ImageSize scaled = jpeg_scaled_size(full, n);
  const Image image =
      decode_jpeg_region(data, size, mode, name, {0, 0, scaled.height, scaled.width}, n).image;
  return resize_box(image, {0, 0, image.height, image.width}, out.height, out.width);
}

std::string Resize::describe() const {
  const char* scaling = jpeg_ == JpegScaling::kDctScaled ? ", jpeg=DctScaled" : "";
  return width_ == 0 ? fmt::format("Resize({}{})", height_, scaling)
                     : fmt::format("Resize({}, {}{})", height_, width_, scaling);
}

// ---- CenterCrop ----
CenterCrop::CenterCrop(int64_t height, int64_t width) : height_(height), width_(width) {
  FRUGAL_CHECK(height >= 1 && width >= 1, "CenterCrop: size must be >= 1, got ", height, "x",
               width);
}

Image CenterCrop::apply(const Image& image, SampleRng&) const {
  // torchvision pads a too-small image symmetrically (left/top = (crop - size) // 2) with 0,
  // then crops at round((H - h) / 2.0); on the padded image that round is exact.
  const int64_t pad_top = image.height < height_ ? (height_ - image.height) / 2 : 0;
  const int64_t pad_left = image.width < width_ ? (width_ - image.width) / 2 : 0;
  const int64_t padded_h = std::max(image.height, height_);
  const int64_t padded_w = std::max(image.width, width_);
  const int64_t top =
      static_cast<int64_t>(std::nearbyint(static_cast<double>(padded_h - height_) / 2.0));
  const int64_t left =
      static_cast<int64_t>(std::nearbyint(static_cast<double>(padded_w - width_) / 2.0));
  Image out;
  out.height = height_;
  out.width = width_;
  out.channels = image.channels;
  out.pixels.assign(static_cast<size_t>(height_ * width_ * image.channels), 0);
  for (int64_t y = 0; y < height_; ++y) {
    const int64_t sy = y + top - pad_top;
    if (sy < 0 || sy >= image.height) continue;
    const int64_t x0 = std::max<int64_t>(0, pad_left - left);
    const int64_t x1 = std::min<int64_t>(width_, image.width + pad_left - left);
    if (x1 <= x0) continue;
    std::memcpy(out.pixels.data() + (y * width_ + x0) * image.channels,
                image.pixels.data() + (sy * image.width + x0 + left - pad_left) * image.channels,
                static_cast<size_t>((x1 - x0) * image.channels));
  }
  return out;
}

std::string CenterCrop::describe() const {
  return fmt::format("CenterCrop({}, {})", height_, width_);
}

// ---- RandomResizedCrop ----
RandomResizedCrop::RandomResizedCrop(int64_t height, int64_t width, std::pair<double, double> scale,
                                     std::pair<double, double> ratio, JpegScaling jpeg)
    : height_(height), width_(width), scale_(scale), ratio_(ratio), jpeg_(jpeg) {
  FRUGAL_CHECK(height >= 1 && width >= 1, "RandomResizedCrop: size must be >= 1, got ", height, "x",
               width);
  FRUGAL_CHECK(scale.first > 0 && scale.first <= scale.second,
               "RandomResizedCrop: scale must be (lo, hi) with 0 < lo <= hi, got (", scale.first,
               ", ", scale.second, ")");
  FRUGAL_CHECK(ratio.first > 0 && ratio.first <= ratio.second,
               "RandomResizedCrop: ratio must be (lo, hi) with 0 < lo <= hi, got (", ratio.first,
               ", ", ratio.second, ")");
}

CropBox RandomResizedCrop::get_params(int64_t height, int64_t width,
                                      std::pair<double, double> scale,
                                      std::pair<double, double> ratio, const Uniform& uniform,
                                      const Randint& randint) {
  const double area = static_cast<double>(height * width);
  // torch.log(torch.tensor(ratio)): float32.
  const float log_lo = std::log(static_cast<float>(ratio.first));
  const float log_hi = std::log(static_cast<float>(ratio.second));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area =
        area * static_cast<double>(
                   uniform(static_cast<float>(scale.first), static_cast<float>(scale.second)));
    const double aspect = static_cast<double>(std::exp(uniform(log_lo, log_hi)));
    const int64_t w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
    const int64_t h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int64_t top = randint(height - h + 1);
      const int64_t left = randint(width - w + 1);
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  const double min_ratio = std::min(ratio.first, ratio.second);
  const double max_ratio = std::max(ratio.first, ratio.second);
  int64_t w = width, h = height;
  if (in_ratio < min_ratio) {
    h = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / min_ratio));
  } else if (in_ratio > max_ratio) {
    w = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) * max_ratio));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

CropBox RandomResizedCrop::draw_box(int64_t height, int64_t width, SampleRng& rng) const {
  return get_params(
      height, width, scale_, ratio_, [&](float lo, float hi) { return rng.uniform(lo, hi); },
      [&](int64_t n) { return rng.randint(n); });
}

Image RandomResizedCrop::apply(const Image& image, SampleRng& rng) const {
  return resize_box(image, draw_box(image.height, image.width, rng), height_, width_);
}

Image RandomResizedCrop::apply_encoded(const uint8_t* data, size_t size, ColorMode mode,
                                       const std::string& name, SampleRng& rng) const {
  if (detect_image_format(data, size) != ImageFormat::kJpeg) {
    return Transform::apply_encoded(data, size, mode, name, rng);
  }
  // The box depends only on the size, which the header gives: the same draws as apply().
  const ImageSize full = jpeg_size(data, size, name);
  const CropBox box = draw_box(full.height, full.width, rng);
  const int n = jpeg_ == JpegScaling::kExact
                    ? 8
                    : dct_scale(static_cast<double>(box.height), static_cast<double>(box.width),
                                height_, width_);
  if (n == 8) {
    // Exact: the box's pixels equal a full decode's (Note [Decoding part of a JPEG]).
    const ImageRegion region = decode_jpeg_region(data, size, mode, name, box);
    return resize_box(region.image,
                      {box.top - region.top, box.left - region.left, box.height, box.width},
                      height_, width_);
  }
  // DCT-scaled: the box in the scaled image's (fractional) pixels, resized as PIL's
  // resize(box=...) does, with the filter's support read around it.
  const ImageSize scaled = jpeg_scaled_size(full, n);
  const double top = box.top * n / 8.0, left = box.left * n / 8.0;
  const double bottom = std::min<double>((box.top + box.height) * n / 8.0, scaled.height);
  const double right = std::min<double>((box.left + box.width) * n / 8.0, scaled.width);
  const int64_t margin_y = static_cast<int64_t>(std::ceil((bottom - top) / height_)) + 1;
  const int64_t margin_x = static_cast<int64_t>(std::ceil((right - left) / width_)) + 1;
  const int64_t y0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(top)) - margin_y);
  const int64_t x0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(left)) - margin_x);
  const int64_t y1 =
      std::min<int64_t>(scaled.height, static_cast<int64_t>(std::ceil(bottom)) + margin_y);
  const int64_t x1 =
      std::min<int64_t>(scaled.width, static_cast<int64_t>(std::ceil(right)) + margin_x);
  const ImageRegion region =
      decode_jpeg_region(data, size, mode, name, {y0, x0, y1 - y0, x1 - x0}, n);
  const Image& im = region.image;
  Image result = new_image(height_, width_, im.channels);
  detail::resample_bilinear(im.pixels.data(), im.width * im.channels, im.height, im.width,
                            im.channels, top - region.top, left - region.left, bottom - region.top,
                            right - region.left, height_, width_, result.pixels.data());
  return result;
}

std::string RandomResizedCrop::describe() const {
  return fmt::format("RandomResizedCrop({}, {}, scale=({}, {}), ratio=({:.4f}, {:.4f}){})", height_,
                     width_, scale_.first, scale_.second, ratio_.first, ratio_.second,
                     jpeg_ == JpegScaling::kDctScaled ? ", jpeg=DctScaled" : "");
}

// ---- RandomHorizontalFlip ----
RandomHorizontalFlip::RandomHorizontalFlip(double p) : p_(p) {
  FRUGAL_CHECK(p >= 0.0 && p <= 1.0, "RandomHorizontalFlip: p must be in [0, 1], got ", p);
}

Image RandomHorizontalFlip::apply(const Image& image, SampleRng& rng) const {
  return apply_owned(Image(image), rng);
}

namespace {
template <int C>
void mirror_row(uint8_t* row, int64_t width) {
  for (int64_t a = 0, b = width - 1; a < b; ++a, --b) {
    for (int c = 0; c < C; ++c) std::swap(row[a * C + c], row[b * C + c]);
  }
}
}  // namespace

Image RandomHorizontalFlip::apply_owned(Image&& image, SampleRng& rng) const {
  if (!(rng.uniform(0.0f, 1.0f) < static_cast<float>(p_))) return std::move(image);
  const int64_t ch = image.channels;
  for (int64_t y = 0; y < image.height; ++y) {
    uint8_t* row = image.pixels.data() + y * image.width * ch;
    if (ch == 3) {
      mirror_row<3>(row, image.width);
    } else if (ch == 1) {
      mirror_row<1>(row, image.width);
    } else {
      for (int64_t a = 0, b = image.width - 1; a < b; ++a, --b) {
        std::swap_ranges(row + a * ch, row + (a + 1) * ch, row + b * ch);
      }
    }
  }
  return std::move(image);
}

std::string RandomHorizontalFlip::describe() const {
  return fmt::format("RandomHorizontalFlip(p={})", p_);
}

// ---- ColorJitter ----
namespace {
// PIL's ImagingBlend: out = (UINT8)(in1 + alpha * (in2 - in1)) in float, clipped to [0, 255].
void blend_into(const uint8_t* degenerate, const uint8_t* image, uint8_t* out, size_t n,
                float alpha) {
  for (size_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(degenerate[i]) +
                    alpha * static_cast<float>(int{image[i]} - int{degenerate[i]});
    out[i] = v <= 0.0f ? 0 : (v >= 255.0f ? 255 : static_cast<uint8_t>(v));
  }
}

// PIL's convert("L") of an RGB image (L24), or the image itself when it is gray.
std::vector<uint8_t> luma_plane(const Image& image) {
  const size_t n = static_cast<size_t>(image.height * image.width);
  if (image.channels == 1) return image.pixels;
  std::vector<uint8_t> l(n);
  const uint8_t* p = image.pixels.data();
  for (size_t i = 0; i < n; ++i) {
    l[i] = static_cast<uint8_t>(
        (p[3 * i] * 19595 + p[3 * i + 1] * 38470 + p[3 * i + 2] * 7471 + 0x8000) >> 16);
  }
  return l;
}
}  // namespace

ColorJitter::ColorJitter(double brightness, double contrast, double saturation)
    : brightness_(brightness), contrast_(contrast), saturation_(saturation) {
  FRUGAL_CHECK(brightness >= 0 && contrast >= 0 && saturation >= 0,
               "ColorJitter: brightness, contrast and saturation must be >= 0, got ", brightness,
               ", ", contrast, ", ", saturation);
}

Image ColorJitter::adjust_brightness(const Image& image, float factor) {
  Image out = image;
  const std::vector<uint8_t> black(image.pixels.size(), 0);
  blend_into(black.data(), image.pixels.data(), out.pixels.data(), image.pixels.size(), factor);
  return out;
}

Image ColorJitter::adjust_contrast(const Image& image, float factor) {
  const std::vector<uint8_t> l = luma_plane(image);
  double sum = 0;
  for (uint8_t v : l) sum += v;
  const int mean = static_cast<int>(sum / static_cast<double>(l.size()) + 0.5);
  Image out = image;
  const std::vector<uint8_t> grey(image.pixels.size(), static_cast<uint8_t>(mean));
  blend_into(grey.data(), image.pixels.data(), out.pixels.data(), image.pixels.size(), factor);
  return out;
}

Image ColorJitter::adjust_saturation(const Image& image, float factor) {
  if (image.channels == 1) return image;  // Color(L) blends the image with itself
  const std::vector<uint8_t> l = luma_plane(image);
  std::vector<uint8_t> degenerate(image.pixels.size());
  for (size_t i = 0; i < l.size(); ++i) {
    degenerate[3 * i] = degenerate[3 * i + 1] = degenerate[3 * i + 2] = l[i];
  }
  Image out = image;
  blend_into(degenerate.data(), image.pixels.data(), out.pixels.data(), image.pixels.size(),
             factor);
  return out;
}

ColorJitter::Params ColorJitter::get_params(const RandomResizedCrop::Uniform& uniform,
                                            const Randperm& randperm) const {
  Params p;
  p.order = randperm(4);
  auto draw = [&](double x) {
    return static_cast<float>(
        uniform(static_cast<float>(std::max(0.0, 1.0 - x)), static_cast<float>(1.0 + x)));
  };
  if (brightness_ > 0) p.brightness = draw(brightness_);
  if (contrast_ > 0) p.contrast = draw(contrast_);
  if (saturation_ > 0) p.saturation = draw(saturation_);
  return p;
}

Image ColorJitter::apply_params(const Image& image, const Params& params) {
  Image current = image;
  for (int64_t id : params.order) {
    if (id == 0 && params.brightness >= 0) current = adjust_brightness(current, params.brightness);
    if (id == 1 && params.contrast >= 0) current = adjust_contrast(current, params.contrast);
    if (id == 2 && params.saturation >= 0) current = adjust_saturation(current, params.saturation);
  }
  return current;
}

Image ColorJitter::apply(const Image& image, SampleRng& rng) const {
  const Params params = get_params([&](float lo, float hi) { return rng.uniform(lo, hi); },
                                   [&](int64_t n) {
                                     std::vector<int64_t> perm(static_cast<size_t>(n));
                                     for (int64_t i = 0; i < n; ++i) perm[i] = i;
                                     for (int64_t i = 0; i + 1 < n; ++i)
                                       std::swap(perm[i], perm[i + rng.randint(n - i)]);
                                     return perm;
                                   });
  return apply_params(image, params);
}

std::string ColorJitter::describe() const {
  return fmt::format("ColorJitter(brightness={}, contrast={}, saturation={})", brightness_,
                     contrast_, saturation_);
}

}  // namespace frugal

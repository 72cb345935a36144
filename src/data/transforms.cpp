#include "frugal/data/transforms.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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
// ImagingResampleHorizontal_8bpc / Vertical_8bpc) ----
namespace {
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coefficients {
  int64_t ksize = 0;
  std::vector<int64_t> bounds;   // (min, count) per output pixel
  std::vector<int32_t> weights;  // ksize per output pixel
};

Coefficients precompute(int64_t in_size, double in0, double in1, int64_t out_size) {
  const double scale = (in1 - in0) / static_cast<double>(out_size);
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
    c.bounds[2 * xx] = xmin;
    c.bounds[2 * xx + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int64_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
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
  const int64_t ch = image.channels;
  // PIL crops first, then resamples the whole crop (box 0..size).
  const Coefficients horiz = precompute(box.width, 0.0, static_cast<double>(box.width), out_width);
  const Coefficients vert =
      precompute(box.height, 0.0, static_cast<double>(box.height), out_height);
  // Horizontal pass over the rows the vertical pass reads.
  const int64_t row_first = vert.bounds[0];
  const int64_t row_last = vert.bounds[2 * out_height - 2] + vert.bounds[2 * out_height - 1];
  const int64_t rows = row_last - row_first;
  std::vector<uint8_t> mid(static_cast<size_t>(rows * out_width * ch));
  for (int64_t y = 0; y < rows; ++y) {
    const uint8_t* in =
        image.pixels.data() + ((box.top + row_first + y) * image.width + box.left) * ch;
    uint8_t* out = mid.data() + y * out_width * ch;
    for (int64_t xx = 0; xx < out_width; ++xx) {
      const int64_t xmin = horiz.bounds[2 * xx], xmax = horiz.bounds[2 * xx + 1];
      const int32_t* k = horiz.weights.data() + xx * horiz.ksize;
      for (int64_t c = 0; c < ch; ++c) {
        int64_t ss = int64_t{1} << (kPrecisionBits - 1);
        for (int64_t x = 0; x < xmax; ++x) ss += int64_t{in[(x + xmin) * ch + c]} * k[x];
        out[xx * ch + c] = clip8(ss);
      }
    }
  }
  Image result;
  result.height = out_height;
  result.width = out_width;
  result.channels = ch;
  result.pixels.resize(static_cast<size_t>(out_height * out_width * ch));
  const int64_t stride = out_width * ch;
  for (int64_t yy = 0; yy < out_height; ++yy) {
    const int64_t ymin = vert.bounds[2 * yy] - row_first, ymax = vert.bounds[2 * yy + 1];
    const int32_t* k = vert.weights.data() + yy * vert.ksize;
    uint8_t* out = result.pixels.data() + yy * stride;
    for (int64_t i = 0; i < stride; ++i) {
      int64_t ss = int64_t{1} << (kPrecisionBits - 1);
      for (int64_t y = 0; y < ymax; ++y) ss += int64_t{mid[(y + ymin) * stride + i]} * k[y];
      out[i] = clip8(ss);
    }
  }
  return result;
}

// ---- Compose ----
Compose::Compose(std::vector<TransformPtr> transforms) : transforms_(std::move(transforms)) {
  for (const auto& t : transforms_) FRUGAL_CHECK(t != nullptr, "Compose: a transform is null");
}

Image Compose::apply(const Image& image, SampleRng& rng) const {
  if (transforms_.empty()) return image;
  Image current = transforms_[0]->apply(image, rng);
  for (size_t i = 1; i < transforms_.size(); ++i) current = transforms_[i]->apply(current, rng);
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
Resize::Resize(int64_t size) : height_(size), width_(0) {
  FRUGAL_CHECK(size >= 1, "Resize: size must be >= 1, got ", size);
}
Resize::Resize(int64_t height, int64_t width) : height_(height), width_(width) {
  FRUGAL_CHECK(height >= 1 && width >= 1, "Resize: size must be >= 1, got ", height, "x", width);
}

Image Resize::apply(const Image& image, SampleRng&) const {
  int64_t out_h = height_, out_w = width_;
  if (width_ == 0) {  // torchvision: the shorter side becomes `size`
    const int64_t short_side = std::min(image.height, image.width);
    const int64_t long_side = std::max(image.height, image.width);
    const int64_t new_long =
        static_cast<int64_t>(static_cast<double>(height_) * static_cast<double>(long_side) /
                             static_cast<double>(short_side));
    if (image.width <= image.height) {
      out_w = height_;
      out_h = new_long;
    } else {
      out_h = height_;
      out_w = new_long;
    }
    if (out_h == image.height && out_w == image.width) return image;  // torchvision returns it
  }
  return resize_bilinear(image, {0, 0, image.height, image.width}, out_h, out_w);
}

std::string Resize::describe() const {
  return width_ == 0 ? fmt::format("Resize({})", height_)
                     : fmt::format("Resize({}, {})", height_, width_);
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
                                     std::pair<double, double> ratio)
    : height_(height), width_(width), scale_(scale), ratio_(ratio) {
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

Image RandomResizedCrop::apply(const Image& image, SampleRng& rng) const {
  const CropBox box = get_params(
      image.height, image.width, scale_, ratio_,
      [&](float lo, float hi) { return rng.uniform(lo, hi); },
      [&](int64_t n) { return rng.randint(n); });
  return resize_bilinear(image, box, height_, width_);
}

std::string RandomResizedCrop::describe() const {
  return fmt::format("RandomResizedCrop({}, {}, scale=({}, {}), ratio=({:.4f}, {:.4f}))", height_,
                     width_, scale_.first, scale_.second, ratio_.first, ratio_.second);
}

// ---- RandomHorizontalFlip ----
RandomHorizontalFlip::RandomHorizontalFlip(double p) : p_(p) {
  FRUGAL_CHECK(p >= 0.0 && p <= 1.0, "RandomHorizontalFlip: p must be in [0, 1], got ", p);
}

Image RandomHorizontalFlip::apply(const Image& image, SampleRng& rng) const {
  if (!(rng.uniform(0.0f, 1.0f) < static_cast<float>(p_))) return image;
  Image out = image;
  const int64_t ch = image.channels;
  for (int64_t y = 0; y < image.height; ++y) {
    const uint8_t* in = image.pixels.data() + y * image.width * ch;
    uint8_t* o = out.pixels.data() + y * image.width * ch;
    for (int64_t x = 0; x < image.width; ++x) {
      std::memcpy(o + x * ch, in + (image.width - 1 - x) * ch, static_cast<size_t>(ch));
    }
  }
  return out;
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

// Transforms on decoded uint8 images (HWC), composable and user-definable, with torchvision's
// semantics on PIL images (what torchvision users get from ImageFolder):
//
//   auto train_tf = frugal::compose({std::make_shared<frugal::RandomResizedCrop>(224),
//                                    std::make_shared<frugal::RandomHorizontalFlip>()});
//   frugal::SampleRng rng(seed, epoch, sample_index);   // randomness of one sample
//   frugal::Image out = train_tf->apply(image, rng);
//
// Normalize is not here: batches travel as uint8 and are normalized on the device.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "frugal/data/image.h"

namespace frugal {

/// The random stream of one sample: a counter-based generator keyed by (seed, epoch, index), so
/// a sample's augmentation does not depend on which thread draws it or on what was drawn before
/// (the same batches with any number of threads, and a resume that skips samples undrawn).
/// Draw k of the stream is SplitMix64(key + k * golden ratio), key a mix of the three.
class SampleRng {
 public:
  SampleRng(uint64_t seed, int64_t epoch, int64_t index);
  uint64_t next_u64();
  /// Uniform float32 in [lo, hi), as torch's `uniform_` on a float tensor: lo + (hi - lo) * u,
  /// u with 24 random bits.
  float uniform(float lo, float hi);
  /// Uniform integer in [0, n), n >= 1.
  int64_t randint(int64_t n);

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

/// PIL's `image.crop(box).resize((out_width, out_height), Image.BILINEAR)`: antialiased
/// bilinear (a triangle filter widened by the downscale factor), horizontal then vertical pass
/// (over only the rows the vertical pass reads), 22-bit fixed-point weights in int32 sums — the
/// same numbers as PIL. Reads the box in place: no cropped copy. `box` must lie inside the image.
Image resize_bilinear(const Image& image, const CropBox& box, int64_t out_height,
                      int64_t out_width);

/// How a transform that shrinks a JPEG decodes it.
enum class JpegScaling {
  /// A full-resolution decode (of the crop box only, for RandomResizedCrop): PIL's and so
  /// torchvision's pixels, bit for bit.
  kExact,
  /// libjpeg's DCT-domain downscaling to the smallest of PIL's draft scales 1/8, 1/4, 1/2 whose
  /// scaled crop still covers the output size in both dimensions (none: a full-scale decode),
  /// then the same bilinear resize of the scaled box (PIL's Image.draft followed by resize).
  /// Faster on images at least twice the output size, approximate: pixels differ from
  /// torchvision's (docs/data.md says by how much). Files other than JPEG are decoded exactly.
  kDctScaled,
};

namespace detail {
/// PIL's ImagingResample (BILINEAR) of the `in_height x in_width` image at `src` (rows `stride`
/// bytes apart) over the box [top, bottom) x [left, right) (fractional, as PIL's resize(box=),
/// which takes them as float32), into the contiguous `out_height x out_width` image at `out`.
void resample_bilinear(const uint8_t* src, int64_t stride, int64_t in_height, int64_t in_width,
                       int64_t channels, double top, double left, double bottom, double right,
                       int64_t out_height, int64_t out_width, uint8_t* out);
}  // namespace detail

class Transform {
 public:
  virtual ~Transform() = default;
  /// The transformed image; randomness only from `rng`.
  virtual Image apply(const Image& image, SampleRng& rng) const = 0;
  /// The transformed image of the encoded file `data` (`name` for errors), decoded in `mode`:
  /// what ImageLoader calls. By default decode_image, then apply; a transform that needs only part
  /// of the image (RandomResizedCrop) decodes only that part, with the same result.
  virtual Image apply_encoded(const uint8_t* data, size_t size, ColorMode mode,
                              const std::string& name, SampleRng& rng) const;
  /// apply() on an image the caller gives away, which the transform may change in place (a
  /// flip, ...): the same result as apply(image, rng), without a copy. By default apply().
  virtual Image apply_owned(Image&& image, SampleRng& rng) const;
  virtual std::string describe() const = 0;
};
using TransformPtr = std::shared_ptr<const Transform>;

/// Applies transforms in order.
class Compose : public Transform {
 public:
  explicit Compose(std::vector<TransformPtr> transforms);
  Image apply(const Image& image, SampleRng& rng) const override;
  /// The first transform's apply_encoded, then the others' apply_owned.
  Image apply_encoded(const uint8_t* data, size_t size, ColorMode mode, const std::string& name,
                      SampleRng& rng) const override;
  Image apply_owned(Image&& image, SampleRng& rng) const override;
  std::string describe() const override;

 private:
  std::vector<TransformPtr> transforms_;
};
TransformPtr compose(std::vector<TransformPtr> transforms);

/// torchvision's Resize on PIL images. With one size, the shorter side becomes `size` and the
/// longer `int(size * long / short)`; with two, the output is exactly height x width.
/// JpegScaling::kDctScaled: a JPEG is decoded at a reduced scale first (approximate).
class Resize : public Transform {
 public:
  explicit Resize(int64_t size, JpegScaling jpeg = JpegScaling::kExact);
  Resize(int64_t height, int64_t width, JpegScaling jpeg = JpegScaling::kExact);
  Image apply(const Image& image, SampleRng& rng) const override;
  Image apply_encoded(const uint8_t* data, size_t size, ColorMode mode, const std::string& name,
                      SampleRng& rng) const override;
  std::string describe() const override;

 private:
  ImageSize output_size(ImageSize input) const;
  int64_t height_;
  int64_t width_;  // 0: `height_` is the shorter side
  JpegScaling jpeg_;
};

/// torchvision's CenterCrop: top = round((H - h) / 2), left = round((W - w) / 2) (half to even);
/// an image smaller than the crop is padded with zeros first, as torchvision does.
class CenterCrop : public Transform {
 public:
  explicit CenterCrop(int64_t size) : CenterCrop(size, size) {}
  CenterCrop(int64_t height, int64_t width);
  Image apply(const Image& image, SampleRng& rng) const override;
  std::string describe() const override;

 private:
  int64_t height_;
  int64_t width_;
};

/// torchvision 0.14's RandomResizedCrop: a box by `get_params`, then PIL bilinear resize. From
/// an encoded JPEG (apply_encoded) only the box is decoded, with the same pixels; with
/// JpegScaling::kDctScaled it is decoded at a reduced scale (approximate):
///
///   auto crop = std::make_shared<frugal::RandomResizedCrop>(
///       224, std::pair{0.08, 1.0}, std::pair{3.0 / 4.0, 4.0 / 3.0},
///       frugal::JpegScaling::kDctScaled);
class RandomResizedCrop : public Transform {
 public:
  explicit RandomResizedCrop(int64_t size, std::pair<double, double> scale = {0.08, 1.0},
                             std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0},
                             JpegScaling jpeg = JpegScaling::kExact)
      : RandomResizedCrop(size, size, scale, ratio, jpeg) {}
  RandomResizedCrop(int64_t height, int64_t width, std::pair<double, double> scale,
                    std::pair<double, double> ratio, JpegScaling jpeg = JpegScaling::kExact);
  Image apply(const Image& image, SampleRng& rng) const override;
  Image apply_encoded(const uint8_t* data, size_t size, ColorMode mode, const std::string& name,
                      SampleRng& rng) const override;
  std::string describe() const override;

  /// `uniform(lo, hi)`: a float32 uniform; `randint(n)`: an integer in [0, n).
  using Uniform = std::function<float(float lo, float hi)>;
  using Randint = std::function<int64_t(int64_t n)>;
  /// torchvision's `get_params` step by step: up to 10 tries of area = H*W*U(scale) (float32
  /// draw), aspect = exp(U(log ratio)) (float32), w = round(sqrt(area*aspect)), h =
  /// round(sqrt(area/aspect)) (half to even), accepted when 0 < w <= W and 0 < h <= H, then
  /// top = randint(H-h+1), left = randint(W-w+1); otherwise the centred fallback. Fed the draws
  /// of LibTorch's CPU generator seeded like torch.manual_seed, it gives torchvision's boxes.
  static CropBox get_params(int64_t height, int64_t width, std::pair<double, double> scale,
                            std::pair<double, double> ratio, const Uniform& uniform,
                            const Randint& randint);

 private:
  int64_t height_;
  int64_t width_;
  CropBox draw_box(int64_t height, int64_t width, SampleRng& rng) const;
  std::pair<double, double> scale_;
  std::pair<double, double> ratio_;
  JpegScaling jpeg_;
};

/// torchvision's RandomHorizontalFlip: flips when U(0, 1) < p.
class RandomHorizontalFlip : public Transform {
 public:
  explicit RandomHorizontalFlip(double p = 0.5);
  Image apply(const Image& image, SampleRng& rng) const override;
  Image apply_owned(Image&& image, SampleRng& rng) const override;  // flips in place
  std::string describe() const override;

 private:
  double p_;
};

/// torchvision 0.14's ColorJitter on PIL images (brightness, contrast, saturation; no hue):
/// factors drawn from [max(0, 1 - x), 1 + x] (float32) and applied in a random order, each as
/// PIL's ImageEnhance does: Image.blend(degenerate, image, factor) with a float factor and
/// truncation — degenerate = black (brightness), the grey of the image's mean luma rounded
/// (contrast), the image's luma (saturation). A value of 0 turns a component off.
class ColorJitter : public Transform {
 public:
  explicit ColorJitter(double brightness = 0, double contrast = 0, double saturation = 0);
  Image apply(const Image& image, SampleRng& rng) const override;
  std::string describe() const override;

  struct Params {
    std::vector<int64_t> order;  // a permutation of {0 brightness, 1 contrast, 2 saturation, 3 hue}
    float brightness = -1, contrast = -1, saturation = -1;  // < 0: off
  };
  using Randperm = std::function<std::vector<int64_t>(int64_t n)>;
  /// torchvision's get_params: the order (randperm(4)) first, then one uniform per component
  /// that is on, in the order brightness, contrast, saturation.
  Params get_params(const RandomResizedCrop::Uniform& uniform, const Randperm& randperm) const;
  static Image apply_params(const Image& image, const Params& params);
  static Image adjust_brightness(const Image& image, float factor);
  static Image adjust_contrast(const Image& image, float factor);
  static Image adjust_saturation(const Image& image, float factor);

 private:
  double brightness_, contrast_, saturation_;
};

/// A user-defined transform from a function.
class LambdaTransform : public Transform {
 public:
  using Fn = std::function<Image(const Image&, SampleRng&)>;
  LambdaTransform(Fn fn, std::string name) : fn_(std::move(fn)), name_(std::move(name)) {}
  Image apply(const Image& image, SampleRng& rng) const override { return fn_(image, rng); }
  std::string describe() const override { return name_; }

 private:
  Fn fn_;
  std::string name_;
};

}  // namespace frugal

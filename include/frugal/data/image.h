// Decoded images and the decoder that reads JPEG, PNG and WebP files by their magic bytes.
//
// Pixels come out as PIL's `Image.open(path).convert("RGB")` (or `.convert("L")`) gives them:
// grayscale replicated to three channels, alpha dropped without compositing, palettes expanded,
// CMYK JPEGs (PIL's Adobe convention: stored inverted) converted with PIL's formula, 16-bit PNG
// samples reduced to their high byte, EXIF orientation and gamma ignored.
//
//   frugal::Image image = frugal::read_image("cat.jpg");  // HWC uint8, 3 channels
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace frugal {

/// What the decoder produces: three channels (PIL's "RGB") or one (PIL's "L").
enum class ColorMode { kRGB, kGray };

/// A file's format, from its first bytes (never from its name: ImageNet has PNGs named .JPEG).
enum class ImageFormat { kUnknown, kJpeg, kPng, kWebp, kBmp, kTiff, kPnm, kGif };

/// A crop box in pixels: rows [top, top + height), columns [left, left + width).
struct CropBox {
  int64_t top = 0;
  int64_t left = 0;
  int64_t height = 0;
  int64_t width = 0;
  bool operator==(const CropBox& o) const {
    return top == o.top && left == o.left && height == o.height && width == o.width;
  }
};

/// A decoded image: `height x width x channels` uint8, row-major (HWC).
struct Image {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  std::vector<uint8_t> pixels;

  /// A `height x width x channels` uint8 tensor holding a copy of the pixels.
  at::Tensor to_tensor() const;
};

/// The format named by the first bytes of `data`; kUnknown when none matches.
ImageFormat detect_image_format(const uint8_t* data, size_t size);
/// "JPEG", "PNG", ... for messages.
const char* image_format_name(ImageFormat format);
/// Whether decode_image decodes `format` in this build: JPEG and PNG (with libjpeg and libpng),
/// WebP (with libwebp).
bool image_format_supported(ImageFormat format);

/// Decodes an encoded image held in memory. `name` (a path) is used in error messages. A
/// corrupt, truncated or unsupported file throws frugal::Error naming it and what is wrong.
Image decode_image(const uint8_t* data, size_t size, ColorMode mode, const std::string& name);
/// The most pixels (width x height) an image may have to be decoded: PIL's decompression-bomb
/// limit, twice `Image.MAX_IMAGE_PIXELS` (89,478,485), i.e. 178,956,970 by default. A file whose
/// header claims more is refused with a frugal::Error naming it and its size, before any pixel
/// memory is allocated: a few bytes of PNG or JPEG header can claim gigabytes. 0 turns the check
/// off. The setting is process-wide.
int64_t max_image_pixels();
void set_max_image_pixels(int64_t pixels);

/// An image's size in pixels.
struct ImageSize {
  int64_t height = 0;
  int64_t width = 0;
};

/// A decoded part of an image: `image` holds the rows [top, top + image.height) and the columns
/// [left, left + image.width) of the (possibly DCT-scaled) image.
struct ImageRegion {
  Image image;
  int64_t top = 0;
  int64_t left = 0;
};

/// The size of the JPEG in `data`, from its header (no pixel is decoded); a frugal::Error naming
/// `name` when it is not a readable JPEG.
ImageSize jpeg_size(const uint8_t* data, size_t size, const std::string& name);

/// The size of a `size` JPEG decoded at `scale_eighths`/8 (1..8): libjpeg rounds up.
ImageSize jpeg_scaled_size(ImageSize size, int scale_eighths);

/// Decodes only the part of a JPEG that `box` needs, for crops of large images: the rows above
/// the box are skipped (jpeg_skip_scanlines) and the columns outside it not transformed
/// (jpeg_crop_scanline). The region returned covers `box` and may be wider (aligned to whole
/// iMCUs, plus one iMCU on each side, so that libjpeg's fancy upsampling sees the same neighbours);
/// inside `box` its pixels are exactly decode_image's (tests/data/test_jpeg_region.cpp).
/// `scale_eighths` < 8 decodes at scale_eighths/8 with libjpeg's DCT-domain scaling (PIL's
/// Image.draft: not PIL's full-size pixels); `box` is then in the scaled image's pixels
/// (jpeg_scaled_size). A box outside the image, a non-JPEG or a corrupt or truncated file
/// (truncated anywhere, also below the box) throws frugal::Error naming `name`.
ImageRegion decode_jpeg_region(const uint8_t* data, size_t size, ColorMode mode,
                               const std::string& name, const CropBox& box, int scale_eighths = 8);

/// Reads and decodes the file at `path`.
Image read_image(const std::string& path, ColorMode mode = ColorMode::kRGB);
/// The bytes of the file at `path` (an error naming it when it cannot be read).
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace frugal

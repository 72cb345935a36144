// Decoded images and the decoder that reads JPEG and PNG files by their magic bytes.
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

/// Reads and decodes the file at `path`.
Image read_image(const std::string& path, ColorMode mode = ColorMode::kRGB);
/// The bytes of the file at `path` (an error naming it when it cannot be read).
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace frugal

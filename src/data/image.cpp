// JPEG (libjpeg-turbo, libjpeg API), PNG (libpng) and WebP (libwebp) decoding to PIL's
// convert("RGB"/"L") pixels.
#include "frugal/data/image.h"

#include <ATen/ATen.h>
#ifdef FRUGAL_WITH_IMAGE_CODECS
#include <jpeglib.h>
// jpeglib.h first: jerror.h needs its types.
#include <jerror.h>
#include <png.h>
#endif
#ifdef FRUGAL_WITH_WEBP
#include <webp/decode.h>
#endif

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include "frugal/error.h"

namespace frugal {

at::Tensor Image::to_tensor() const {
  at::Tensor out = at::empty({height, width, channels}, at::kByte);
  if (!pixels.empty()) std::memcpy(out.data_ptr<uint8_t>(), pixels.data(), pixels.size());
  return out;
}

ImageFormat detect_image_format(const uint8_t* d, size_t n) {
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageFormat::kJpeg;
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::kPng;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) {
    return ImageFormat::kWebp;
  }
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return ImageFormat::kBmp;
  if (n >= 4 && (std::memcmp(d, "II*\0", 4) == 0 || std::memcmp(d, "MM\0*", 4) == 0)) {
    return ImageFormat::kTiff;
  }
  if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6') return ImageFormat::kPnm;
  if (n >= 4 && std::memcmp(d, "GIF8", 4) == 0) return ImageFormat::kGif;
  return ImageFormat::kUnknown;
}

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kWebp:
      return "WebP";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kTiff:
      return "TIFF";
    case ImageFormat::kPnm:
      return "PPM/PGM";
    case ImageFormat::kGif:
      return "GIF";
    case ImageFormat::kUnknown:
      break;
  }
  return "unknown";
}

namespace {
std::atomic<int64_t> g_max_image_pixels{2 * int64_t{89478485}};

/// An error when `width x height` is over max_image_pixels(), else an empty string.
/// (Header sizes are at most 32 bits each, so their product fits in 64 unsigned bits; fuzz_png
/// found the signed product overflowing.)
[[maybe_unused]] std::string pixel_limit_error(const std::string& name, const char* format,
                                               uint64_t width, uint64_t height) {
  const int64_t limit = g_max_image_pixels.load(std::memory_order_relaxed);
  const uint64_t pixels = width * height;
  if (limit <= 0 || pixels <= static_cast<uint64_t>(limit)) return {};
  return detail::concat(
      "cannot decode '", name, "' (", format, "): its header claims ", width, "x", height, " = ",
      pixels, " pixels, over the limit of max_image_pixels() = ", limit,
      " (PIL's decompression-bomb limit; frugal::set_max_image_pixels raises it)");
}

#ifdef FRUGAL_WITH_IMAGE_CODECS

// PIL's RGB -> L (Convert.c, L24): ITU-R 601-2 luma in 16-bit fixed point, rounded.
inline uint8_t luma(uint8_t r, uint8_t g, uint8_t b) {
  return static_cast<uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
}

// PIL's CMYK -> RGB (Convert.c, cmyk2rgb) on PIL's CMYK values.
inline uint8_t muldiv255(int a, int b) {
  const int tmp = a * b + 128;
  return static_cast<uint8_t>(((tmp >> 8) + tmp) >> 8);
}

// Converts `rgb` (3 channels) to one channel in place when `mode` asks for it.
void finish(Image* image, ColorMode mode) {
  if (mode != ColorMode::kGray || image->channels == 1) return;
  const size_t n = static_cast<size_t>(image->height * image->width);
  uint8_t* p = image->pixels.data();
  for (size_t i = 0; i < n; ++i) p[i] = luma(p[3 * i], p[3 * i + 1], p[3 * i + 2]);
  image->pixels.resize(n);
  image->channels = 1;
}

// ---- JPEG ----
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
  bool truncated = false;
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_emit_message(j_common_ptr cinfo, int level) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  // A premature end of data makes libjpeg pad the image with grey; PIL refuses such a file
  // ("image file is truncated"), and so do we. Other warnings are ignored, as PIL does.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    err->truncated = true;
    (*cinfo->err->format_message)(cinfo, err->message);
  }
}

// Converts `n` decoded rows of `comps` components (`in`, `width * comps` bytes apart) to the
// image's `channels` (`out`, `width * channels` bytes apart): grey replicated, CMYK to RGB.
void convert_jpeg_rows(const uint8_t* in, int comps, uint8_t* out, int64_t channels, int64_t width,
                       int64_t n) {
  for (int64_t r = 0; r < n; ++r, in += width * comps, out += width * channels) {
    if (comps == 1) {
      for (int64_t x = 0; x < width; ++x) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x];
    } else {
      // PIL reads CMYK JPEGs as Adobe writes them (inverted: rawmode "CMYK;I"), then cmyk2rgb.
      for (int64_t x = 0; x < width; ++x) {
        const uint8_t* p = in + 4 * x;
        const int nk = p[3];  // 255 - k, with k = 255 - p[3]
        for (int c = 0; c < 3; ++c) {
          const int v = 255 - p[c];
          out[3 * x + c] = static_cast<uint8_t>(std::max(0, nk - muldiv255(v, nk)));
        }
      }
    }
  }
}

// Note [Decoding part of a JPEG]. jpeg_crop_scanline narrows the columns that are inverse-DCT'd,
// upsampled and colour-converted (the entropy decoding still covers whole rows), and
// jpeg_skip_scanlines skips rows above the box without transforming them. Fancy (triangle)
// chroma upsampling reads the neighbouring chroma samples, which at a crop edge would be missing:
// the region is widened by one iMCU on each side, so the box's pixels see the same neighbours as
// in a full decode. Below the box: a file that ends with the EOI marker (FF D9) cannot run out of
// data before it (libjpeg stops at a marker), so decoding stops there; any other file is
// entropy-decoded to its last row, so that a truncated file is refused as decode_image refuses it
// (PIL: "image file is truncated"), wherever it is cut.
ImageRegion decode_jpeg_impl(const uint8_t* data, size_t size, ColorMode mode,
                             const std::string& name, const CropBox* box, int scale_eighths) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_emit_message;
  ImageRegion region;
  Image& image = region.image;
  std::vector<uint8_t> buffer;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(detail::concat("cannot decode '", name, "' (JPEG): ", err.message));
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (std::string e = pixel_limit_error(name, "JPEG", cinfo.image_width, cinfo.image_height);
      !e.empty()) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(e);
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  const bool gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
  if (cmyk) {
    cinfo.out_color_space = JCS_CMYK;
  } else if (gray) {
    cinfo.out_color_space = JCS_GRAYSCALE;
  } else {
    cinfo.out_color_space = JCS_RGB;
  }
  cinfo.scale_num = static_cast<unsigned>(scale_eighths);
  cinfo.scale_denom = 8;
  jpeg_start_decompress(&cinfo);
  const int64_t full_h = cinfo.output_height, full_w = cinfo.output_width;
  int64_t row_begin = 0, row_end = full_h;
  if (box != nullptr) {
    if (!(box->top >= 0 && box->left >= 0 && box->height >= 1 && box->width >= 1 &&
          box->top + box->height <= full_h && box->left + box->width <= full_w)) {
      jpeg_destroy_decompress(&cinfo);
      throw Error(detail::concat("cannot decode part of '", name, "' (JPEG): the box (top ",
                                 box->top, ", left ", box->left, ", ", box->height, "x", box->width,
                                 ") is not inside the ", full_h, "x", full_w, " image (at scale ",
                                 scale_eighths, "/8)"));
    }
    // See Note [Decoding part of a JPEG].
    const int64_t imcu_w = int64_t{cinfo.max_h_samp_factor} * cinfo.min_DCT_scaled_size;
    const int64_t imcu_h = int64_t{cinfo.max_v_samp_factor} * cinfo.min_DCT_scaled_size;
    JDIMENSION x = static_cast<JDIMENSION>(std::max<int64_t>(0, box->left - imcu_w));
    JDIMENSION width =
        static_cast<JDIMENSION>(std::min<int64_t>(full_w, box->left + box->width + imcu_w) - x);
    if (static_cast<int64_t>(width) < full_w) jpeg_crop_scanline(&cinfo, &x, &width);
    region.left = x;
    row_begin = std::max<int64_t>(0, box->top - imcu_h);
    row_end = std::min<int64_t>(full_h, box->top + box->height + imcu_h);
    if (row_begin > 0) jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(row_begin));
    region.top = row_begin;
  }
  const int64_t w = cinfo.output_width;
  const int comps = cinfo.output_components;
  image.height = row_end - row_begin;
  image.width = w;
  image.channels = (gray && mode == ColorMode::kGray) ? 1 : 3;
  image.pixels.resize(static_cast<size_t>(image.height * w * image.channels));
  // Several rows per call: libjpeg then upsamples straight into them, without its own row copy.
  constexpr int64_t kRows = 16;
  const bool direct = image.channels == comps;
  if (!direct) buffer.resize(static_cast<size_t>(kRows * w * comps));
  JSAMPROW rows[kRows];
  while (static_cast<int64_t>(cinfo.output_scanline) < row_end && !err.truncated) {
    const int64_t y = cinfo.output_scanline - row_begin;
    const int64_t n = std::min<int64_t>(kRows, row_end - cinfo.output_scanline);
    uint8_t* out = image.pixels.data() + y * w * image.channels;
    for (int64_t r = 0; r < n; ++r) {
      rows[r] = direct ? out + r * w * image.channels : buffer.data() + r * w * comps;
    }
    const int64_t got = jpeg_read_scanlines(&cinfo, rows, static_cast<JDIMENSION>(n));
    if (!direct) convert_jpeg_rows(buffer.data(), comps, out, image.channels, w, got);
  }
  if (row_end < full_h && !err.truncated) {
    const bool ends_with_eoi = size >= 2 && data[size - 2] == 0xFF && data[size - 1] == 0xD9;
    if (!ends_with_eoi) {
      // Entropy-decode to the last row, which is decoded (skipping to the end would not read).
      jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(full_h - 1 - row_end));
      buffer.resize(static_cast<size_t>(w * comps));
      rows[0] = buffer.data();
      if (!err.truncated) jpeg_read_scanlines(&cinfo, rows, 1);
    }
  }
  if (err.truncated) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(detail::concat("cannot decode '", name, "' (JPEG): the file is truncated (",
                               err.message, ")"));
  }
  if (static_cast<int64_t>(cinfo.output_scanline) == full_h) {
    jpeg_finish_decompress(&cinfo);
  } else {
    jpeg_abort_decompress(&cinfo);
  }
  jpeg_destroy_decompress(&cinfo);
  finish(&image, mode);
  return region;
}

Image decode_jpeg(const uint8_t* data, size_t size, ColorMode mode, const std::string& name) {
  return decode_jpeg_impl(data, size, mode, name, nullptr, 8).image;
}

ImageSize read_jpeg_size(const uint8_t* data, size_t size, const std::string& name) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_emit_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(detail::concat("cannot decode '", name, "' (JPEG): ", err.message));
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const ImageSize out{cinfo.image_height, cinfo.image_width};
  jpeg_destroy_decompress(&cinfo);
  return out;
}

// ---- PNG ----
struct PngReader {
  const uint8_t* data;
  size_t size;
  size_t offset;
  char message[256] = {0};
};

void png_read_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* reader = static_cast<PngReader*>(png_get_io_ptr(png));
  if (length > reader->size - reader->offset) {
    std::snprintf(reader->message, sizeof(reader->message), "the file is truncated");
    png_longjmp(png, 1);
  }
  std::memcpy(out, reader->data + reader->offset, length);
  reader->offset += length;
}

void png_error_fn(png_structp png, png_const_charp message) {
  auto* reader = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(reader->message, sizeof(reader->message), "%s", message);
  png_longjmp(png, 1);
}

void png_warning_fn(png_structp, png_const_charp) {}

Image decode_png(const uint8_t* data, size_t size, ColorMode mode, const std::string& name) {
  // The size, from IHDR (always the first chunk, at a fixed place), is checked before libpng
  // reads further: png_read_info reads up to the first IDAT.
  if (size >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    auto be32 = [&](size_t at) {
      return uint64_t{data[at]} << 24 | uint64_t{data[at + 1]} << 16 | uint64_t{data[at + 2]} << 8 |
             uint64_t{data[at + 3]};
    };
    if (std::string e = pixel_limit_error(name, "PNG", be32(16), be32(20)); !e.empty()) {
      throw Error(e);
    }
  }
  PngReader reader{data, size, 0};
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, png_error_fn, png_warning_fn);
  FRUGAL_CHECK(png != nullptr, "cannot decode '", name, "' (PNG): out of memory");
  png_infop info = png_create_info_struct(png);
  Image image;
  std::vector<png_bytep> rows;
  std::vector<uint8_t> buffer;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(detail::concat("cannot decode '", name, "' (PNG): ", reader.message));
  }
  png_set_read_fn(png, &reader, png_read_memory);
  // CRC errors in ancillary chunks are errors too: PIL checks every CRC.
  png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info);
  const png_uint_32 h = png_get_image_height(png, info);
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  if (depth == 16) png_set_strip_16(png);  // PIL keeps the high byte ("RGB;16B")
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth < 8) png_set_packing(png);
  // Alpha (and a palette's tRNS, which the expansion turns into alpha) is dropped, not composited.
  if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) {
    png_set_strip_alpha(png);
  }
  const bool gray_source = (color & ~PNG_COLOR_MASK_ALPHA) == PNG_COLOR_TYPE_GRAY;
  if (gray_source && mode == ColorMode::kRGB) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int channels = png_get_channels(png, info);
  image.height = h;
  image.width = w;
  image.channels = channels;
  image.pixels.resize(static_cast<size_t>(h) * w * channels);
  rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = image.pixels.data() + size_t(y) * w * channels;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  finish(&image, mode);
  return image;
}

#ifdef FRUGAL_WITH_WEBP
// ---- WebP ----
const char* webp_status(VP8StatusCode status) {
  switch (status) {
    case VP8_STATUS_OUT_OF_MEMORY:
      return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
      return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
      return "corrupt data (bitstream error)";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
      return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
    case VP8_STATUS_NOT_ENOUGH_DATA:
      return "the file is truncated";
    default:
      return "decoding failed";
  }
}

// PIL's convert("RGB") of a WebP: the colour channels, alpha dropped (libwebp's RGB output of a
// file with alpha is its RGBA output without A: no premultiplication, as PIL's RGBA mode).
Image decode_webp(const uint8_t* data, size_t size, ColorMode mode, const std::string& name) {
  WebPBitstreamFeatures features;
  const VP8StatusCode status = WebPGetFeatures(data, size, &features);
  if (status != VP8_STATUS_OK) {
    throw Error(detail::concat("cannot decode '", name, "' (WebP): ", webp_status(status)));
  }
  if (features.has_animation) {
    throw Error(detail::concat("cannot decode '", name,
                               "' (WebP): animated WebP is not supported (PIL would give the "
                               "first frame)"));
  }
  if (std::string e = pixel_limit_error(name, "WebP", static_cast<uint64_t>(features.width),
                                        static_cast<uint64_t>(features.height));
      !e.empty()) {
    throw Error(e);
  }
  Image image;
  image.height = features.height;
  image.width = features.width;
  image.channels = 3;
  image.pixels.resize(static_cast<size_t>(image.height * image.width * 3));
  if (WebPDecodeRGBInto(data, size, image.pixels.data(), image.pixels.size(),
                        static_cast<int>(image.width * 3)) == nullptr) {
    // The header was fine: the image data is cut short or damaged.
    WebPDecoderConfig config;
    WebPInitDecoderConfig(&config);
    config.output.colorspace = MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = image.pixels.data();
    config.output.u.RGBA.stride = static_cast<int>(image.width * 3);
    config.output.u.RGBA.size = image.pixels.size();
    throw Error(detail::concat("cannot decode '", name,
                               "' (WebP): ", webp_status(WebPDecode(data, size, &config))));
  }
  finish(&image, mode);
  return image;
}
#endif
#else
[[noreturn]] void no_codecs(const std::string& name, const char* format) {
  throw Error(detail::concat("cannot decode '", name, "' (", format,
                             "): frugal was built without libjpeg/libpng (install "
                             "libjpeg62-turbo-dev and libpng-dev and rebuild)"));
}
Image decode_jpeg(const uint8_t*, size_t, ColorMode, const std::string& name) {
  no_codecs(name, "JPEG");
}
ImageRegion decode_jpeg_impl(const uint8_t*, size_t, ColorMode, const std::string& name,
                             const CropBox*, int) {
  no_codecs(name, "JPEG");
}
ImageSize read_jpeg_size(const uint8_t*, size_t, const std::string& name) {
  no_codecs(name, "JPEG");
}
Image decode_png(const uint8_t*, size_t, ColorMode, const std::string& name) {
  no_codecs(name, "PNG");
}
#endif
}  // namespace

namespace {
const char* supported_formats() {
#ifdef FRUGAL_WITH_WEBP
  return "JPEG, PNG and WebP";
#else
  return "JPEG and PNG";
#endif
}
}  // namespace

bool image_format_supported(ImageFormat format) {
#ifdef FRUGAL_WITH_IMAGE_CODECS
  if (format == ImageFormat::kJpeg || format == ImageFormat::kPng) return true;
#endif
#ifdef FRUGAL_WITH_WEBP
  if (format == ImageFormat::kWebp) return true;
#endif
  return false;
}

int64_t max_image_pixels() { return g_max_image_pixels.load(std::memory_order_relaxed); }

void set_max_image_pixels(int64_t pixels) {
  FRUGAL_CHECK(pixels >= 0,
               "set_max_image_pixels: expected a number of pixels >= 0 (0: no limit), got ",
               pixels);
  g_max_image_pixels.store(pixels, std::memory_order_relaxed);
}

Image decode_image(const uint8_t* data, size_t size, ColorMode mode, const std::string& name) {
  FRUGAL_CHECK(size > 0, "cannot decode '", name, "': the file is empty");
  const ImageFormat format = detect_image_format(data, size);
  switch (format) {
    case ImageFormat::kJpeg:
      return decode_jpeg(data, size, mode, name);
    case ImageFormat::kPng:
      return decode_png(data, size, mode, name);
#ifdef FRUGAL_WITH_WEBP
    case ImageFormat::kWebp:
      return decode_webp(data, size, mode, name);
#endif
    case ImageFormat::kUnknown:
      throw Error(detail::concat("cannot decode '", name,
                                 "': not an image file (its first bytes match no known format)"));
    default:
      throw Error(detail::concat("cannot decode '", name, "': ", image_format_name(format),
                                 " is not supported (frugal decodes ", supported_formats(), ")"));
  }
}

namespace {
void check_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  FRUGAL_CHECK(size > 0, "cannot decode '", name, "': the file is empty");
  const ImageFormat format = detect_image_format(data, size);
  FRUGAL_CHECK(format == ImageFormat::kJpeg, "cannot decode '", name, "' as a JPEG: it is ",
               format == ImageFormat::kUnknown ? "not an image file" : image_format_name(format));
}
}  // namespace

ImageSize jpeg_size(const uint8_t* data, size_t size, const std::string& name) {
  check_jpeg(data, size, name);
  return read_jpeg_size(data, size, name);
}

ImageSize jpeg_scaled_size(ImageSize size, int scale_eighths) {
  FRUGAL_CHECK(scale_eighths >= 1 && scale_eighths <= 8,
               "jpeg_scaled_size: scale_eighths must be in [1, 8], got ", scale_eighths);
  return {(size.height * scale_eighths + 7) / 8, (size.width * scale_eighths + 7) / 8};
}

ImageRegion decode_jpeg_region(const uint8_t* data, size_t size, ColorMode mode,
                               const std::string& name, const CropBox& box, int scale_eighths) {
  FRUGAL_CHECK(scale_eighths >= 1 && scale_eighths <= 8, "cannot decode part of '", name,
               "': scale_eighths must be in [1, 8], got ", scale_eighths);
  check_jpeg(data, size, name);
  return decode_jpeg_impl(data, size, mode, name, &box, scale_eighths);
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  FRUGAL_CHECK(in.good(), "cannot read '", path, "': no such file or not readable");
  const std::streamoff size = in.tellg();
  FRUGAL_CHECK(size >= 0, "cannot read '", path, "': not a regular file");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0) in.read(reinterpret_cast<char*>(bytes.data()), size);
  FRUGAL_CHECK(in.good(), "cannot read '", path, "': read error");
  return bytes;
}

Image read_image(const std::string& path, ColorMode mode) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes.data(), bytes.size(), mode, path);
}

}  // namespace frugal

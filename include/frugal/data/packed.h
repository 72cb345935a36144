// A packed image cache: one file, built once by `frugal-pack` (or write_packed), that later
// epochs and runs read instead of walking a folder and decoding full-size images.
//
//   frugal-pack --data data/train --out train.fpk --max-side 320     # once
//
//   auto cache = frugal::PackedFile::open("train.fpk");  // checks header, table, bounds
//   auto train = std::make_shared<frugal::ImageLoader>(cache, transform, 224, 224, options);
//
// The file (little-endian; docs/data.md, "The packed cache", has the byte layout):
//   page 0     the magic "FRUGALPK" and the version;
//   data       the samples in the source's order, each either the encoded image (JPEG) or raw
//              uint8 HWC pixels. A sample larger than a page starts on a page boundary; a smaller
//              one never straddles a page boundary (so reading one touches the fewest pages);
//   table      one 40-byte entry per sample: offset, size, label, height, width, CRC-32,
//              channels, format;
//   strings    the class names, then every sample's path relative to the packed folder;
//   trailer    128 bytes: counts, offsets, storage, the CRC-32s of the table, the strings and
//              itself.
// The cache is memory-mapped: samples are read from the page cache without copies, and a data set
// larger than RAM can be read in block-shuffled order (ImageLoaderOptions::shuffle_block).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "frugal/data/image.h"
#include "frugal/data/image_folder.h"
#include "frugal/data/sample_store.h"

namespace frugal {

/// How a packed cache stores each sample.
enum class PackedStorage : uint8_t {
  kJpeg = 1,  ///< encoded as JPEG (JPEG sources that fit max_side kept byte for byte)
  kRaw = 2,   ///< decoded uint8 HWC pixels: no decoding at all when read, ~10x the bytes
};

struct PackOptions {
  /// kJpeg or kRaw.
  PackedStorage storage = PackedStorage::kJpeg;
  /// Images whose longer side exceeds this are shrunk to it (PIL-style antialiased bilinear,
  /// aspect kept); 0 keeps every size.
  int64_t max_side = 0;
  /// JPEG quality (1-100) of the images that are (re-)encoded: resized ones and non-JPEG sources.
  int quality = 90;
  /// kRaw only: the stored colour mode (kGray stores one channel, as PIL's convert("L")).
  ColorMode color = ColorMode::kRGB;
  /// Threads that decode and encode (0: the number of CPUs).
  int64_t threads = 0;
  /// A sample that cannot be read or decoded: false (default) stops with its error; true leaves it
  /// out (listed in PackResult::skipped).
  bool skip_bad = false;
  /// Called from the writing thread after each sample: (samples done, total).
  std::function<void(int64_t, int64_t)> progress;
};

struct PackResult {
  int64_t samples = 0;               ///< samples written
  int64_t file_bytes = 0;            ///< size of the cache
  int64_t source_bytes = 0;          ///< bytes of the source files read
  int64_t kept_encoded = 0;          ///< JPEGs stored byte for byte
  std::vector<std::string> skipped;  ///< "path: error" of samples left out (skip_bad)
};

/// Writes the samples (paths and labels, e.g. ImageFolder::samples()) and the class names into a
/// packed cache at `path`, atomically (a temporary file renamed over `path` when complete).
/// Sample paths are stored relative to `root` (the packed folder). Every label must be a valid
/// index into `classes`. Errors name the option or the file.
PackResult write_packed(const std::string& path, const std::vector<ImageSample>& samples,
                        const std::vector<std::string>& classes, const std::string& root,
                        const PackOptions& options = {});

/// One sample's entry in a cache's table.
struct PackedEntry {
  uint64_t offset = 0;
  uint64_t size = 0;
  int64_t label = 0;
  uint32_t height = 0;
  uint32_t width = 0;
  uint32_t crc32 = 0;
  uint16_t channels = 0;
  uint8_t format = 0;  ///< ImageFormat of an encoded sample; 0 for raw
};

/// A packed cache opened for reading (memory-mapped). Opening checks everything that can be
/// checked without reading every sample: magic and version, the header's, the table's and the
/// strings' CRC-32s, the file's size against the header (a truncated copy), every sample's bounds,
/// label and shape. Each read checks the sample's CRC-32. Every error names the file (and the
/// sample, by index and source path) and what is wrong. Thread-safe for reading.
class PackedFile : public SampleStore {
 public:
  static std::shared_ptr<const PackedFile> open(const std::string& path);
  /// A cache held in memory (tests, fuzzing); `name` is used in messages.
  static std::shared_ptr<const PackedFile> from_bytes(std::vector<uint8_t> bytes,
                                                      const std::string& name);
  ~PackedFile() override;

  const std::string& name() const override { return name_; }
  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  const std::vector<std::string>& classes() const override { return classes_; }
  int64_t label(int64_t index) const override { return entry(index).label; }
  std::string sample_name(int64_t index) const override;
  const std::vector<std::string>& paths() const { return paths_; }
  const PackedEntry& entry(int64_t index) const;
  PackedStorage storage() const { return storage_; }
  /// The stored colour mode of a raw cache (kRGB for JPEG caches).
  ColorMode stored_color() const { return color_; }
  int64_t max_side() const { return max_side_; }
  int64_t file_bytes() const { return static_cast<int64_t>(bytes_); }
  /// Mean bytes per sample (data region / samples): sizes block shuffles.
  double mean_sample_bytes() const;

  /// Sample `index` decoded (JPEG) or copied (raw) in `mode`, after its checksum is checked.
  Image read(int64_t index, ColorMode mode) const override;
  /// A JPEG cache hands the transform the stored bytes (a crop decodes only its box).
  Image read_transformed(int64_t index, ColorMode mode, const Transform& transform,
                         SampleRng& rng) const override;
  /// Sample `index`'s stored bytes, checksum checked (valid as long as this object lives).
  std::pair<const uint8_t*, size_t> bytes(int64_t index) const;
  /// Checks every sample's CRC-32; throws on the first that fails.
  void verify() const;

 private:
  PackedFile() = default;
  void parse();
  std::string describe_sample(int64_t index) const;

  std::string name_;
  const uint8_t* data_ = nullptr;
  size_t bytes_ = 0;
  int fd_ = -1;
  void* mapping_ = nullptr;
  std::vector<uint8_t> owned_;
  PackedStorage storage_ = PackedStorage::kJpeg;
  ColorMode color_ = ColorMode::kRGB;
  int64_t max_side_ = 0;
  uint64_t data_begin_ = 0, data_end_ = 0;
  std::vector<PackedEntry> entries_;
  std::vector<std::string> classes_;
  std::vector<std::string> paths_;
};

}  // namespace frugal

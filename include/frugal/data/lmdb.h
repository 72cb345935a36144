// Images in an LMDB database (Debian's liblmdb), for data that already sits in LMDB, and a
// writer (frugal-pack --format lmdb) for the same layout.
//
//   auto db = frugal::LmdbFile::open("train.lmdb");   // a file, or a folder holding data.mdb
//   auto train = std::make_shared<frugal::ImageLoader>(db, transform, 224, 224, options);
//
// The layout (docs/data.md, "LMDB"), in the unnamed database:
//   key "00000000", "00000001", ...: sample i, as 8 decimal digits (so keys sort by index);
//     value: the label as int64 little-endian (8 bytes), then the encoded image (JPEG or PNG);
//   key "__frugal__" (optional): JSON {"format": "frugal-images", "version": 1, "samples": N,
//     "classes": [names], "labels": [one per sample], "names": [one per sample]}.
// Without "__frugal__", the samples are the consecutive keys from "00000000", their labels are
// read from the values when the database is opened, and the classes are named "0" .. "max label".
// The database is opened read-only and without a lock file (MDB_NOLOCK): nothing may write to it
// while it is read.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "frugal/data/packed.h"
#include "frugal/data/sample_store.h"

namespace frugal {

/// True when frugal was built with liblmdb (LmdbFile and write_lmdb throw otherwise).
bool lmdb_available();

class LmdbFile : public SampleStore {
 public:
  /// Opens the database at `path`: a file written with MDB_NOSUBDIR (as write_lmdb writes), or a
  /// folder holding data.mdb. Reads the sample count, labels and class names (or scans the
  /// labels); errors name the path and what is wrong.
  static std::shared_ptr<const LmdbFile> open(const std::string& path);
  ~LmdbFile() override;

  const std::string& name() const override { return name_; }
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  const std::vector<std::string>& classes() const override { return classes_; }
  int64_t label(int64_t index) const override;
  std::string sample_name(int64_t index) const override;
  /// Sample `index` decoded in `mode`, in its own read-only transaction (threads may read at once).
  Image read(int64_t index, ColorMode mode) const override;
  /// The transform gets the encoded bytes, inside the read transaction.
  Image read_transformed(int64_t index, ColorMode mode, const Transform& transform,
                         SampleRng& rng) const override;
  /// The 8-digit key of sample `index`.
  static std::string key(int64_t index);

 private:
  LmdbFile() = default;
  /// `use(bytes, size, name)` on sample `index`'s encoded image, inside a read transaction.
  Image with_bytes(
      int64_t index,
      const std::function<Image(const uint8_t*, size_t, const std::string&)>& use) const;
  struct Env;
  std::string name_;
  std::unique_ptr<Env> env_;
  std::vector<int64_t> labels_;
  std::vector<std::string> classes_;
  std::vector<std::string> names_;
};

/// Writes the samples into a new LMDB database file at `path` (MDB_NOSUBDIR), in the layout above
/// with "__frugal__", atomically (a temporary file renamed over `path` when complete). The images
/// are stored as PackOptions says, JPEG only (kRaw is refused: LMDB here holds encoded images).
PackResult write_lmdb(const std::string& path, const std::vector<ImageSample>& samples,
                      const std::vector<std::string>& classes, const std::string& root,
                      const PackOptions& options = {});

}  // namespace frugal

// Checksummed archives: a LibTorch archive (a zip file) whose zip comment carries the SHA-256 of
// everything before it, so that a flipped or lost byte anywhere is refused on load. LibTorch's
// reader skips the zip's own per-record CRCs (PyTorch builds miniz with
// MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS), so without this a damaged checkpoint often loads
// without a word, with different weights. See Note [Checkpoint checksums] in checksum.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace frugal::detail {

/// Passes a zip archive's bytes on to `sink` while hashing them, holding back the last bytes seen
/// (the end-of-central-directory record); finish() writes that record back with the digest as
/// its comment.
class ChecksummedZipWriter {
 public:
  using Sink = std::function<void(const void*, size_t)>;
  explicit ChecksummedZipWriter(Sink sink);
  ~ChecksummedZipWriter();
  ChecksummedZipWriter(const ChecksummedZipWriter&) = delete;
  ChecksummedZipWriter& operator=(const ChecksummedZipWriter&) = delete;

  void write(const void* data, size_t size);
  /// Throws frugal::Error if the bytes did not end with an end-of-central-directory record
  /// without a comment (what LibTorch writes).
  void finish(const std::string& path);

 private:
  struct Impl;
  Impl* impl_;
};

enum class ChecksumStatus {
  kVerified,  ///< the recorded digest matches the file
  kAbsent     ///< the file has no frugal digest (written before checksums, or not by frugal)
};

/// Reads `path` through once and checks its recorded digest; throws frugal::Error naming the file
/// when it does not match.
ChecksumStatus verify_checksum(const std::string& path);

}  // namespace frugal::detail

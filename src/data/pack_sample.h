// What write_packed and write_lmdb share (src/data/packed.cpp): input checks, and the parallel
// read/decode/resize/encode of the samples, handed out in order.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "frugal/data/packed.h"

namespace frugal::detail {

/// One sample made ready for a cache: its stored bytes and table entry (offset unset), or the
/// error that made it unreadable.
struct PackedSample {
  std::vector<uint8_t> bytes;
  PackedEntry entry;
  int64_t source_bytes = 0;
  bool kept = false;  ///< a JPEG source stored byte for byte
  std::string error;
};

/// Reads, decodes, shrinks (max_side) and stores (raw pixels, the JPEG as it is, or re-encoded as
/// JPEG) one sample. Never throws for a bad file: the error is in the result.
PackedSample pack_sample(const ImageSample& sample, const PackOptions& options);

/// Checks what every cache writer checks (`who` names it in errors), and that `path`'s folder
/// can take the file.
void check_pack_input(const char* who, const std::string& path,
                      const std::vector<ImageSample>& samples,
                      const std::vector<std::string>& classes, const PackOptions& options);

/// Prepares the samples on options.threads threads, in chunks, and calls `emit(name, sample)`
/// for each good one in order (name: its path relative to `root`). A bad one stops with its error,
/// or with options.skip_bad is left out and listed in result->skipped. Counts into `result`,
/// calls options.progress.
void pack_samples(const char* who, const std::vector<ImageSample>& samples, const std::string& root,
                  const PackOptions& options, PackResult* result,
                  const std::function<void(const std::string& name, PackedSample& sample)>& emit);

}  // namespace frugal::detail

// SampleStore: images held in one container (a packed cache, an LMDB database) rather than one
// file each; what ImageLoader reads them through.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "frugal/data/image.h"
#include "frugal/data/image_folder.h"

namespace frugal {

class Transform;
class SampleRng;

class SampleStore {
 public:
  virtual ~SampleStore() = default;
  /// The container's name (its path), for messages.
  virtual const std::string& name() const = 0;
  virtual int64_t size() const = 0;
  virtual const std::vector<std::string>& classes() const = 0;
  virtual int64_t label(int64_t index) const = 0;
  /// Sample `index`'s name within the container (e.g. its source path).
  virtual std::string sample_name(int64_t index) const = 0;
  /// Sample `index` decoded in `mode`; a damaged sample throws frugal::Error naming it.
  virtual Image read(int64_t index, ColorMode mode) const = 0;
  /// `transform` applied to sample `index`. Stores holding encoded images override it to hand
  /// the transform the encoded bytes (Transform::apply_encoded: a crop decodes only its box);
  /// the default is transform.apply(read(index, mode), rng). Same pixels either way.
  virtual Image read_transformed(int64_t index, ColorMode mode, const Transform& transform,
                                 SampleRng& rng) const;
  /// Threads may call read() and read_transformed() at the same time.

  /// The samples as {sample name, label}.
  std::vector<ImageSample> samples() const {
    std::vector<ImageSample> out(static_cast<size_t>(size()));
    for (int64_t i = 0; i < size(); ++i) out[static_cast<size_t>(i)] = {sample_name(i), label(i)};
    return out;
  }
};

}  // namespace frugal

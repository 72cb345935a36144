// IDX files as they come: plain, or gzip'd when they start with gzip's magic (zlib's gzread reads
// both), through frugal::datasets::read_idx.
#include <cstddef>
#include <cstdint>

#include "frugal/data/datasets/mnist.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = frugal::fuzz::input_file("input-idx3-ubyte").write(data, size);
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::datasets::read_idx(path));
  return 0;
}

// IDX contents behind a valid gzip stream: the input is compressed here, so the fuzzer explores
// the header and sizes while zlib always succeeds, and read_idx's limit on what a gzip'd file may
// claim (its size times deflate's largest ratio) is exercised. fuzz_idx covers broken streams.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "frugal/data/datasets/mnist.h"
#include "fuzz_support.h"

namespace {
std::vector<uint8_t> gzip(const uint8_t* data, size_t size) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::vector<uint8_t> out(deflateBound(&z, size) + 32);
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = static_cast<uInt>(size);
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> gz = gzip(data, size);
  const std::string& path =
      frugal::fuzz::input_file("input-idx3-ubyte.gz").write(gz.data(), gz.size());
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::datasets::read_idx(path));
  return 0;
}

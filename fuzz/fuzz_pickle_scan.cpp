// The pickle check frugal runs on a checkpoint's pickles before LibTorch's unpickler reads them
// (src/io/pickle_scan.h), on raw bytes: it must return, never read past the input. Seeds: the
// data.pkl files of fuzz_torch_pickle.
#include <cstddef>
#include <cstdint>

#include "io/pickle_scan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)frugal::detail::pickle_bounds_problem(reinterpret_cast<const char*>(data), size);
  return 0;
}

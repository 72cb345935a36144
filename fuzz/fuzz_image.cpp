// Image files through frugal's decoder (frugal::decode_image, in memory), to RGB and to gray.
// Built twice, as fuzz_jpeg and fuzz_png: the same code on different seed corpora and
// dictionaries (fuzz/CMakeLists.txt).
#include <cstddef>
#include <cstdint>

#include "frugal/data/image.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // 4 Mpx, not PIL's 179 Mpx: an image of legitimate size decodes in ~0.1 s per megapixel under
  // ASan and coverage, and libFuzzer's -timeout=1 is for hangs, not for big pictures. The limit's
  // own check runs on every input whose header claims more.
  static const bool capped = (frugal::set_max_image_pixels(int64_t{1} << 22), true);
  (void)capped;
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(
      frugal::decode_image(data, size, frugal::ColorMode::kRGB, "fuzz-input"));
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(
      frugal::decode_image(data, size, frugal::ColorMode::kGray, "fuzz-input"));
  return 0;
}

// Image list files (CSV `path,label`, RFC 4180 quoting) through frugal::read_image_list.
#include <cstddef>
#include <cstdint>

#include "frugal/data/image_folder.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = frugal::fuzz::input_file("list.csv").write(data, size);
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::read_image_list(path, "/images"));
  return 0;
}

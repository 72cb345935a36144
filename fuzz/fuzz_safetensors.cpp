// .safetensors files through frugal::read_safetensors (header length, JSON header, offsets).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "frugal/io/weights.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = frugal::fuzz::input_file("input.safetensors").write(data, size);
  std::map<std::string, std::string> metadata;
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::read_safetensors(path, &metadata));
  return 0;
}

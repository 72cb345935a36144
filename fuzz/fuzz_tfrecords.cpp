// TFRecord files (TensorBoard event files) through frugal::detail::read_tfrecords: lengths,
// masked CRC-32C of the length and of the data, a record cut short at the end.
#include <cstddef>
#include <cstdint>

#include "frugal/loggers/tensorboard.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path =
      frugal::fuzz::input_file("events.out.tfevents.0.fuzz").write(data, size);
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::detail::read_tfrecords(path));
  return 0;
}

// Python's torch.save(model.state_dict()) zip files through frugal::read_torch_state_dict: the
// archive (LibTorch's PyTorchStreamReader) and frugal's own pickle reader. fuzz_torch_pickle
// reaches the pickle reader more directly.
#include <cstddef>
#include <cstdint>

#include "frugal/io/weights.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = frugal::fuzz::input_file("input.pt").write(data, size);
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::read_torch_state_dict(path));
  return 0;
}

// frugal's pickle reader (src/io/torch_pickle.cpp) on its own: the input is data.pkl, put into a
// well-formed torch.save archive together with two storages (data/0: 16 bytes, data/1: 24 bytes)
// and read with frugal::read_torch_state_dict. The seeds are the data.pkl of real torch.save
// files (fuzz/make_seeds.py).
#include <cstddef>
#include <cstdint>
#include <string>

#include "frugal/io/weights.h"
#include "fuzz_support.h"
#include "torch_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string archive = frugal::fuzz::torch_save_archive(data, size);
  const std::string& path =
      frugal::fuzz::input_file("input.pt")
          .write(reinterpret_cast<const uint8_t*>(archive.data()), archive.size());
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::read_torch_state_dict(path));
  return 0;
}

// frugal's pickle reader (src/io/torch_pickle.cpp) on its own: the input is data.pkl, put into a
// well-formed torch.save archive together with two storages (data/0: 16 bytes, data/1: 24 bytes)
// and read with frugal::read_torch_state_dict. The seeds are the data.pkl of real torch.save
// files (fuzz/make_seeds.py).
#include <caffe2/serialize/inline_container.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "frugal/io/weights.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string archive;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t n) {
      archive.append(static_cast<const char*>(bytes), n);
      return n;
    });
    writer.writeRecord("data.pkl", data, size);
    writer.writeRecord("byteorder", "little", 6);
    const std::string storage0(16, '\x01'), storage1(24, '\x02');
    writer.writeRecord("data/0", storage0.data(), storage0.size());
    writer.writeRecord("data/1", storage1.data(), storage1.size());
    writer.writeEndOfFile();
  }
  const std::string& path =
      frugal::fuzz::input_file("input.pt")
          .write(reinterpret_cast<const uint8_t*>(archive.data()), archive.size());
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::read_torch_state_dict(path));
  return 0;
}

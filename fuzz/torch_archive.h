// A torch.save archive around a given data.pkl, with the byte order and two storages (data/0:
// 16 bytes, data/1: 24 bytes): what fuzz_torch_pickle feeds read_torch_state_dict, and how
// tests/io/test_fuzz_regressions.cpp replays its findings.
#pragma once
#include <caffe2/serialize/inline_container.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace frugal::fuzz {

inline std::string torch_save_archive(const void* pickle, size_t size) {
  std::string archive;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t n) {
    archive.append(static_cast<const char*>(bytes), n);
    return n;
  });
  writer.writeRecord("data.pkl", pickle, size);
  writer.writeRecord("byteorder", "little", 6);
  const std::string storage0(16, '\x01'), storage1(24, '\x02');
  writer.writeRecord("data/0", storage0.data(), storage0.size());
  writer.writeRecord("data/1", storage1.data(), storage1.size());
  writer.writeEndOfFile();
  return archive;
}

}  // namespace frugal::fuzz

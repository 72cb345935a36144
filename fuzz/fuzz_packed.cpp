// Packed image caches (frugal::PackedFile, from memory) opened and every sample read, to RGB and
// to gray. Each input runs twice: as it is, and with its checksums recomputed (the trailer's, the
// table's, the names' and each in-bounds sample's), so that mutations reach the structural
// checks and the decoders behind the CRC-32s instead of stopping at the first checksum.
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "frugal/data/packed.h"
#include "fuzz_support.h"

namespace {

constexpr size_t kPage = 4096, kTrailer = 128, kEntry = 40;

uint64_t u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

void set_crc(uint8_t* at, const uint8_t* data, size_t size) {
  const uint32_t crc = static_cast<uint32_t>(crc32(0L, data, static_cast<uInt>(size)));
  std::memcpy(at, &crc, 4);
}

// The layout is in src/data/packed.cpp, Note [Packed cache layout].
std::vector<uint8_t> with_checksums(std::vector<uint8_t> b) {
  if (b.size() < kPage + kTrailer) return b;
  uint8_t* t = b.data() + b.size() - kTrailer;
  const uint64_t n = b.size();
  const uint64_t table = u64(t + 40), table_size = u64(t + 48);
  const uint64_t strings = u64(t + 56), strings_size = u64(t + 64);
  if (table <= n && table_size <= n - table && table_size < (1u << 30)) {
    for (uint64_t e = table; e + kEntry <= table + table_size; e += kEntry) {
      const uint64_t off = u64(b.data() + e), size = u64(b.data() + e + 8);
      if (off <= n && size <= n - off && size < (1u << 30)) {
        set_crc(b.data() + e + 32, b.data() + off, size);
      }
    }
    set_crc(t + 72, b.data() + table, table_size);
  }
  if (strings <= n && strings_size <= n - strings && strings_size < (1u << 30)) {
    set_crc(t + 76, b.data() + strings, strings_size);
  }
  set_crc(t + 124, t, 124);
  return b;
}

void read_all(std::vector<uint8_t> bytes) {
  const auto cache = frugal::PackedFile::from_bytes(std::move(bytes), "fuzz-input");
  const int64_t n = std::min<int64_t>(cache->size(), 16);
  for (int64_t i = 0; i < n; ++i) {
    FRUGAL_FUZZ_EXPECT_ERROR_ONLY(cache->read(i, frugal::ColorMode::kRGB));
    FRUGAL_FUZZ_EXPECT_ERROR_ONLY(cache->read(i, frugal::ColorMode::kGray));
  }
  (void)cache->samples();
  (void)cache->mean_sample_bytes();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // As fuzz_image: a 4 Mpx cap keeps legitimate decodes fast under ASan.
  static const bool capped = (frugal::set_max_image_pixels(int64_t{1} << 22), true);
  (void)capped;
  const std::vector<uint8_t> input(data, data + size);
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(read_all(input));
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(read_all(with_checksums(input)));
  return 0;
}

// A check of a pickle's length fields before LibTorch's unpickler reads it: that unpickler
// reserves what a length field claims before it reads the bytes (a damaged BINUNICODE made it
// allocate 788 MB for a 27 KB checkpoint; fuzz/fuzz_checkpoint), so frugal refuses a pickle whose
// lengths run past its end first.
#pragma once

#include <cstddef>
#include <string>

namespace frugal::detail {

/// Walks the opcodes of `data` (pickle protocols 0-5) up to STOP. Returns "" when every length
/// and argument fits in the bytes that follow it, else what is wrong and where.
std::string pickle_length_problem(const char* data, size_t size);

}  // namespace frugal::detail

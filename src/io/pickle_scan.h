// A check of a pickle's length fields and memo indices before LibTorch's unpickler reads it: that
// unpickler reserves what a length field claims before it reads the bytes, and sizes its memo
// table by the largest index it is given (a damaged BINUNICODE made it allocate 788 MB for a
// 27 KB checkpoint, a LONG_BINPUT 27 GB; fuzz/fuzz_checkpoint), so frugal refuses such a pickle
// first.
#pragma once

#include <cstddef>
#include <string>

namespace frugal::detail {

/// Walks the opcodes of `data` (pickle protocols 0-5) up to STOP. Returns "" when every length
/// and argument fits in the bytes that follow it and every binary memo index (BINPUT, BINGET
/// and their LONG forms) stays within the values memoized so far, else what is wrong and where.
std::string pickle_bounds_problem(const char* data, size_t size);

}  // namespace frugal::detail

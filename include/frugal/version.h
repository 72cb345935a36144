#pragma once

namespace frugal {
/// The library's version, e.g. "0.1.0" (saved in checkpoints).
const char* version();
}  // namespace frugal

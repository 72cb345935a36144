// The numeric precision of training, named as Lightning names it. The precision plugin
// (src/precision/plugin.h) is the only place that knows what each one does.
#pragma once

#include <string>

namespace frugal {

/// Numeric precision of training. Strings as Lightning: "32", "16-mixed", "bf16-mixed".
enum class Precision { k32, k16Mixed, kBf16Mixed };
const char* to_string(Precision precision);
/// Parses "32", "32-true", "16-mixed", "bf16-mixed" (and "16", "bf16"); throws naming the value.
Precision parse_precision(const std::string& text);

}  // namespace frugal

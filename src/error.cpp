#include "frugal/error.h"

namespace frugal::detail {

void throw_error(const std::string& message) { throw Error(message); }

}  // namespace frugal::detail

#include "frugal/version.h"

namespace frugal {

const char* version() { return FRUGAL_VERSION_STRING; }

}  // namespace frugal

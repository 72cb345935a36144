#include "frugal/callback.h"

#include <c10/util/Type.h>

#include <typeinfo>

namespace frugal {

const char* to_string(TrainerFn fn) {
  switch (fn) {
    case TrainerFn::kFit:
      return "fit";
    case TrainerFn::kValidate:
      return "validate";
    case TrainerFn::kTest:
      return "test";
  }
  return "?";
}

std::string Callback::state_key() const {
  // The demangled class name; callbacks that can appear twice override this with their options.
  return c10::demangle(typeid(*this).name());
}

}  // namespace frugal

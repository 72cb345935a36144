// StateDict: the named state a piece of frugal (callback, scheduler, loop, scaler) saves in a
// checkpoint and restores from it. Values are IValues: numbers, strings, tensors, lists.
#pragma once

#include <ATen/core/ivalue.h>

#include <map>
#include <string>

namespace frugal {

using StateDict = std::map<std::string, c10::IValue>;

}  // namespace frugal

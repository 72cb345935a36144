// Fingerprints of model state, to compare runs bit for bit.
#pragma once

#include <string>

namespace torch::nn {
class Module;
}

namespace frugal {

/// SHA-256 (hex) of all parameters' bytes, in `named_parameters()` order, copied to CPU.
std::string params_sha256(const torch::nn::Module& module);

}  // namespace frugal

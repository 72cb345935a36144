// Weights files for unstructured-pruned models: a tensor that is mostly zeros is stored as a bit
// mask and its non-zero values, in an ordinary safetensors file. read_safetensors /
// load_state_dict (frugal/io/weights.h) give the dense tensors back transparently.
//
//   frugal::save_sparse_safetensors(*model, "pruned.safetensors");   // after ModelPruning
//   frugal::load_state_dict(*model, "pruned.safetensors");           // dense again
//
// Layout (docs/deploy.md, "Sparse storage"): a stored tensor `name` becomes `name.__mask` (U8,
// ceil(numel / 8) bytes, bit i of the C-order flattened tensor at byte i / 8, bit i % 8: numpy's
// packbits(bitorder="little")) and `name.__values` (the non-zeros in C order, the tensor's dtype);
// the metadata key `__frugal_sparse__` holds {"version": 1, "tensors": {name: {"shape": [...],
// "dtype": "F32"}}}. Python reads it with safetensors and numpy:
//   dense = np.zeros(n, dtype); dense[np.unpackbits(mask, bitorder="little")[:n] == 1] = values
#pragma once

#include <map>
#include <string>

#include "frugal/io/weights.h"

namespace torch::nn {
class Module;
}

namespace frugal {

/// Writes `tensors` as a safetensors file (atomically), storing every floating-point tensor with
/// at least `min_sparsity` of exact zeros (and fewer bytes that way) as mask + values. Throws
/// naming `min_sparsity` outside [0, 1] or a name that ends in .__mask / .__values.
void write_sparse_safetensors(const TensorMap& tensors, const std::string& path,
                              double min_sparsity = 0.5,
                              const std::map<std::string, std::string>& metadata = {});

/// The module's parameters and buffers, as write_sparse_safetensors stores them.
void save_sparse_safetensors(const torch::nn::Module& module, const std::string& path,
                             double min_sparsity = 0.5,
                             const std::map<std::string, std::string>& metadata = {});

}  // namespace frugal

// Model weights in the formats Python users have: torch.save(model.state_dict()) zip files and
// .safetensors files. See docs/weights.md.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace frugal {

/// Tensors by name, in name order.
using TensorMap = std::map<std::string, at::Tensor>;

struct LoadStateDictOptions {
  /// Strict: any missing key, unexpected key or shape mismatch is an error listing them all, and
  /// the module is left untouched. Non-strict: matching entries are copied, the rest returned.
  bool strict = true;
  /// Allow a file's floating-point dtype to differ from the module's (fp16/bf16 weights into an
  /// fp32 module, ...): values are converted with Tensor::to. Off: a dtype mismatch is an error.
  bool allow_dtype_conversion = true;
};

struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     // in the module, not in the file
  std::vector<std::string> unexpected_keys;  // in the file, not in the module
  std::vector<std::string> mismatched_keys;  // "name: file [a, b] vs module [c, d]"
  std::vector<std::string> loaded_keys;
};

/// Reads a safetensors file (https://github.com/huggingface/safetensors): u64 little-endian
/// header length, JSON header {name: {dtype, shape, data_offsets}}, optional "__metadata__",
/// then the data. Rejects a header over 100,000,000 bytes, offsets that overlap, leave gaps or do
/// not cover the data exactly, unknown dtypes, shapes that disagree with the byte counts.
/// `metadata` (if given) receives __metadata__.
TensorMap read_safetensors(const std::string& path,
                           std::map<std::string, std::string>* metadata = nullptr);
/// Writes tensors (made contiguous, on the CPU) as a safetensors file, atomically, the way the
/// Python package does: entries ordered by dtype alignment (descending) then name, header padded
/// with spaces to a multiple of 8.
void write_safetensors(const TensorMap& tensors, const std::string& path,
                       const std::map<std::string, std::string>& metadata = {});

/// Reads a state dict written by Python's torch.save(model.state_dict(), path) (zip format,
/// PyTorch >= 1.6): the pickle is parsed here (OrderedDict of tensors, nested _metadata ignored).
/// A legacy (pre-1.6) file or a pickled whole model gives an error saying how to re-save it.
TensorMap read_torch_state_dict(const std::string& path);

/// Reads `path` (.safetensors by its extension or header, otherwise a torch.save zip file) into
/// the module's parameters and buffers by state_dict name.
LoadStateDictResult load_state_dict(torch::nn::Module& module, const std::string& path,
                                    const LoadStateDictOptions& options = {});
/// The same from tensors already in memory.
LoadStateDictResult load_state_dict(torch::nn::Module& module, const TensorMap& tensors,
                                    const LoadStateDictOptions& options = {});

/// The module's parameters and buffers by state_dict name (Python's model.state_dict() keys).
TensorMap module_state(const torch::nn::Module& module);

/// Writes the module's parameters and buffers as a safetensors file (readable by the Python
/// `safetensors` package: safetensors.torch.load_file).
void save_safetensors(const torch::nn::Module& module, const std::string& path,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace frugal

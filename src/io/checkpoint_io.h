// Private checkpoint plumbing shared by the Trainer and load_weights.
#pragma once

#include <frugal/state_dict.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace frugal::detail {

/// Version of the checkpoint layout (see checkpoint.cpp).
constexpr int64_t kFormat = 1;

/// A checkpoint read and checked for its frame; nothing applied yet.
struct LoadedCheckpoint {
  std::string path;
  torch::serialize::InputArchive root;
  torch::serialize::InputArchive model;
  bool weights_only = false;
  StateDict state;  // trainer_state (full checkpoints)
};

/// Opens `path` (tensors mapped to `device`); throws a clear error for a missing, truncated,
/// corrupt or foreign file. With `verify`, the file's checksum is checked first (Note
/// [Checkpoint checksums]); a file without one loads with a warning.
LoadedCheckpoint open_checkpoint(const std::string& path, c10::Device device, bool verify = true);
/// Pairs (model tensor, checkpoint tensor) after checking every name and shape; throws naming the
/// first mismatch. Changes nothing.
std::vector<std::pair<at::Tensor, at::Tensor>> plan_weights(torch::nn::Module& module,
                                                            LoadedCheckpoint& ckpt);
void apply_weights(const std::vector<std::pair<at::Tensor, at::Tensor>>& plan);
/// Writes parameters and buffers in Module::save's layout, on CPU.
void save_module(const torch::nn::Module& module, torch::serialize::OutputArchive& archive);

c10::IValue to_ivalue(const StateDict& state);
StateDict from_ivalue(const c10::IValue& value);
/// A StateDict as pickled bytes in a uint8 tensor, and back.
at::Tensor pack(const StateDict& state);
StateDict unpack(const at::Tensor& packed);

}  // namespace frugal::detail

// Dynamic int8 quantization of Linear layers (weights int8 ahead of time, activations quantized
// per batch at run time), through LibTorch's quantized ops (quantized::linear_prepack and
// quantized::linear_dynamic) and whichever quantization engine the LibTorch build has: Debian's
// 1.13 has onednn and qnnpack (no FBGEMM), PyPI's 2.x x86/fbgemm and onednn.
//
//   auto int8 = frugal::quantize_dynamic(mlp);   // a new Sequential; `mlp` is unchanged
//   at::Tensor logits = int8->forward(x);
//
// docs/deploy.md has the measured speed, size and accuracy.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace torch::nn {
class LinearImpl;
}

namespace frugal {

struct DynamicQuantizeOptions {
  /// The quantization engine ("onednn", "qnnpack", "fbgemm", "x86"); empty picks the first the
  /// build supports of x86, fbgemm, onednn, qnnpack (the fast ones on x86-64 first).
  std::string engine;
  /// One weight scale per output row (true) or one for the whole matrix.
  bool per_channel = true;
  /// Quantize activations to 7 bits (what fbgemm/x86 need on CPUs without VNNI to avoid
  /// overflow); unset: true for fbgemm and x86, false for onednn and qnnpack.
  std::optional<bool> reduce_range;
};

/// The engines this LibTorch build supports, lower case (e.g. {"qnnpack", "onednn"}).
std::vector<std::string> quantization_engines();

/// A Linear layer with int8 weights (symmetric, zero point 0) and float bias, run through
/// quantized::linear_dynamic. Its buffers (weight_int8, weight_scale, bias) are what a checkpoint
/// stores; after loading them call repack().
class DynamicQuantizedLinearImpl : public torch::nn::Module {
 public:
  DynamicQuantizedLinearImpl(const torch::nn::LinearImpl& linear,
                             const DynamicQuantizeOptions& options = {});
  /// float32 input of shape (..., in_features) -> (..., out_features)
  at::Tensor forward(const at::Tensor& input);
  /// Rebuilds the engine's packed weight from the buffers (after loading them).
  void repack();
  /// The weight as float (int8 * scale): what the layer computes with.
  at::Tensor dequantized_weight() const;
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  const std::string& engine() const { return engine_; }

  at::Tensor weight_int8;   // out x in, int8
  at::Tensor weight_scale;  // out (per channel) or 1, float64
  at::Tensor bias;          // out, float32 (undefined when the Linear had none)

 private:
  int64_t in_features_;
  int64_t out_features_;
  std::string engine_;
  bool reduce_range_;
  c10::IValue packed_;
};
TORCH_MODULE(DynamicQuantizedLinear);

/// A new Sequential in which every direct Linear child is replaced by a DynamicQuantizedLinear
/// under the same name (so state_dict keys keep their prefixes); every other child is shared with
/// `model`, not copied. Linear layers held by other modules (members of a custom block, a
/// Sequential subclass) stay float32: they are counted in `float_linear_left` when given. Throws
/// frugal::Error naming an unknown engine.
torch::nn::Sequential quantize_dynamic(const torch::nn::Sequential& model,
                                       const DynamicQuantizeOptions& options = {},
                                       int64_t* float_linear_left = nullptr);

}  // namespace frugal

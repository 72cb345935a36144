// Int8 inference for whole models, built from the graph export_onnx walks (frugal/deploy/onnx.h):
// the zoo, the small models, any Sequential of the layers the exporter supports, and any module
// that implements deploy::OnnxExportable. The graph (Batch-Norm folded into convolutions) runs
// through LibTorch's quantized CPU operators on the build's quantization engine.
//
//   // Post-training static int8: calibrate activation ranges on a few batches.
//   std::vector<at::Tensor> calibration = {batch0, batch1, batch2};
//   frugal::QuantizedModel int8 = frugal::quantize_static(*model, calibration);
//   at::Tensor logits = int8->forward(images);
//   int8->save("model.int8.safetensors");   // frugal::load_quantized_model() reads it back
//
//   // Dynamic int8 of every Linear (the head of a CNN), everything else float.
//   auto dyn = frugal::quantize_dynamic(*model, example_input);
//
// Static mode: inputs are quantized to uint8 with the range seen in calibration (min/max), weights
// to int8 (symmetric, per output channel unless the engine is qnnpack); Conv, Linear, Add and Mul
// run as quantized::conv2d / linear / add / mul (a following ReLU fused), ReLU / ReLU6 / pooling /
// flatten / Sigmoid / HardSwish / HardSigmoid on the int8 tensors; any other operator (GELU's
// pieces, Tanh, Softmax, a BatchNorm that follows no convolution, ...) runs in float between a
// dequantize and a quantize, so every model the exporter accepts runs. docs/deploy.md has the
// measured size, latency and accuracy per model.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace frugal {

struct StaticQuantizeOptions {
  /// The quantization engine ("x86", "fbgemm", "onednn", "qnnpack"); empty picks the first the
  /// build supports of x86, fbgemm, onednn, qnnpack.
  std::string engine;
  /// One weight scale per output channel; unset: true, except on qnnpack (per tensor).
  std::optional<bool> per_channel;
  /// Quantize activations to 7 bits (what fbgemm/x86 need on CPUs without VNNI to avoid
  /// overflow); unset: true for fbgemm and x86, false for onednn and qnnpack.
  std::optional<bool> reduce_range;
};

/// An int8 model: a captured graph and its packed weights. forward() takes float32 N x ... inputs
/// (any batch size) on the CPU and returns float32 outputs. Not trainable.
class QuantizedModelImpl : public torch::nn::Module {
 public:
  struct Graph;  // private
  explicit QuantizedModelImpl(std::shared_ptr<Graph> graph);
  ~QuantizedModelImpl() override;

  at::Tensor forward(const at::Tensor& input);

  /// Writes the model as one safetensors file (int8 weights, scales, float biases; the graph and
  /// the activation ranges in its metadata), atomically.
  void save(const std::string& path) const;

  /// "static" or "dynamic".
  const std::string& mode() const;
  const std::string& engine() const;
  /// Operators that run on int8 tensors / in float (dequantize-compute-quantize or float mode).
  int64_t int8_ops() const;
  int64_t float_ops() const;
  /// Bytes of the weights as stored (int8 weights, scales, zero points, biases, constants).
  int64_t weight_bytes() const;
  /// One line per operator: "Conv layer1.0.conv1 int8 (fused Relu)", "Erf float", ...
  std::string summary() const;

 private:
  std::shared_ptr<Graph> graph_;
};
TORCH_MODULE(QuantizedModel);

/// Post-training static int8: walks `model` like export_onnx (eval mode, no gradients; its
/// training flags are restored) on the first calibration batch, runs every calibration batch
/// through the float graph to record each value's range, and returns the int8 model. `model` is
/// not changed. Throws frugal::Error naming the option, the calibration batch whose shape differs
/// from the first one's, or (from the walk) the module path and type it cannot handle.
QuantizedModel quantize_static(torch::nn::Module& model, const std::vector<at::Tensor>& calibration,
                               const StaticQuantizeOptions& options = {});

/// Dynamic int8 of every Linear (Gemm) of `model`'s graph through quantized::linear_dynamic, the
/// rest in float (what torch.ao.quantization.quantize_dynamic does for nn.Linear), for any model
/// the exporter walks, where frugal::quantize_dynamic(Sequential) only reaches direct children.
QuantizedModel quantize_dynamic_graph(torch::nn::Module& model, const at::Tensor& example_input,
                                      const StaticQuantizeOptions& options = {});

/// Reads a file written by QuantizedModelImpl::save (and re-packs the weights for this build's
/// engine, which must be the one it was saved with, or `engine` when given).
QuantizedModel load_quantized_model(const std::string& path, const std::string& engine = "");

}  // namespace frugal

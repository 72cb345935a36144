// ONNX export from frugal's own module structure (LibTorch's C++ API has no ONNX exporter,
// pytorch#17869): the exporter walks the module tree, writes an ONNX ModelProto (operator set 17)
// with ONNX's onnx.proto and protobuf, and checks every step against LibTorch's own output shapes
// by running the example input through the modules as it goes.
//
// Supported out of the box (eval-mode semantics): Sequential (and subclasses of SequentialImpl),
// Conv2d (stride, padding incl. "same"/"valid", dilation, groups, bias; zero padding mode),
// BatchNorm1d/2d (folded into a directly preceding Conv2d, else a BatchNormalization op), Linear
// (Gemm, or MatMul + Add on inputs of rank > 2), ReLU, ReLU6 (Clip), LeakyReLU, SiLU (x *
// Sigmoid(x)), Sigmoid, Tanh, GELU (erf or tanh form: opset 17 has no Gelu op), Softmax,
// LogSoftmax, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d / AdaptiveMaxPool2d (output 1 -> Global*Pool;
// other sizes only when they divide the input evenly), Flatten, Identity, Dropout / Dropout2d
// (identity), and frugal's small models (include/frugal/models/small.h) with their residual Add.
//
// Anything else is refused with an error naming the module's path (e.g. `features.3.block.1`) and
// type, unless the module implements `frugal::deploy::OnnxExportable` and emits its own nodes
// through `OnnxGraph` (residual blocks, squeeze-excitation Mul, Hardswish, stochastic depth as
// identity, ...). docs/deploy.md has an example.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace torch::nn {
class Conv2dImpl;
class BatchNorm2dImpl;
class LinearImpl;
}  // namespace torch::nn

namespace frugal {

struct OnnxExportOptions {
  /// The ONNX operator set written into the model. Only 17 is supported: the operator mapping
  /// (Clip with tensor bounds, HardSwish, Gelu written out with Erf) is the one of opset 17.
  int64_t opset = 17;
  /// Dimension 0 of the input and output is the symbolic "batch" dimension, so the file runs at
  /// any batch size; false writes the example input's batch size.
  bool dynamic_batch = true;
  /// Fold a BatchNorm that directly follows a Conv2d into the convolution's weight and bias.
  bool fold_batch_norm = true;
  std::string input_name = "input";
  std::string output_name = "output";
  std::string graph_name = "frugal";
};

/// True when this build of frugal can write ONNX files (it was built with protobuf and ONNX's
/// onnx.proto, see docs/deploy.md); without them export_onnx throws a frugal::Error saying so.
bool onnx_export_available();

/// Exports `module` (in eval mode, without gradients; its training flag is restored afterwards)
/// for inputs shaped like `example_input` (a float32 tensor, batch first) to an ONNX file at
/// `path`, written atomically. Throws frugal::Error naming the module path and type of the first
/// module it cannot export, or the option / input that is wrong; nothing is written then.
void export_onnx(torch::nn::Module& module, const at::Tensor& example_input,
                 const std::string& path, const OnnxExportOptions& options = {});
/// The same, returning the serialized ModelProto instead of writing a file.
std::string export_onnx_to_string(torch::nn::Module& module, const at::Tensor& example_input,
                                  const OnnxExportOptions& options = {});

namespace deploy {

/// A value of the graph being built: its ONNX name and the tensor LibTorch computes for it on the
/// example input (which gives shapes to the steps that need them, e.g. adaptive pooling).
struct OnnxValue {
  std::string name;
  at::Tensor example;
};

/// A node attribute: int, float, ints, floats or string.
struct OnnxAttribute {
  std::string name;
  std::variant<int64_t, float, std::vector<int64_t>, std::vector<float>, std::string> value;
};

/// The graph under construction, handed to OnnxExportable modules. Helpers return the output
/// value with its example computed by LibTorch.
class OnnxGraph {
 public:
  ~OnnxGraph();
  OnnxGraph(const OnnxGraph&) = delete;
  OnnxGraph& operator=(const OnnxGraph&) = delete;

  const OnnxExportOptions& options() const;

  /// Exports a child module (through OnnxExportable or the built-in walker); `path` names it in
  /// errors and in the ONNX node and initializer names.
  OnnxValue module(torch::nn::Module& child, const std::string& path, const OnnxValue& input);

  /// A node of the default ONNX domain with one output; returns the output's (unique) name.
  /// `example` is what LibTorch computes for that output (the caller computes it).
  OnnxValue node(const std::string& op_type, const std::vector<std::string>& inputs,
                 at::Tensor example, const std::vector<OnnxAttribute>& attributes = {},
                 const std::string& path = "");
  /// A constant (float32 or int64, copied to the CPU); returns its unique name.
  std::string initializer(const std::string& name, const at::Tensor& value);

  /// Conv2d, with an optional BatchNorm2d folded into it (its running statistics, eval mode).
  OnnxValue conv2d(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl* batch_norm,
                   const std::string& path, const OnnxValue& input);
  /// Conv2d then BatchNorm2d: folded into one Conv when options().fold_batch_norm (the
  /// default), else a Conv and a BatchNormalization node; the paths name each in the graph.
  OnnxValue conv_bn(torch::nn::Conv2dImpl& conv, torch::nn::BatchNorm2dImpl& batch_norm,
                    const std::string& conv_path, const std::string& batch_norm_path,
                    const OnnxValue& input);
  OnnxValue linear(torch::nn::LinearImpl& linear, const std::string& path, const OnnxValue& input);
  OnnxValue add(const OnnxValue& a, const OnnxValue& b, const std::string& path = "");
  OnnxValue mul(const OnnxValue& a, const OnnxValue& b, const std::string& path = "");
  OnnxValue relu(const OnnxValue& x, const std::string& path = "");
  OnnxValue sigmoid(const OnnxValue& x, const std::string& path = "");
  /// x * sigmoid(x)
  OnnxValue silu(const OnnxValue& x, const std::string& path = "");
  /// HardSwish: x * relu6(x + 3) / 6
  OnnxValue hardswish(const OnnxValue& x, const std::string& path = "");
  /// HardSigmoid with alpha 1/6, beta 1/2: relu6(x + 3) / 6 (PyTorch's definition)
  OnnxValue hardsigmoid(const OnnxValue& x, const std::string& path = "");
  /// N x C x H x W -> N x C x 1 x 1
  OnnxValue global_average_pool(const OnnxValue& x, const std::string& path = "");

 private:
  friend struct OnnxExporter;
  OnnxValue walk(torch::nn::Module& child, const std::string& path, const OnnxValue& input);
  struct Impl;
  explicit OnnxGraph(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// A module that writes its own ONNX nodes (the walker calls this before looking at its type).
/// Implement it next to torch::nn::Module, e.g.
///   struct BlockImpl : torch::nn::Module, frugal::deploy::OnnxExportable { ... };
/// and return the output value; `path` is the module's own path, children are at path + ".name".
class OnnxExportable {
 public:
  virtual ~OnnxExportable() = default;
  virtual OnnxValue export_onnx(OnnxGraph& graph, const std::string& path,
                                const OnnxValue& input) = 0;
};

}  // namespace deploy
}  // namespace frugal

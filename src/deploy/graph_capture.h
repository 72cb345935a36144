// The graph export_onnx walks, captured in memory (private). OnnxGraph records nodes and constants
// here; export_onnx writes them to an ONNX ModelProto, and the int8 runtime of quantized_model.cpp
// runs them with LibTorch's quantized operators. The walk needs no protobuf, so it is always built.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "frugal/deploy/onnx.h"

namespace torch::nn {
class Module;
}

namespace frugal::deploy {

/// One operator of the default ONNX domain (opset 17) with one output.
struct GraphNode {
  std::string name;
  std::string op_type;
  std::vector<std::string> inputs;
  std::string output;
  std::vector<OnnxAttribute> attributes;
};

struct CapturedGraph {
  std::string input;             // the graph input's name (options.input_name)
  std::string output;            // the value the model returns
  std::vector<GraphNode> nodes;  // in execution order
  /// Constants by name (float32 or int64, on the CPU, owned: cloned from the module).
  std::map<std::string, at::Tensor> initializers;
  std::vector<std::string> initializer_order;  // the order they were added
  at::Tensor example_output;                   // what LibTorch computed for the example input
};

/// Walks `module` as export_onnx does (eval mode, no gradients, training flags restored) on
/// `example_input`, checking the options and the input as export_onnx does; `who` starts errors.
CapturedGraph capture_graph(torch::nn::Module& module, const at::Tensor& example_input,
                            const OnnxExportOptions& options, const char* who = "export_onnx");

/// An attribute of `node` by name, or nullptr.
const OnnxAttribute* find_attribute(const GraphNode& node, const std::string& name);

}  // namespace frugal::deploy

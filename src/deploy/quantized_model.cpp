// Int8 inference over the graph export_onnx walks. Note [Quantized graph]:
//
// capture_graph gives nodes in execution order (Conv with BatchNorm folded, Gemm, Relu, Add, ...)
// and float constants. Building a QuantizedModel:
//   1. every node becomes a Step over numbered value slots; each op has a float evaluator;
//   2. static mode: the float steps run over the calibration batches and record each slot's
//      min/max; uint8 affine parameters follow (range widened to include 0, 255 or 127 levels);
//   3. Conv / Gemm / Add / Mul whose inputs are not constants become int8 steps (a Relu that is
//      the only consumer of their output is fused into them and takes its slot); ops that work on
//      quantized tensors (Relu, Clip, pooling, Flatten, Reshape, Sigmoid, HardSwish,
//      HardSigmoid) run int8 when their input is int8; the rest run in float;
//   4. Conv and Gemm weights are quantized to int8 (symmetric) and packed for the engine.
// Running: a step that needs an int8 input quantizes a float value with that slot's parameters; a
// float step dequantizes an int8 input. Values are freed after their last use. The stored form
// (save/load) is the nodes, the slot parameters and the int8 weights, so a loaded model packs the
// same int8 weights and computes bit for bit what the saved one did.
#include "frugal/deploy/quantized_model.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "deploy/graph_capture.h"
#include "deploy/qengine.h"
#include "frugal/error.h"
#include "frugal/io/weights.h"

namespace frugal {

namespace {

using deploy::CapturedGraph;
using deploy::GraphNode;
using deploy::OnnxAttribute;
using json = nlohmann::json;

constexpr const char* kMetadataKey = "frugal_int8";
constexpr int kFormatVersion = 1;

using detail::engine_name;
using detail::EngineScope;
using detail::pick_engine;
using detail::quantized_op;

c10::IValue call(const c10::OperatorHandle& op, torch::jit::Stack stack) {
  op.callBoxed(&stack);
  return std::move(stack.at(0));
}

// ---- attributes ----

int64_t attr_int(const GraphNode& n, const char* name, int64_t fallback) {
  const OnnxAttribute* a = deploy::find_attribute(n, name);
  if (a == nullptr) return fallback;
  const int64_t* v = std::get_if<int64_t>(&a->value);
  FRUGAL_CHECK(v != nullptr, "quantized model: attribute ", name, " of ", n.name, " is not an int");
  return *v;
}

float attr_float(const GraphNode& n, const char* name, float fallback) {
  const OnnxAttribute* a = deploy::find_attribute(n, name);
  if (a == nullptr) return fallback;
  const float* v = std::get_if<float>(&a->value);
  FRUGAL_CHECK(v != nullptr, "quantized model: attribute ", name, " of ", n.name,
               " is not a float");
  return *v;
}

std::vector<int64_t> attr_ints(const GraphNode& n, const char* name,
                               std::vector<int64_t> fallback) {
  const OnnxAttribute* a = deploy::find_attribute(n, name);
  if (a == nullptr) return fallback;
  const auto* v = std::get_if<std::vector<int64_t>>(&a->value);
  FRUGAL_CHECK(v != nullptr, "quantized model: attribute ", name, " of ", n.name,
               " is not a list of ints");
  return *v;
}

json attribute_to_json(const OnnxAttribute& a) {
  json j;
  j["name"] = a.name;
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t>) j["int"] = v;
        if constexpr (std::is_same_v<T, float>) j["float"] = v;
        if constexpr (std::is_same_v<T, std::vector<int64_t>>) j["ints"] = v;
        if constexpr (std::is_same_v<T, std::vector<float>>) j["floats"] = v;
        if constexpr (std::is_same_v<T, std::string>) j["string"] = v;
      },
      a.value);
  return j;
}

OnnxAttribute attribute_from_json(const json& j) {
  OnnxAttribute a;
  a.name = j.at("name").get<std::string>();
  if (j.contains("int")) {
    a.value = j["int"].get<int64_t>();
  } else if (j.contains("float")) {
    a.value = j["float"].get<float>();
  } else if (j.contains("ints")) {
    a.value = j["ints"].get<std::vector<int64_t>>();
  } else if (j.contains("floats")) {
    a.value = j["floats"].get<std::vector<float>>();
  } else {
    a.value = j.at("string").get<std::string>();
  }
  return a;
}

enum class Op {
  kConv,
  kGemm,
  kMatMul,
  kAdd,
  kMul,
  kDiv,
  kPow,
  kRelu,
  kClip,
  kLeakyRelu,
  kSigmoid,
  kTanh,
  kErf,
  kHardSwish,
  kHardSigmoid,
  kSoftmax,
  kLogSoftmax,
  kMaxPool,
  kAveragePool,
  kGlobalAveragePool,
  kGlobalMaxPool,
  kFlatten,
  kReshape,
  kBatchNormalization,
  kIdentity
};

/// The operators a captured graph may hold; false when `name` is none of them.
bool op_kind(const std::string& name, Op* kind) {
  static const std::pair<const char*, Op> ops[] = {{"Conv", Op::kConv},
                                                   {"Gemm", Op::kGemm},
                                                   {"MatMul", Op::kMatMul},
                                                   {"Add", Op::kAdd},
                                                   {"Mul", Op::kMul},
                                                   {"Div", Op::kDiv},
                                                   {"Pow", Op::kPow},
                                                   {"Relu", Op::kRelu},
                                                   {"Clip", Op::kClip},
                                                   {"LeakyRelu", Op::kLeakyRelu},
                                                   {"Sigmoid", Op::kSigmoid},
                                                   {"Tanh", Op::kTanh},
                                                   {"Erf", Op::kErf},
                                                   {"HardSwish", Op::kHardSwish},
                                                   {"HardSigmoid", Op::kHardSigmoid},
                                                   {"Softmax", Op::kSoftmax},
                                                   {"LogSoftmax", Op::kLogSoftmax},
                                                   {"MaxPool", Op::kMaxPool},
                                                   {"AveragePool", Op::kAveragePool},
                                                   {"GlobalAveragePool", Op::kGlobalAveragePool},
                                                   {"GlobalMaxPool", Op::kGlobalMaxPool},
                                                   {"Flatten", Op::kFlatten},
                                                   {"Reshape", Op::kReshape},
                                                   {"BatchNormalization", Op::kBatchNormalization},
                                                   {"Identity", Op::kIdentity}};
  for (const auto& [n, k] : ops) {
    if (name == n) {
      *kind = k;
      return true;
    }
  }
  return false;
}

/// Operators that run on quantized tensors as they come (their output keeps or fixes its own
/// quantization parameters).
bool passes_int8(Op op) {
  switch (op) {
    case Op::kRelu:
    case Op::kClip:
    case Op::kMaxPool:
    case Op::kAveragePool:
    case Op::kFlatten:
    case Op::kReshape:
    case Op::kGlobalAveragePool:
    case Op::kSigmoid:
    case Op::kHardSigmoid:
    case Op::kIdentity:
      return true;
    default:
      return false;
  }
}

/// uint8 affine parameters for the range [lo, hi] (widened to hold 0), PyTorch's observer formula.
std::pair<double, int64_t> affine_params(double lo, double hi, bool reduce_range) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  const int64_t qmax = reduce_range ? 127 : 255;
  double scale = (hi - lo) / static_cast<double>(qmax);
  scale = std::max(scale, static_cast<double>(std::numeric_limits<float>::epsilon()));
  int64_t zero_point = static_cast<int64_t>(std::nearbyint(-lo / scale));
  zero_point = std::clamp<int64_t>(zero_point, 0, qmax);
  return {scale, zero_point};
}

}  // namespace

// ---- the graph ----

struct QuantizedModelImpl::Graph {
  struct Step {
    GraphNode node;
    std::vector<int> in;  // slots; -1: a constant (node.inputs[i] names it)
    int out = -1;
    bool int8 = false;
    bool fused_relu = false;
    // Conv / Gemm with int8 weights (static: both; dynamic: Gemm)
    bool packed_weight = false;
    c10::IValue packed;
    // Resolved once (resolve()), so that a forward pass parses nothing and looks nothing up.
    Op op = Op::kIdentity;
    enum class Run { kFloat, kInt8, kDynamicGemm } run = Run::kFloat;
    std::vector<at::Tensor> constants;  // per input: the constant, or undefined (a value)
    std::vector<int64_t> kernel, strides, padding, dilations, shape;
    int64_t group = 1, axis = 1;
    bool ceil_mode = false, count_include_pad = false, asymmetric_pads = false;
    std::vector<int64_t> pad_nd;  // constant_pad_nd's argument when the pads are asymmetric
    double alpha = 0.01, epsilon = 1e-5, clip_lo = 0, clip_hi = 0;
  };

  std::string mode;  // "static" | "dynamic" | "float" (calibration only)
  std::string engine;
  bool per_channel = true;
  bool reduce_range = false;
  at::QEngine qengine = at::QEngine::NoQEngine;

  std::string input_name, output_name;
  std::vector<int64_t> example_shape;  // the input's shape (dimension 0 is any batch size)
  std::vector<std::string> slot_names;
  int input_slot = -1;
  int output_slot = -1;
  std::vector<Step> steps;
  std::vector<int> last_use;                    // per slot, the step index after which it is freed
  std::map<std::string, at::Tensor> constants;  // float constants (and float weights)
  // int8 weights by node name: int8 values, scales (double), zero points (long)
  std::map<std::string, at::Tensor> weight_int8, weight_scale;
  std::vector<double> scale;  // per slot (static)
  std::vector<int64_t> zero_point;

  at::Tensor constant(const Step& s, size_t i) const {
    auto it = constants.find(s.node.inputs.at(i));
    FRUGAL_CHECK(it != constants.end(), "quantized model: ", s.node.name, " needs constant '",
                 s.node.inputs.at(i), "', which is missing");
    return it->second;
  }

  // Builds steps and slots from nodes (no weights touched).
  void build_steps(const std::vector<GraphNode>& nodes) {
    std::map<std::string, int> slot_of;
    auto new_slot = [&](const std::string& name) {
      const int id = static_cast<int>(slot_names.size());
      slot_names.push_back(name);
      slot_of[name] = id;
      return id;
    };
    input_slot = new_slot(input_name);
    for (const auto& n : nodes) {
      Step s;
      FRUGAL_CHECK(op_kind(n.op_type, &s.op), "quantized model: operator ", n.op_type, " (", n.name,
                   ") has no int8 or float implementation here");
      s.node = n;
      for (const auto& name : n.inputs) {
        auto it = slot_of.find(name);
        if (it != slot_of.end()) {
          s.in.push_back(it->second);
        } else {
          FRUGAL_CHECK(constants.count(name) || weight_int8.count(n.name),
                       "quantized model: ", n.name, " reads '", name,
                       "', which is neither a value nor a constant");
          s.in.push_back(-1);
        }
      }
      s.out = new_slot(n.output);
      steps.push_back(std::move(s));
    }
    auto it = slot_of.find(output_name);
    FRUGAL_CHECK(it != slot_of.end(), "quantized model: the output '", output_name,
                 "' is not computed by the graph");
    output_slot = it->second;
    compute_last_use();
  }

  void compute_last_use() {
    last_use.assign(slot_names.size(), -1);
    for (size_t i = 0; i < steps.size(); ++i) {
      for (int slot : steps[i].in) {
        if (slot >= 0) last_use[slot] = static_cast<int>(i);
      }
    }
    last_use[output_slot] = static_cast<int>(steps.size());
  }

  // Which steps run int8 (static mode), with Relu fusion; the fused Relu steps are dropped.
  void plan_static() {
    std::vector<int> consumers(slot_names.size(), 0);
    for (const auto& s : steps) {
      for (int slot : s.in) {
        if (slot >= 0) ++consumers[slot];
      }
    }
    ++consumers[output_slot];
    std::vector<bool> slot_int8(slot_names.size(), false);
    std::vector<Step> planned;
    for (size_t i = 0; i < steps.size(); ++i) {
      Step s = steps[i];
      const Op op = s.op;
      bool has_constant = std::find(s.in.begin(), s.in.end(), -1) != s.in.end();
      if (op == Op::kConv) {
        const auto pads = attr_ints(s.node, "pads", {0, 0, 0, 0});
        s.int8 = pads[0] == pads[2] && pads[1] == pads[3];
      } else if (op == Op::kGemm) {
        s.int8 = true;
      } else if (op == Op::kAdd || op == Op::kMul) {
        s.int8 = !has_constant;
      } else if (op == Op::kHardSwish) {  // quantized::hardswish, with its own output range
        s.int8 = true;
      } else if (passes_int8(op)) {
        s.int8 = s.in.at(0) >= 0 && slot_int8[s.in[0]];
      }
      if (s.int8 && (op == Op::kConv || op == Op::kGemm || op == Op::kAdd) &&
          i + 1 < steps.size() && steps[i + 1].op == Op::kRelu && steps[i + 1].in.at(0) == s.out &&
          consumers[s.out] == 1) {
        s.fused_relu = true;
        s.out = steps[i + 1].out;
        ++i;
      }
      s.packed_weight = s.int8 && (op == Op::kConv || op == Op::kGemm);
      slot_int8[s.out] = s.int8;
      planned.push_back(std::move(s));
    }
    steps = std::move(planned);
    compute_last_use();
  }

  void plan_dynamic() {
    for (auto& s : steps) s.packed_weight = s.op == Op::kGemm;
  }

  // Quantizes the float weights of packed steps into weight_int8/weight_scale (symmetric int8).
  void quantize_weights() {
    for (auto& s : steps) {
      if (!s.packed_weight) continue;
      torch::NoGradGuard no_grad;
      at::Tensor w = constant(s, 1);
      at::Tensor flat = w.reshape({w.size(0), -1});
      at::Tensor max_abs = per_channel ? flat.abs().amax({1}) : flat.abs().max().reshape({1});
      at::Tensor sc = (max_abs / 127.0).clamp_min(1e-8).to(at::kDouble);
      std::vector<int64_t> view(static_cast<size_t>(w.dim()), 1);
      view[0] = sc.numel() == 1 ? 1 : w.size(0);
      at::Tensor q = at::round(w / sc.to(at::kFloat).reshape(view)).clamp(-127, 127);
      weight_int8[s.node.name] = q.to(at::kChar).contiguous();
      weight_scale[s.node.name] = sc;
      constants.erase(s.node.inputs.at(1));  // the float weight is not kept
    }
  }

  at::Tensor quantized_weight(const Step& s) const {
    const at::Tensor& q = weight_int8.at(s.node.name);
    const at::Tensor& sc = weight_scale.at(s.node.name);
    if (sc.numel() == 1) return at::_make_per_tensor_quantized_tensor(q, sc.item<double>(), 0);
    return at::_make_per_channel_quantized_tensor(
        q, sc, at::zeros({q.size(0)}, at::TensorOptions().dtype(at::kLong)), 0);
  }

  // After resolve().
  void pack() {
    EngineScope scope(qengine);
    static const c10::OperatorHandle conv_prepack = quantized_op("quantized::conv2d_prepack", {""});
    static const c10::OperatorHandle linear_prepack =
        quantized_op("quantized::linear_prepack", {""});
    for (auto& s : steps) {
      if (!s.packed_weight) continue;
      at::Tensor b = bias_of(s);
      c10::IValue bias_value = b.defined() ? c10::IValue(b) : c10::IValue();
      if (s.op == Op::kGemm) {
        FRUGAL_CHECK(attr_int(s.node, "transB", 0) == 1, "quantized model: Gemm ", s.node.name,
                     " without transB");
        s.packed = call(linear_prepack, {quantized_weight(s), bias_value});
      } else {
        const auto pads = attr_ints(s.node, "pads", {0, 0, 0, 0});
        s.packed = call(conv_prepack,
                        {quantized_weight(s), bias_value, attr_ints(s.node, "strides", {1, 1}),
                         std::vector<int64_t>{pads[0], pads[1]},
                         attr_ints(s.node, "dilations", {1, 1}), attr_int(s.node, "group", 1)});
      }
    }
  }

  at::Tensor quantize(const at::Tensor& t, int slot) const {
    if (t.is_quantized()) return t;
    return at::quantize_per_tensor(t.contiguous(), scale[slot], zero_point[slot], at::kQUInt8);
  }

  static at::Tensor dequantize(const at::Tensor& t) {
    return t.is_quantized() ? t.dequantize() : t;
  }

  // Operator, attributes, constants and how each step runs, worked out once: the forward pass
  // parses no attribute, looks up no constant by name and compares no string.
  void resolve() {
    for (auto& s : steps) {
      const GraphNode& n = s.node;
      s.constants.assign(s.in.size(), at::Tensor());
      for (size_t i = 0; i < s.in.size(); ++i) {
        if (s.in[i] >= 0) continue;
        auto it = constants.find(n.inputs[i]);
        if (it != constants.end()) {
          s.constants[i] = it->second;
        } else {  // the float weight of a packed step, replaced by its int8 weight
          FRUGAL_CHECK(s.packed_weight && i == 1, "quantized model: ", n.name, " needs constant '",
                       n.inputs[i], "', which is missing");
        }
      }
      s.run = mode == "static" && s.int8             ? Step::Run::kInt8
              : mode == "dynamic" && s.packed_weight ? Step::Run::kDynamicGemm
                                                     : Step::Run::kFloat;
      const auto pads = attr_ints(n, "pads", {0, 0, 0, 0});
      s.asymmetric_pads = pads[0] != pads[2] || pads[1] != pads[3];
      s.pad_nd = {pads[1], pads[3], pads[0], pads[2]};
      s.padding = {s.asymmetric_pads ? 0 : pads[0], s.asymmetric_pads ? 0 : pads[1]};
      s.kernel = attr_ints(n, "kernel_shape", {});
      s.strides =
          attr_ints(n, "strides", s.op == Op::kConv ? std::vector<int64_t>{1, 1} : s.kernel);
      s.dilations = attr_ints(n, "dilations", {1, 1});
      s.group = attr_int(n, "group", 1);
      s.ceil_mode = attr_int(n, "ceil_mode", 0) != 0;
      s.count_include_pad = attr_int(n, "count_include_pad", 0) != 0;
      s.axis = attr_int(n, "axis", s.op == Op::kFlatten ? 1 : -1);
      s.alpha = attr_float(n, "alpha", 0.01f);
      s.epsilon = attr_float(n, "epsilon", 1e-5f);
      if (s.op == Op::kClip) {
        FRUGAL_CHECK(
            s.constants.size() == 3 && s.constants[1].defined() && s.constants[2].defined(),
            "quantized model: Clip ", n.name, " needs constant bounds");
        s.clip_lo = s.constants[1].item<double>();
        s.clip_hi = s.constants[2].item<double>();
      }
      if (s.op == Op::kReshape) {
        const at::Tensor& t = s.constants.at(1);
        FRUGAL_CHECK(t.defined() && t.scalar_type() == at::kLong, "quantized model: Reshape ",
                     n.name, " needs a constant int64 shape");
        s.shape.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
      }
    }
  }

  static const at::Tensor& input_of(const Step& s, size_t i,
                                    const std::vector<at::Tensor>& values) {
    return s.in[i] >= 0 ? values[s.in[i]] : s.constants[i];
  }

  static at::Tensor bias_of(const Step& s) {
    return s.constants.size() > 2 ? s.constants[2] : at::Tensor();
  }

  // A step whose inputs are float (or int8 for the ops that pass int8 through).
  at::Tensor eval(const Step& s, const std::vector<at::Tensor>& values) const {
    const bool int8 = s.run == Step::Run::kInt8;
    auto x_of = [&](size_t i) {
      const at::Tensor& t = input_of(s, i, values);
      return int8 ? t : dequantize(t);
    };
    at::Tensor x = x_of(0);
    switch (s.op) {
      case Op::kConv:
        if (s.asymmetric_pads) x = at::constant_pad_nd(x, s.pad_nd);
        return at::conv2d(x, s.constants[1], bias_of(s), s.strides, s.padding, s.dilations,
                          s.group);
      case Op::kGemm:
        return at::linear(x, s.constants[1], bias_of(s));
      case Op::kMatMul:
        return at::matmul(x, x_of(1));
      case Op::kAdd:
        return x + x_of(1);
      case Op::kMul:
        return x * x_of(1);
      case Op::kDiv:
        return x / x_of(1);
      case Op::kPow:
        return at::pow(x, x_of(1));
      case Op::kRelu:
        return at::relu(x);
      case Op::kClip:
        return at::clamp(x, s.clip_lo, s.clip_hi);
      case Op::kLeakyRelu:
        return at::leaky_relu(x, s.alpha);
      case Op::kSigmoid:
        return at::sigmoid(x);
      case Op::kTanh:
        return at::tanh(x);
      case Op::kErf:
        return at::erf(x);
      case Op::kHardSwish:
        return at::hardswish(x);
      case Op::kHardSigmoid:
        return at::hardsigmoid(x);
      case Op::kSoftmax:
        return at::softmax(x, s.axis);
      case Op::kLogSoftmax:
        return at::log_softmax(x, s.axis);
      case Op::kMaxPool:
        return at::max_pool2d(x, s.kernel, s.strides, s.padding, s.dilations, s.ceil_mode);
      case Op::kAveragePool:
        return at::avg_pool2d(x, s.kernel, s.strides, s.padding, /*ceil_mode=*/false,
                              s.count_include_pad);
      case Op::kGlobalAveragePool:
        return at::adaptive_avg_pool2d(x, {1, 1});
      case Op::kGlobalMaxPool:
        return std::get<0>(at::adaptive_max_pool2d(x, {1, 1}));
      case Op::kFlatten: {
        int64_t outer = 1;
        for (int64_t d = 0; d < s.axis; ++d) outer *= x.size(d);
        return x.contiguous().reshape({outer, -1});
      }
      case Op::kReshape: {
        std::vector<int64_t> shape = s.shape;
        for (size_t d = 0; d < shape.size(); ++d) {
          if (shape[d] == 0) shape[d] = x.size(static_cast<int64_t>(d));
        }
        return x.contiguous().reshape(shape);
      }
      case Op::kBatchNormalization:
        return at::batch_norm(x, s.constants[1], s.constants[2], s.constants[3], s.constants[4],
                              /*training=*/false, 0.0, s.epsilon, /*cudnn_enabled=*/false);
      case Op::kIdentity:
        return x;
    }
    FRUGAL_CHECK(false, "quantized model: no implementation of ", s.node.op_type);
    return x;
  }

  at::Tensor eval_int8(const Step& s, const std::vector<at::Tensor>& values) const {
    static const c10::OperatorHandle conv = quantized_op("quantized::conv2d", {"new", ""});
    static const c10::OperatorHandle conv_relu =
        quantized_op("quantized::conv2d_relu", {"new", ""});
    static const c10::OperatorHandle linear = quantized_op("quantized::linear", {""});
    static const c10::OperatorHandle linear_relu = quantized_op("quantized::linear_relu", {""});
    static const c10::OperatorHandle add = quantized_op("quantized::add", {""});
    static const c10::OperatorHandle add_relu = quantized_op("quantized::add_relu", {""});
    static const c10::OperatorHandle mul = quantized_op("quantized::mul", {""});
    static const c10::OperatorHandle hardswish = quantized_op("quantized::hardswish", {""});
    const double out_scale = scale[s.out];
    const int64_t out_zp = zero_point[s.out];
    switch (s.op) {
      case Op::kConv:
        return call(s.fused_relu ? conv_relu : conv,
                    {quantize(values[s.in[0]], s.in[0]), s.packed, out_scale, out_zp})
            .toTensor();
      case Op::kGemm:
        return call(s.fused_relu ? linear_relu : linear,
                    {quantize(values[s.in[0]], s.in[0]), s.packed, out_scale, out_zp})
            .toTensor();
      case Op::kAdd:
      case Op::kMul: {
        at::Tensor a = quantize(values[s.in[0]], s.in[0]);
        at::Tensor b = quantize(values[s.in[1]], s.in[1]);
        // The quantized kernels size the output like their first operand: put the larger first.
        if (a.numel() < b.numel()) std::swap(a, b);
        const c10::OperatorHandle& handle =
            s.op == Op::kMul ? mul : (s.fused_relu ? add_relu : add);
        return call(handle, {a, b, out_scale, out_zp}).toTensor();
      }
      case Op::kHardSwish:
        return call(hardswish, {quantize(values[s.in[0]], s.in[0]), out_scale, out_zp}).toTensor();
      default:
        return eval(s, values);  // the ops that run on quantized tensors as they are
    }
  }

  at::Tensor eval_dynamic_gemm(const Step& s, const std::vector<at::Tensor>& values) const {
    static const c10::OperatorHandle linear_dynamic =
        quantized_op("quantized::linear_dynamic", {""});
    at::Tensor x = values[s.in[0]].contiguous();
    return call(linear_dynamic, {x, s.packed, reduce_range}).toTensor();
  }

  void check_input(const at::Tensor& input) const {
    FRUGAL_CHECK(input.defined() && input.scalar_type() == at::kFloat && input.device().is_cpu(),
                 "QuantizedModel: expected a float32 CPU input, got ",
                 input.defined() ? c10::str(input.scalar_type(), " on ", input.device())
                                 : std::string("an undefined tensor"));
    bool same = input.dim() == static_cast<int64_t>(example_shape.size());
    for (size_t d = 1; same && d < example_shape.size(); ++d) {
      same = input.size(static_cast<int64_t>(d)) == example_shape[d];
    }
    if (same) return;
    std::ostringstream expected;
    for (size_t d = 1; d < example_shape.size(); ++d) expected << ", " << example_shape[d];
    FRUGAL_CHECK(false, "QuantizedModel: expected an input of shape [N", expected.str(),
                 "] (the shape it was built for, any batch size N), got ", input.sizes());
  }

  /// Runs the graph; `record` (float mode) widens each slot's [lo, hi].
  at::Tensor run(const at::Tensor& input, std::vector<std::pair<double, double>>* record) const {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> values(slot_names.size());
    values[input_slot] = input;
    auto observe = [&](int slot) {
      if (record == nullptr) return;
      auto& r = (*record)[slot];
      const at::Tensor& v = values[slot];
      r.first = std::min(r.first, v.min().item<double>());
      r.second = std::max(r.second, v.max().item<double>());
    };
    observe(input_slot);
    for (size_t i = 0; i < steps.size(); ++i) {
      const Step& s = steps[i];
      switch (s.run) {
        case Step::Run::kInt8:
          values[s.out] = eval_int8(s, values);
          break;
        case Step::Run::kDynamicGemm:
          values[s.out] = eval_dynamic_gemm(s, values);
          break;
        case Step::Run::kFloat:
          values[s.out] = eval(s, values);
          break;
      }
      observe(s.out);
      for (int slot : s.in) {
        if (slot >= 0 && last_use[slot] == static_cast<int>(i)) values[slot] = at::Tensor();
      }
    }
    return dequantize(values[output_slot]);
  }
};

QuantizedModelImpl::QuantizedModelImpl(std::shared_ptr<Graph> graph) : graph_(std::move(graph)) {
  train(false);
}
QuantizedModelImpl::~QuantizedModelImpl() = default;

at::Tensor QuantizedModelImpl::forward(const at::Tensor& input) {
  graph_->check_input(input);
  EngineScope scope(graph_->qengine);
  return graph_->run(input, nullptr);
}

const std::string& QuantizedModelImpl::mode() const { return graph_->mode; }
const std::string& QuantizedModelImpl::engine() const { return graph_->engine; }

int64_t QuantizedModelImpl::int8_ops() const {
  int64_t n = 0;
  for (const auto& s : graph_->steps) n += s.run != Graph::Step::Run::kFloat;
  return n;
}

int64_t QuantizedModelImpl::float_ops() const {
  return static_cast<int64_t>(graph_->steps.size()) - int8_ops();
}

int64_t QuantizedModelImpl::weight_bytes() const {
  int64_t bytes = 0;
  for (const auto* m : {&graph_->constants, &graph_->weight_int8, &graph_->weight_scale}) {
    for (const auto& kv : *m) bytes += static_cast<int64_t>(kv.second.nbytes());
  }
  return bytes;
}

std::string QuantizedModelImpl::summary() const {
  std::ostringstream os;
  for (const auto& s : graph_->steps) {
    const bool int8 = s.run != Graph::Step::Run::kFloat;
    os << s.node.op_type << " " << s.node.name << " " << (int8 ? "int8" : "float")
       << (s.fused_relu ? " (fused Relu)" : "") << "\n";
  }
  return os.str();
}

namespace {

using Graph = QuantizedModelImpl::Graph;

std::shared_ptr<Graph> graph_from_capture(const CapturedGraph& captured, const at::Tensor& example,
                                          const StaticQuantizeOptions& options,
                                          const std::string& mode, const char* who) {
  auto g = std::make_shared<Graph>();
  g->mode = mode;
  g->qengine = pick_engine(options.engine, who);
  g->engine = engine_name(g->qengine);
  g->per_channel = options.per_channel.value_or(g->engine != "qnnpack");
  g->reduce_range = options.reduce_range.value_or(g->engine == "x86" || g->engine == "fbgemm");
  g->input_name = captured.input;
  g->output_name = captured.output;
  g->example_shape.assign(example.sizes().begin(), example.sizes().end());
  g->constants = captured.initializers;
  g->build_steps(captured.nodes);
  g->resolve();
  return g;
}

void check_calibration(const std::vector<at::Tensor>& calibration, const char* who) {
  FRUGAL_CHECK(!calibration.empty(), who,
               ": calibration is empty; give a few batches of typical inputs (e.g. 10 batches "
               "of the validation set, after the eval transforms)");
  const at::Tensor& first = calibration.front();
  for (size_t i = 0; i < calibration.size(); ++i) {
    const at::Tensor& t = calibration[i];
    FRUGAL_CHECK(
        t.defined() && t.scalar_type() == at::kFloat && t.dim() >= 1 && t.size(0) > 0, who,
        ": calibration batch ", i, " must be a non-empty float32 tensor, got ",
        t.defined() ? c10::str(t.scalar_type(), " ", t.sizes()) : std::string("undefined"));
    FRUGAL_CHECK(t.dim() == first.dim() && t.sizes().slice(1) == first.sizes().slice(1), who,
                 ": calibration batch ", i, " has shape ", t.sizes(),
                 "; every batch must be shaped like the first, ", first.sizes(),
                 ", in all but the batch dimension");
  }
}

}  // namespace

QuantizedModel quantize_static(torch::nn::Module& model, const std::vector<at::Tensor>& calibration,
                               const StaticQuantizeOptions& options) {
  constexpr const char* who = "quantize_static";
  check_calibration(calibration, who);
  (void)pick_engine(options.engine, who);
  const at::Tensor example = calibration.front().to(at::kCPU);
  OnnxExportOptions capture_options;
  const CapturedGraph captured = deploy::capture_graph(model, example, capture_options, who);
  auto g = graph_from_capture(captured, example, options, "float", who);
  std::vector<std::pair<double, double>> ranges(
      g->slot_names.size(),
      {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()});
  for (const auto& batch : calibration) (void)g->run(batch.to(at::kCPU), &ranges);
  for (const auto& r : ranges) {
    const auto qp = affine_params(std::isfinite(r.first) ? r.first : 0.0,
                                  std::isfinite(r.second) ? r.second : 0.0, g->reduce_range);
    g->scale.push_back(qp.first);
    g->zero_point.push_back(qp.second);
  }
  g->mode = "static";
  g->plan_static();
  g->quantize_weights();
  g->resolve();
  g->pack();
  return QuantizedModel(std::move(g));
}

QuantizedModel quantize_dynamic_graph(torch::nn::Module& model, const at::Tensor& example_input,
                                      const StaticQuantizeOptions& options) {
  constexpr const char* who = "quantize_dynamic_graph";
  (void)pick_engine(options.engine, who);
  FRUGAL_CHECK(example_input.defined(), who, ": example_input is undefined");
  const at::Tensor example = example_input.to(at::kCPU);
  const CapturedGraph captured = deploy::capture_graph(model, example, OnnxExportOptions{}, who);
  auto g = graph_from_capture(captured, example, options, "dynamic", who);
  g->plan_dynamic();
  g->quantize_weights();
  g->resolve();
  g->pack();
  return QuantizedModel(std::move(g));
}

// ---- save / load ----

void QuantizedModelImpl::save(const std::string& path) const {
  const Graph& g = *graph_;
  json meta;
  meta["format"] = "frugal-int8";
  meta["version"] = kFormatVersion;
  meta["mode"] = g.mode;
  meta["engine"] = g.engine;
  meta["per_channel"] = g.per_channel;
  meta["reduce_range"] = g.reduce_range;
  meta["input"] = g.input_name;
  meta["output"] = g.output_name;
  meta["example_shape"] = g.example_shape;
  json steps = json::array();
  for (const auto& s : g.steps) {
    json j;
    j["name"] = s.node.name;
    j["op"] = s.node.op_type;
    j["inputs"] = s.node.inputs;
    j["output"] = g.slot_names.at(s.out);
    j["int8"] = s.int8;
    j["fused_relu"] = s.fused_relu;
    j["packed_weight"] = s.packed_weight;
    json attributes = json::array();
    for (const auto& a : s.node.attributes) attributes.push_back(attribute_to_json(a));
    j["attributes"] = attributes;
    steps.push_back(j);
  }
  meta["steps"] = steps;
  // Activation parameters by value name (the slots of a loaded graph are numbered anew).
  json qparams = json::object();
  if (g.mode == "static") {
    auto put = [&](int slot) {
      if (slot >= 0) qparams[g.slot_names.at(slot)] = {g.scale.at(slot), g.zero_point.at(slot)};
    };
    put(g.input_slot);
    for (const auto& s : g.steps) {
      for (int slot : s.in) put(slot);
      put(s.out);
    }
  }
  meta["qparams"] = qparams;
  TensorMap tensors;
  for (const auto& kv : g.constants) tensors["const/" + kv.first] = kv.second;
  for (const auto& kv : g.weight_int8) tensors["int8/" + kv.first] = kv.second;
  for (const auto& kv : g.weight_scale) tensors["scale/" + kv.first] = kv.second;
  write_safetensors(tensors, path, {{kMetadataKey, meta.dump()}});
}

QuantizedModel load_quantized_model(const std::string& path, const std::string& engine) {
  std::map<std::string, std::string> metadata;
  TensorMap tensors = read_safetensors(path, &metadata);
  auto it = metadata.find(kMetadataKey);
  FRUGAL_CHECK(it != metadata.end(), "load_quantized_model: '", path,
               "' is a safetensors file but not a frugal int8 model (no '", kMetadataKey,
               "' metadata); it is written by QuantizedModel::save");
  auto g = std::make_shared<Graph>();
  try {
    const json meta = json::parse(it->second);
    FRUGAL_CHECK(meta.at("format") == "frugal-int8" && meta.at("version") == kFormatVersion,
                 "load_quantized_model: '", path, "' has format ", meta.at("format").dump(),
                 " version ", meta.at("version").dump(), "; this frugal reads frugal-int8 version ",
                 kFormatVersion);
    g->mode = meta.at("mode").get<std::string>();
    FRUGAL_CHECK(g->mode == "static" || g->mode == "dynamic", "load_quantized_model: '", path,
                 "' has mode '", g->mode, "'; expected static or dynamic");
    g->engine = meta.at("engine").get<std::string>();
    g->qengine = pick_engine(engine.empty() ? g->engine : engine, "load_quantized_model");
    g->engine = engine_name(g->qengine);
    g->per_channel = meta.at("per_channel").get<bool>();
    g->reduce_range = meta.at("reduce_range").get<bool>();
    g->input_name = meta.at("input").get<std::string>();
    g->output_name = meta.at("output").get<std::string>();
    g->example_shape = meta.at("example_shape").get<std::vector<int64_t>>();
    for (auto& kv : tensors) {
      const std::string& key = kv.first;
      const auto slash = key.find('/');
      FRUGAL_CHECK(slash != std::string::npos, "load_quantized_model: '", path,
                   "' holds an unexpected tensor '", key, "'");
      const std::string kind = key.substr(0, slash);
      const std::string name = key.substr(slash + 1);
      if (kind == "const") {
        g->constants[name] = kv.second;
      } else if (kind == "int8") {
        g->weight_int8[name] = kv.second;
      } else if (kind == "scale") {
        g->weight_scale[name] = kv.second;
      } else {
        FRUGAL_CHECK(false, "load_quantized_model: '", path, "' holds an unexpected tensor '", key,
                     "'");
      }
    }
    std::vector<GraphNode> nodes;
    std::vector<json> flags;
    for (const auto& j : meta.at("steps")) {
      GraphNode n;
      n.name = j.at("name").get<std::string>();
      n.op_type = j.at("op").get<std::string>();
      n.inputs = j.at("inputs").get<std::vector<std::string>>();
      n.output = j.at("output").get<std::string>();
      for (const auto& a : j.at("attributes")) n.attributes.push_back(attribute_from_json(a));
      nodes.push_back(std::move(n));
      flags.push_back(j);
    }
    g->build_steps(nodes);
    for (size_t i = 0; i < g->steps.size(); ++i) {
      auto& s = g->steps[i];
      s.int8 = flags[i].at("int8").get<bool>();
      s.fused_relu = flags[i].at("fused_relu").get<bool>();
      s.packed_weight = flags[i].at("packed_weight").get<bool>();
      if (s.packed_weight) {
        FRUGAL_CHECK(g->weight_int8.count(s.node.name) && g->weight_scale.count(s.node.name),
                     "load_quantized_model: '", path, "' lacks the int8 weight of ", s.node.name);
        const at::Tensor& q = g->weight_int8.at(s.node.name);
        const at::Tensor& sc = g->weight_scale.at(s.node.name);
        FRUGAL_CHECK(q.scalar_type() == at::kChar && sc.scalar_type() == at::kDouble &&
                         q.dim() >= 2 && (sc.numel() == 1 || sc.numel() == q.size(0)),
                     "load_quantized_model: '", path, "': the int8 weight of ", s.node.name, " is ",
                     q.scalar_type(), " ", q.sizes(), " with ", sc.numel(), " ", sc.scalar_type(),
                     " scales; expected int8 with 1 or ", q.dim() >= 1 ? q.size(0) : 0,
                     " float64 scales");
      }
    }
    if (g->mode == "static") {
      const json& qparams = meta.at("qparams");
      for (const auto& name : g->slot_names) {
        FRUGAL_CHECK(qparams.contains(name), "load_quantized_model: '", path,
                     "' has no activation scale for value '", name, "'");
        const double sc = qparams[name].at(0).get<double>();
        const int64_t zp = qparams[name].at(1).get<int64_t>();
        FRUGAL_CHECK(sc > 0 && std::isfinite(sc) && zp >= 0 && zp <= 255, "load_quantized_model: '",
                     path, "': value '", name, "' has scale ", sc, " and zero point ", zp,
                     "; expected a positive scale and a zero point in [0, 255]");
        g->scale.push_back(sc);
        g->zero_point.push_back(zp);
      }
    }
    g->compute_last_use();
    g->resolve();
  } catch (const json::exception& e) {
    FRUGAL_CHECK(false, "load_quantized_model: '", path, "' has damaged metadata: ", e.what());
  }
  g->pack();
  return QuantizedModel(std::move(g));
}

}  // namespace frugal

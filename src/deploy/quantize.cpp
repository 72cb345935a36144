#include "frugal/deploy/quantize.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>

#include "deploy/qengine.h"
#include "frugal/error.h"

namespace frugal {

namespace detail {

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}
}  // namespace

std::string engine_name(at::QEngine engine) { return lower(c10::toString(engine)); }

at::QEngine pick_engine(const std::string& wanted, const char* who) {
  const auto& supported = at::globalContext().supportedQEngines();
  std::string names;
  for (auto e : supported) {
    if (e == at::QEngine::NoQEngine) continue;
    names += (names.empty() ? "" : ", ") + engine_name(e);
  }
  if (!wanted.empty()) {
    for (auto e : supported) {
      if (e != at::QEngine::NoQEngine && engine_name(e) == lower(wanted)) return e;
    }
    FRUGAL_CHECK(false, who, ": engine '", wanted,
                 "' is not supported by this LibTorch build; it has: ", names);
  }
  for (const char* preferred : {"x86", "fbgemm", "onednn", "qnnpack"}) {
    for (auto e : supported) {
      if (engine_name(e) == preferred) return e;
    }
  }
  FRUGAL_CHECK(false, who, ": this LibTorch build has no quantization engine");
  return at::QEngine::NoQEngine;
}

c10::OperatorHandle quantized_op(const char* name, std::initializer_list<const char*> overloads) {
  for (const char* overload : overloads) {
    if (auto handle = c10::Dispatcher::singleton().findSchema({name, overload})) return *handle;
  }
  FRUGAL_CHECK(false, "this LibTorch build has no operator ", name);
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

}  // namespace detail

namespace {
using detail::engine_name;
using detail::EngineScope;

at::QEngine pick_engine(const std::string& wanted) {
  return detail::pick_engine(wanted, "quantize_dynamic");
}

c10::OperatorHandle op(const char* name) { return detail::quantized_op(name, {""}); }

}  // namespace

std::vector<std::string> quantization_engines() {
  std::vector<std::string> names;
  for (auto e : at::globalContext().supportedQEngines()) {
    if (e != at::QEngine::NoQEngine) names.push_back(engine_name(e));
  }
  return names;
}

DynamicQuantizedLinearImpl::DynamicQuantizedLinearImpl(const torch::nn::LinearImpl& linear,
                                                       const DynamicQuantizeOptions& options)
    : in_features_(linear.options.in_features()), out_features_(linear.options.out_features()) {
  const at::QEngine engine = pick_engine(options.engine);
  engine_ = engine_name(engine);
  reduce_range_ = options.reduce_range.value_or(engine_ == "x86" || engine_ == "fbgemm");
  FRUGAL_CHECK(linear.weight.scalar_type() == at::kFloat,
               "quantize_dynamic: Linear weight must be float32, got ",
               linear.weight.scalar_type());
  torch::NoGradGuard no_grad;
  at::Tensor w = linear.weight.detach().to(at::kCPU);
  // Symmetric int8: scale = max |w| / 127 per output row (or for the whole matrix), zero point 0
  // (onednn requires 0 for weights).
  at::Tensor max_abs = options.per_channel ? w.abs().amax({1}) : w.abs().max().reshape({1});
  at::Tensor scale = (max_abs / 127.0).clamp_min(1e-8).to(at::kDouble);
  at::Tensor q = options.per_channel ? at::round(w / scale.to(at::kFloat).unsqueeze(1))
                                     : at::round(w / scale.to(at::kFloat));
  weight_int8 = register_buffer("weight_int8", q.clamp(-127, 127).to(at::kChar));
  weight_scale = register_buffer("weight_scale", scale);
  if (linear.bias.defined()) {
    bias = register_buffer("bias", linear.bias.detach().to(at::kCPU).clone());
  }
  repack();
}

at::Tensor DynamicQuantizedLinearImpl::dequantized_weight() const {
  at::Tensor scale = weight_scale.to(at::kFloat);
  return weight_int8.to(at::kFloat) * (scale.numel() == 1 ? scale : scale.unsqueeze(1));
}

void DynamicQuantizedLinearImpl::repack() {
  FRUGAL_CHECK(weight_int8.dim() == 2 && weight_int8.size(0) == out_features_ &&
                   weight_int8.size(1) == in_features_ && weight_int8.scalar_type() == at::kChar,
               "DynamicQuantizedLinear: weight_int8 must be int8 of shape [", out_features_, ", ",
               in_features_, "], got ", weight_int8.scalar_type(), " ", weight_int8.sizes());
  FRUGAL_CHECK(weight_scale.numel() == 1 || weight_scale.numel() == out_features_,
               "DynamicQuantizedLinear: weight_scale must hold 1 or ", out_features_,
               " scales, got ", weight_scale.numel());
  at::Tensor qweight;
  if (weight_scale.numel() == 1) {
    qweight = at::_make_per_tensor_quantized_tensor(weight_int8, weight_scale.item<double>(), 0);
  } else {
    qweight = at::_make_per_channel_quantized_tensor(
        weight_int8, weight_scale.to(at::kDouble),
        at::zeros({out_features_}, at::TensorOptions().dtype(at::kLong)), 0);
  }
  EngineScope scope(pick_engine(engine_));
  torch::jit::Stack stack;
  stack.emplace_back(qweight);
  stack.emplace_back(bias.defined() ? c10::IValue(bias) : c10::IValue());
  op("quantized::linear_prepack").callBoxed(&stack);
  packed_ = stack.at(0);
}

at::Tensor DynamicQuantizedLinearImpl::forward(const at::Tensor& input) {
  FRUGAL_CHECK(
      input.dim() >= 1 && input.size(-1) == in_features_ && input.scalar_type() == at::kFloat,
      "DynamicQuantizedLinear: expected a float32 input with ", in_features_,
      " features in the last dimension, got ", input.scalar_type(), " ", input.sizes());
  FRUGAL_CHECK(input.device().is_cpu(), "DynamicQuantizedLinear: runs on the CPU only, got an ",
               "input on ", input.device());
  static const c10::OperatorHandle linear_dynamic = op("quantized::linear_dynamic");
  at::Tensor x = input.dim() == 2 ? input.contiguous() : input.reshape({-1, in_features_});
  torch::jit::Stack stack;
  stack.reserve(3);
  stack.emplace_back(x);
  stack.emplace_back(packed_);
  stack.emplace_back(reduce_range_);
  linear_dynamic.callBoxed(&stack);
  at::Tensor y = stack.at(0).toTensor();
  if (input.dim() == 2) return y;
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = out_features_;
  return y.reshape(shape);
}

namespace {

torch::nn::Sequential quantize_sequential(torch::nn::SequentialImpl& model,
                                          const DynamicQuantizeOptions& options,
                                          int64_t& float_left) {
  torch::nn::Sequential out;
  const auto children = model.named_children();
  // named_children() and the type-erased modules the forward runs are in the same order.
  auto any = model.begin();
  for (const auto& child : children) {
    const torch::nn::AnyModule& any_module = *any++;
    const auto& module = child.value();
    if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(module.get())) {
      out->push_back(std::string(child.key()), DynamicQuantizedLinear(*linear, options));
    } else {
      for (const auto& m : module->modules(/*include_self=*/true)) {
        if (dynamic_cast<torch::nn::LinearImpl*>(m.get()) != nullptr) ++float_left;
      }
      out->push_back(std::string(child.key()), any_module);
    }
  }
  return out;
}

}  // namespace

torch::nn::Sequential quantize_dynamic(const torch::nn::Sequential& model,
                                       const DynamicQuantizeOptions& options,
                                       int64_t* float_linear_left) {
  FRUGAL_CHECK(!model.is_empty(), "quantize_dynamic: the model is empty (a null Sequential)");
  (void)pick_engine(options.engine);  // an unknown engine fails here, before anything is built
  int64_t float_left = 0;
  torch::nn::Sequential out =
      quantize_sequential(*const_cast<torch::nn::Sequential&>(model), options, float_left);
  out->train(false);
  if (float_linear_left != nullptr) *float_linear_left = float_left;
  return out;
}

}  // namespace frugal

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "compat.h"
#include "deploy/graph_capture.h"
#include "frugal/deploy/onnx.h"
#include "frugal/error.h"
#include "frugal/loggers/logger.h"

#if defined(FRUGAL_WITH_ONNX)
#include "deploy/onnx_model.h"  // the protobuf side, compiled apart from LibTorch's headers
#endif

namespace frugal {

namespace nn = torch::nn;

namespace deploy {

namespace {

std::string join_path(const std::string& parent, const std::string& child) {
  return parent.empty() ? child : parent + "." + child;
}

std::string describe(const nn::Module& module, const std::string& path) {
  return "module '" + (path.empty() ? std::string("<root>") : path) + "' of type " + module.name();
}

std::string shape_of(const at::Tensor& t) { return c10::str(t.sizes()); }

std::vector<int64_t> to_vector(at::IntArrayRef values) { return {values.begin(), values.end()}; }

template <size_t D>
std::vector<int64_t> to_vector(const torch::ExpandingArray<D>& values) {
  return {values->begin(), values->end()};
}

}  // namespace

struct OnnxGraph::Impl {
  OnnxExportOptions options;
  CapturedGraph* graph = nullptr;
  std::set<std::string> names;  // every value, initializer and node name in use

  std::string unique(const std::string& wanted) {
    std::string base = wanted.empty() ? std::string("v") : wanted;
    std::string name = base;
    for (int i = 1; names.count(name); ++i) name = base + "_" + std::to_string(i);
    names.insert(name);
    return name;
  }
};

struct OnnxExporter {
  using Impl = OnnxGraph::Impl;
  static OnnxGraph make(std::unique_ptr<Impl> impl) { return OnnxGraph(std::move(impl)); }
};

OnnxGraph::OnnxGraph(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OnnxGraph::~OnnxGraph() = default;
const OnnxExportOptions& OnnxGraph::options() const { return impl_->options; }

std::string OnnxGraph::initializer(const std::string& name, const at::Tensor& value) {
  const std::string unique = impl_->unique(name);
  at::Tensor t = value.detach().to(at::kCPU).contiguous().clone();
  FRUGAL_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kLong,
               "export_onnx: ", "initializer '", name, "' must be float32 or int64, got ",
               t.scalar_type());
  impl_->graph->initializers.emplace(unique, std::move(t));
  impl_->graph->initializer_order.push_back(unique);
  return unique;
}

OnnxValue OnnxGraph::node(const std::string& op_type, const std::vector<std::string>& inputs,
                          at::Tensor example, const std::vector<OnnxAttribute>& attributes,
                          const std::string& path) {
  const std::string base = path.empty() ? op_type : path + "/" + op_type;
  const std::string name = impl_->unique(base);
  const std::string output = impl_->unique(base + ":0");
  impl_->graph->nodes.push_back({name, op_type, inputs, output, attributes});
  return {output, std::move(example)};
}

OnnxValue OnnxGraph::add(const OnnxValue& a, const OnnxValue& b, const std::string& path) {
  return node("Add", {a.name, b.name}, a.example + b.example, {}, path);
}
OnnxValue OnnxGraph::mul(const OnnxValue& a, const OnnxValue& b, const std::string& path) {
  return node("Mul", {a.name, b.name}, a.example * b.example, {}, path);
}
OnnxValue OnnxGraph::relu(const OnnxValue& x, const std::string& path) {
  return node("Relu", {x.name}, at::relu(x.example), {}, path);
}
OnnxValue OnnxGraph::sigmoid(const OnnxValue& x, const std::string& path) {
  return node("Sigmoid", {x.name}, at::sigmoid(x.example), {}, path);
}
OnnxValue OnnxGraph::silu(const OnnxValue& x, const std::string& path) {
  // opset 17 has no Silu: x * Sigmoid(x)
  return mul(x, sigmoid(x, path), path);
}
OnnxValue OnnxGraph::hardswish(const OnnxValue& x, const std::string& path) {
  return node("HardSwish", {x.name}, at::hardswish(x.example), {}, path);
}
OnnxValue OnnxGraph::hardsigmoid(const OnnxValue& x, const std::string& path) {
  return node("HardSigmoid", {x.name}, at::hardsigmoid(x.example),
              {{"alpha", 1.0f / 6.0f}, {"beta", 0.5f}}, path);
}
OnnxValue OnnxGraph::global_average_pool(const OnnxValue& x, const std::string& path) {
  FRUGAL_CHECK(x.example.dim() == 4, "export_onnx: global average pooling at '", path,
               "' needs an N x C x H x W input, got ", shape_of(x.example));
  return node("GlobalAveragePool", {x.name}, x.example.mean({2, 3}, /*keepdim=*/true), {}, path);
}

OnnxValue OnnxGraph::conv2d(nn::Conv2dImpl& conv, nn::BatchNorm2dImpl* bn, const std::string& path,
                            const OnnxValue& input) {
  const auto& o = conv.options;
  FRUGAL_CHECK(input.example.dim() == 4, "export_onnx: ", describe(conv, path),
               " needs an N x C x H x W input, got ", shape_of(input.example));
  FRUGAL_CHECK(compat::variant_get_if<torch::enumtype::kZeros>(o.padding_mode()) != nullptr,
               "export_onnx: ", describe(conv, path),
               " uses a padding mode other than zeros, which ONNX's Conv does not have");
  const std::vector<int64_t> kernel = to_vector(o.kernel_size());
  const std::vector<int64_t> dilation = to_vector(o.dilation());
  std::vector<int64_t> pads(4, 0);  // ONNX order: begin of each axis, then end of each axis
  if (auto* explicit_pads = compat::variant_get_if<torch::ExpandingArray<2> >(o.padding())) {
    const std::vector<int64_t> p = to_vector(*explicit_pads);
    pads = {p[0], p[1], p[0], p[1]};
  } else if (compat::variant_get_if<torch::enumtype::kSame>(o.padding()) != nullptr) {
    for (int axis = 0; axis < 2; ++axis) {
      const int64_t total = dilation[axis] * (kernel[axis] - 1);
      pads[axis] = total / 2;  // PyTorch puts the odd element at the end
      pads[axis + 2] = total - total / 2;
    }
  }
  at::Tensor out = conv.forward(input.example);
  at::Tensor weight = conv.weight.detach();
  at::Tensor bias = conv.bias.defined() ? conv.bias.detach() : at::Tensor();
  std::string conv_path = path;
  if (bn != nullptr) {
    FRUGAL_CHECK(bn->options.num_features() == weight.size(0), "export_onnx: ", describe(*bn, path),
                 " has ", bn->options.num_features(), " features but follows a convolution with ",
                 weight.size(0), " output channels");
    FRUGAL_CHECK(bn->options.track_running_stats(), "export_onnx: ", describe(*bn, path),
                 " has no running statistics (track_running_stats false), so eval mode "
                 "normalises with batch statistics, which ONNX inference cannot reproduce");
    out = bn->forward(out);
    // y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta
    at::Tensor scale = at::rsqrt(bn->running_var.detach() + bn->options.eps());
    if (bn->options.affine()) scale = scale * bn->weight.detach();
    at::Tensor shift = bn->options.affine() ? bn->bias.detach() : at::zeros_like(scale);
    at::Tensor b = bias.defined() ? bias : at::zeros_like(scale);
    bias = (b - bn->running_mean.detach()) * scale + shift;
    weight = weight * scale.reshape({-1, 1, 1, 1});
  }
  std::vector<std::string> inputs = {input.name, initializer(conv_path + ".weight", weight)};
  if (bias.defined()) inputs.push_back(initializer(conv_path + ".bias", bias));
  return node("Conv", inputs, out,
              {{"kernel_shape", kernel},
               {"strides", to_vector(o.stride())},
               {"pads", pads},
               {"dilations", dilation},
               {"group", o.groups()}},
              path);
}

OnnxValue OnnxGraph::conv_bn(nn::Conv2dImpl& conv, nn::BatchNorm2dImpl& batch_norm,
                             const std::string& conv_path, const std::string& batch_norm_path,
                             const OnnxValue& input) {
  if (impl_->options.fold_batch_norm) return conv2d(conv, &batch_norm, conv_path, input);
  return module(batch_norm, batch_norm_path, conv2d(conv, nullptr, conv_path, input));
}

OnnxValue OnnxGraph::linear(nn::LinearImpl& linear, const std::string& path,
                            const OnnxValue& input) {
  const int64_t in_features = linear.options.in_features();
  FRUGAL_CHECK(input.example.dim() >= 1 && input.example.size(-1) == in_features,
               "export_onnx: ", describe(linear, path), " expects inputs of ", in_features,
               " features in the last dimension, got ", shape_of(input.example));
  at::Tensor out = linear.forward(input.example);
  at::Tensor weight = linear.weight.detach();
  if (input.example.dim() == 2) {
    std::vector<std::string> inputs = {input.name, initializer(path + ".weight", weight)};
    if (linear.bias.defined()) inputs.push_back(initializer(path + ".bias", linear.bias));
    return node("Gemm", inputs, out, {{"transB", int64_t{1}}}, path);
  }
  OnnxValue product =
      node("MatMul", {input.name, initializer(path + ".weight", weight.t().contiguous())},
           linear.bias.defined() ? out - linear.bias.detach() : out, {}, path);
  if (!linear.bias.defined()) return product;
  return node("Add", {product.name, initializer(path + ".bias", linear.bias)}, out, {}, path);
}

namespace {

template <typename BatchNormImpl>
OnnxValue batch_norm_op(OnnxGraph& g, BatchNormImpl& bn, const std::string& path,
                        const OnnxValue& input) {
  FRUGAL_CHECK(bn.options.track_running_stats(), "export_onnx: ", describe(bn, path),
               " has no running statistics (track_running_stats false), so eval mode "
               "normalises with batch statistics, which ONNX inference cannot reproduce");
  FRUGAL_CHECK(input.example.dim() >= 2 && input.example.size(1) == bn.options.num_features(),
               "export_onnx: ", describe(bn, path), " expects ", bn.options.num_features(),
               " channels in dimension 1, got ", shape_of(input.example));
  const int64_t c = bn.options.num_features();
  at::Tensor scale = bn.options.affine() ? bn.weight.detach() : at::ones({c});
  at::Tensor shift = bn.options.affine() ? bn.bias.detach() : at::zeros({c});
  return g.node(
      "BatchNormalization",
      {input.name, g.initializer(path + ".weight", scale), g.initializer(path + ".bias", shift),
       g.initializer(path + ".running_mean", bn.running_mean),
       g.initializer(path + ".running_var", bn.running_var)},
      bn.forward(input.example), {{"epsilon", static_cast<float>(bn.options.eps())}}, path);
}

at::Tensor scalar(float value) { return at::full({}, value, at::kFloat); }

std::vector<int64_t> pool_pads(const std::vector<int64_t>& padding) {
  return {padding[0], padding[1], padding[0], padding[1]};
}

/// Adaptive pooling to `output` (entries < 0: keep the input size) as Global*Pool or a plain pool
/// with kernel = stride = input / output; other sizes are refused.
OnnxValue adaptive_pool(OnnxGraph& g, nn::Module& m, const std::string& path,
                        const OnnxValue& input, std::vector<int64_t> output, bool max,
                        at::Tensor out) {
  const at::Tensor& x = input.example;
  FRUGAL_CHECK(x.dim() == 4, "export_onnx: ", describe(m, path),
               " needs an N x C x H x W input, got ", shape_of(x));
  for (int axis = 0; axis < 2; ++axis) {
    if (output[axis] < 0) output[axis] = x.size(axis + 2);
  }
  if (output[0] == 1 && output[1] == 1) {
    return g.node(max ? "GlobalMaxPool" : "GlobalAveragePool", {input.name}, out, {}, path);
  }
  std::vector<int64_t> kernel(2);
  for (int axis = 0; axis < 2; ++axis) {
    FRUGAL_CHECK(x.size(axis + 2) % output[axis] == 0, "export_onnx: ", describe(m, path),
                 " pools ", shape_of(x), " to ", output[0], " x ", output[1],
                 "; ONNX has no adaptive pooling, so only an output of 1 or one that divides "
                 "the input evenly is exported");
    kernel[axis] = x.size(axis + 2) / output[axis];
  }
  return g.node(max ? "MaxPool" : "AveragePool", {input.name}, out,
                {{"kernel_shape", kernel}, {"strides", kernel}}, path);
}

template <typename Impl>
Impl* as(nn::Module& m) {
  return dynamic_cast<Impl*>(&m);
}

}  // namespace

OnnxValue OnnxGraph::module(nn::Module& m, const std::string& path, const OnnxValue& input) {
  try {
    return walk(m, path, input);
  } catch (const c10::Error& e) {
    // LibTorch refused the example input (wrong shape for this layer): say where.
    FRUGAL_CHECK(false, "export_onnx: ", describe(m, path), " fails on an input of shape ",
                 shape_of(input.example), ": ", e.what_without_backtrace());
  }
  return input;
}

OnnxValue OnnxGraph::walk(nn::Module& m, const std::string& path, const OnnxValue& input) {
  OnnxGraph& g = *this;
  const at::Tensor& x = input.example;
  if (auto* own = dynamic_cast<OnnxExportable*>(&m)) return own->export_onnx(g, path, input);
  if (auto* seq = as<nn::SequentialImpl>(m)) {
    const auto children = seq->named_children();
    OnnxValue value = input;
    for (size_t i = 0; i < children.size(); ++i) {
      const std::string child_path = join_path(path, children[i].key());
      nn::Module& child = *children[i].value();
      auto* conv = as<nn::Conv2dImpl>(child);
      if (conv != nullptr && impl_->options.fold_batch_norm && i + 1 < children.size() &&
          dynamic_cast<OnnxExportable*>(&child) == nullptr) {
        if (auto* bn = as<nn::BatchNorm2dImpl>(*children[i + 1].value())) {
          value = conv2d(*conv, bn, child_path, value);
          ++i;
          continue;
        }
      }
      value = module(child, child_path, value);
    }
    return value;
  }
  if (auto* conv = as<nn::Conv2dImpl>(m)) return conv2d(*conv, nullptr, path, input);
  if (auto* bn = as<nn::BatchNorm2dImpl>(m)) return batch_norm_op(g, *bn, path, input);
  if (auto* bn = as<nn::BatchNorm1dImpl>(m)) return batch_norm_op(g, *bn, path, input);
  if (auto* lin = as<nn::LinearImpl>(m)) return linear(*lin, path, input);
  if (as<nn::ReLUImpl>(m)) return relu(input, path);
  if (as<nn::ReLU6Impl>(m)) {
    return node("Clip",
                {input.name, initializer(path + ".min", scalar(0.0f)),
                 initializer(path + ".max", scalar(6.0f))},
                at::clamp(x, 0.0, 6.0), {}, path);
  }
  if (auto* leaky = as<nn::LeakyReLUImpl>(m)) {
    return node("LeakyRelu", {input.name}, leaky->forward(x),
                {{"alpha", static_cast<float>(leaky->options.negative_slope())}}, path);
  }
  if (as<nn::SiLUImpl>(m)) return silu(input, path);
  if (as<nn::SigmoidImpl>(m)) return sigmoid(input, path);
  if (as<nn::TanhImpl>(m)) return node("Tanh", {input.name}, at::tanh(x), {}, path);
  if (auto* gelu = as<nn::GELUImpl>(m)) {
    const std::string approximate = gelu->options.approximate();
    at::Tensor out = gelu->forward(x);
    if (approximate == "tanh") {
      // 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
      OnnxValue cube =
          node("Pow", {input.name, initializer(path + ".three", scalar(3.0f))}, x.pow(3), {}, path);
      OnnxValue scaled = node("Mul", {cube.name, initializer(path + ".c", scalar(0.044715f))},
                              cube.example * 0.044715, {}, path);
      OnnxValue inner = add(input, scaled, path);
      const float k = static_cast<float>(std::sqrt(2.0 / M_PI));
      OnnxValue arg = node("Mul", {inner.name, initializer(path + ".k", scalar(k))},
                           inner.example * k, {}, path);
      OnnxValue t = node("Tanh", {arg.name}, at::tanh(arg.example), {}, path);
      OnnxValue one =
          node("Add", {t.name, initializer(path + ".one", scalar(1.0f))}, t.example + 1, {}, path);
      OnnxValue prod = mul(input, one, path);
      return node("Mul", {prod.name, initializer(path + ".half", scalar(0.5f))}, out, {}, path);
    }
    FRUGAL_CHECK(approximate == "none", "export_onnx: ", describe(m, path), " has approximate='",
                 approximate, "'; expected 'none' or 'tanh'");
    // opset 17 has no Gelu: 0.5 x (1 + erf(x / sqrt(2)))
    OnnxValue scaled =
        node("Div", {input.name, initializer(path + ".sqrt2", scalar(std::sqrt(2.0f)))},
             x / std::sqrt(2.0), {}, path);
    OnnxValue e = node("Erf", {scaled.name}, at::erf(scaled.example), {}, path);
    OnnxValue one =
        node("Add", {e.name, initializer(path + ".one", scalar(1.0f))}, e.example + 1, {}, path);
    OnnxValue prod = mul(input, one, path);
    return node("Mul", {prod.name, initializer(path + ".half", scalar(0.5f))}, out, {}, path);
  }
  if (auto* softmax = as<nn::SoftmaxImpl>(m)) {
    return node("Softmax", {input.name}, softmax->forward(x), {{"axis", softmax->options.dim()}},
                path);
  }
  if (auto* log_softmax = as<nn::LogSoftmaxImpl>(m)) {
    return node("LogSoftmax", {input.name}, log_softmax->forward(x),
                {{"axis", log_softmax->options.dim()}}, path);
  }
  if (auto* pool = as<nn::MaxPool2dImpl>(m)) {
    FRUGAL_CHECK(x.dim() == 4, "export_onnx: ", describe(m, path),
                 " needs an N x C x H x W input, got ", shape_of(x));
    const auto& o = pool->options;
    return node("MaxPool", {input.name}, pool->forward(x),
                {{"kernel_shape", to_vector(o.kernel_size())},
                 {"strides", to_vector(o.stride())},
                 {"pads", pool_pads(to_vector(o.padding()))},
                 {"dilations", to_vector(o.dilation())},
                 {"ceil_mode", int64_t{o.ceil_mode() ? 1 : 0}}},
                path);
  }
  if (auto* pool = as<nn::AvgPool2dImpl>(m)) {
    FRUGAL_CHECK(x.dim() == 4, "export_onnx: ", describe(m, path),
                 " needs an N x C x H x W input, got ", shape_of(x));
    const auto& o = pool->options;
    FRUGAL_CHECK(!o.divisor_override().has_value(), "export_onnx: ", describe(m, path),
                 " has a divisor_override, which ONNX's AveragePool does not have");
    FRUGAL_CHECK(!o.ceil_mode(), "export_onnx: ", describe(m, path),
                 " uses ceil_mode, whose edge windows ONNX's AveragePool averages differently");
    return node("AveragePool", {input.name}, pool->forward(x),
                {{"kernel_shape", to_vector(o.kernel_size())},
                 {"strides", to_vector(o.stride())},
                 {"pads", pool_pads(to_vector(o.padding()))},
                 {"count_include_pad", int64_t{o.count_include_pad() ? 1 : 0}}},
                path);
  }
  if (auto* pool = as<nn::AdaptiveAvgPool2dImpl>(m)) {
    std::vector<int64_t> output;
    for (const auto& size : *pool->options.output_size()) output.push_back(size ? *size : -1);
    return adaptive_pool(g, m, path, input, output, /*max=*/false, pool->forward(x));
  }
  if (auto* pool = as<nn::AdaptiveMaxPool2dImpl>(m)) {
    std::vector<int64_t> output;
    for (const auto& size : *pool->options.output_size()) output.push_back(size ? *size : -1);
    return adaptive_pool(g, m, path, input, output, /*max=*/true, pool->forward(x));
  }
  if (auto* flatten = as<nn::FlattenImpl>(m)) {
    const int64_t rank = x.dim();
    int64_t start = flatten->options.start_dim();
    int64_t end = flatten->options.end_dim();
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    FRUGAL_CHECK(start >= 1 && start <= end && end < rank, "export_onnx: ", describe(m, path),
                 " flattens dimensions ", flatten->options.start_dim(), " to ",
                 flatten->options.end_dim(), " of ", shape_of(x),
                 "; only flattening that keeps the batch dimension is exported");
    at::Tensor out = flatten->forward(x);
    if (end == rank - 1) {
      if (start == 1) return node("Flatten", {input.name}, out, {{"axis", int64_t{1}}}, path);
    }
    // Reshape: 0 copies a leading dimension (the batch stays dynamic), -1 takes the rest.
    std::vector<int64_t> shape(static_cast<size_t>(start), 0);
    shape.push_back(-1);
    for (int64_t d = end + 1; d < rank; ++d) shape.push_back(x.size(d));
    return node("Reshape", {input.name, initializer(path + ".shape", at::tensor(shape, at::kLong))},
                out, {}, path);
  }
  if (as<nn::IdentityImpl>(m) || as<nn::DropoutImpl>(m) || as<nn::Dropout2dImpl>(m) ||
      as<nn::Dropout3dImpl>(m) || as<nn::AlphaDropoutImpl>(m) ||
      as<nn::FeatureAlphaDropoutImpl>(m)) {
    return input;  // identity in eval mode
  }
  FRUGAL_CHECK(false, "export_onnx: cannot export ", describe(m, path),
               ": not a supported layer (see docs/deploy.md); implement "
               "frugal::deploy::OnnxExportable in it to emit its own ONNX nodes");
  return input;
}

}  // namespace deploy

namespace {

/// The shape of a graph input or output: dimension 0 symbolic ("batch") when dynamic.
[[maybe_unused]] std::vector<int64_t> io_dims(const at::Tensor& example, bool dynamic_batch) {
  std::vector<int64_t> dims(example.sizes().begin(), example.sizes().end());
  if (dynamic_batch && !dims.empty()) dims[0] = -1;
  return dims;
}

/// Restores a module's training flag (on every submodule) when it goes out of scope.
class EvalScope {
 public:
  explicit EvalScope(nn::Module& module) : module_(module) {
    for (const auto& m : module.modules(/*include_self=*/true))
      training_.push_back(m->is_training());
    module.eval();
  }
  ~EvalScope() {
    const auto all = module_.modules(/*include_self=*/true);
    for (size_t i = 0; i < all.size() && i < training_.size(); ++i) all[i]->train(training_[i]);
  }

 private:
  nn::Module& module_;
  std::vector<bool> training_;
};

}  // namespace

namespace deploy {

const OnnxAttribute* find_attribute(const GraphNode& node, const std::string& name) {
  for (const auto& a : node.attributes) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

CapturedGraph capture_graph(torch::nn::Module& module, const at::Tensor& example_input,
                            const OnnxExportOptions& options, const char* who) {
  FRUGAL_CHECK(options.opset == 17, who,
               ": options.opset must be 17 (the operator set the exporter writes), got ",
               options.opset);
  FRUGAL_CHECK(!options.input_name.empty() && !options.output_name.empty() &&
                   options.input_name != options.output_name,
               who, ": options.input_name and options.output_name must be non-empty and differ, ",
               "got '", options.input_name, "' and '", options.output_name, "'");
  FRUGAL_CHECK(example_input.defined(), who, ": example_input is undefined");
  FRUGAL_CHECK(example_input.scalar_type() == at::kFloat && example_input.dim() >= 1, who,
               ": example_input must be a float32 tensor with a batch dimension, got ",
               example_input.scalar_type(), " of shape ", example_input.sizes());
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    FRUGAL_CHECK(p.value().scalar_type() == at::kFloat, who, ": parameter '", p.key(), "' is ",
                 p.value().scalar_type(), "; use a float32 model");
  }
  CapturedGraph captured;
  captured.input = options.input_name;
  auto impl = std::make_unique<OnnxExporter::Impl>();
  impl->options = options;
  impl->graph = &captured;
  impl->names.insert(options.input_name);
  impl->names.insert(options.output_name);
  OnnxGraph g = OnnxExporter::make(std::move(impl));
  OnnxValue result;
  {
    EvalScope eval(module);
    torch::NoGradGuard no_grad;
    OnnxValue input{options.input_name, example_input};
    result = g.module(module, "", input);
  }
  FRUGAL_CHECK(result.example.defined() && result.example.scalar_type() == at::kFloat, who,
               ": the model's output must be a float32 tensor");
  captured.output = result.name;
  captured.example_output = result.example;
  return captured;
}

}  // namespace deploy

#if !defined(FRUGAL_WITH_ONNX)

bool onnx_export_available() { return false; }

std::string export_onnx_to_string(torch::nn::Module&, const at::Tensor&, const OnnxExportOptions&) {
  FRUGAL_CHECK(false,
               "export_onnx: this build of frugal has no ONNX export; it needs protobuf "
               "(libprotobuf-dev, protobuf-compiler) and ONNX's onnx.proto (libonnx-dev) at "
               "configure time");
  return {};
}

#else  // FRUGAL_WITH_ONNX

bool onnx_export_available() { return true; }

std::string export_onnx_to_string(torch::nn::Module& module, const at::Tensor& example_input,
                                  const OnnxExportOptions& options) {
  const deploy::CapturedGraph captured = deploy::capture_graph(module, example_input, options);
  // IR version 8 goes with opset 17 (onnx/helper.py VERSION_TABLE).
  deploy::proto::ModelWriter writer(options.opset, /*ir_version=*/8, options.graph_name, "frugal");
  for (const auto& name : captured.initializer_order) {
    const at::Tensor& t = captured.initializers.at(name);
    const auto type = t.scalar_type() == at::kLong ? deploy::proto::DataType::kInt64
                                                   : deploy::proto::DataType::kFloat;
    // raw_data is little-endian, C order, which is what x86-64 and ARM hold in memory.
    writer.add_initializer(name, type, {t.sizes().begin(), t.sizes().end()}, t.data_ptr(),
                           t.nbytes());
  }
  for (const auto& n : captured.nodes) {
    std::vector<deploy::proto::Attribute> attributes;
    for (const auto& a : n.attributes) attributes.push_back({a.name, a.value});
    writer.add_node(n.name, n.op_type, n.inputs, {n.output}, attributes);
  }
  // The graph output gets its own name (the model may even be an identity).
  writer.add_node("output/Identity", "Identity", {captured.output}, {options.output_name}, {});
  writer.add_input(options.input_name, io_dims(example_input, options.dynamic_batch), "batch");
  writer.add_output(options.output_name, io_dims(captured.example_output, options.dynamic_batch),
                    "batch");
  std::string bytes;
  FRUGAL_CHECK(writer.serialize(&bytes),
               "export_onnx: protobuf could not serialize the model (over 2 GB?)");
  return bytes;
}

#endif  // FRUGAL_WITH_ONNX

void export_onnx(torch::nn::Module& module, const at::Tensor& example_input,
                 const std::string& path, const OnnxExportOptions& options) {
  FRUGAL_CHECK(!path.empty(), "export_onnx: path is empty");
  const std::string bytes = export_onnx_to_string(module, example_input, options);
  detail::write_file_atomically(path, bytes);
}

}  // namespace frugal

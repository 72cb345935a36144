// The model zoo: torchvision 0.14's ResNet, MobileNetV2/V3 and EfficientNet-B0 in LibTorch.
#include "frugal/models/zoo.h"

#include <torch/torch.h>

#include <cmath>

#include "frugal/error.h"

namespace frugal::models {

at::Tensor SeqImpl::forward(at::Tensor x) { return torch::nn::SequentialImpl::forward(x); }

at::Tensor HardswishImpl::forward(at::Tensor x) { return torch::hardswish(x); }

at::Tensor HardsigmoidImpl::forward(at::Tensor x) { return torch::hardsigmoid(x); }

namespace {
// The ONNX path of a child: "layer1" at the root, "features.3.block" below it.
std::string child_path(const std::string& path, const std::string& name) {
  return path.empty() ? name : path + "." + name;
}

// The networks' head input, torch::flatten(adaptive_avg_pool2d(x, 1), 1): GlobalAveragePool, then
// the exporter's own nn::Flatten case.
deploy::OnnxValue pool_and_flatten(deploy::OnnxGraph& g, const std::string& path,
                                   const deploy::OnnxValue& x) {
  torch::nn::Flatten flatten;
  return g.module(*flatten, child_path(path, "flatten"),
                  g.global_average_pool(x, child_path(path, "avgpool")));
}
}  // namespace

deploy::OnnxValue HardswishImpl::export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                             const deploy::OnnxValue& x) {
  return g.hardswish(x, path);
}

deploy::OnnxValue HardsigmoidImpl::export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                               const deploy::OnnxValue& x) {
  return g.hardsigmoid(x, path);
}

torch::nn::AnyModule make_activation(Activation activation) {
  switch (activation) {
    case Activation::kNone:
      return torch::nn::AnyModule(torch::nn::Identity());
    case Activation::kReLU:
      return torch::nn::AnyModule(torch::nn::ReLU());
    case Activation::kReLU6:
      return torch::nn::AnyModule(torch::nn::ReLU6());
    case Activation::kHardswish:
      return torch::nn::AnyModule(Hardswish());
    case Activation::kHardsigmoid:
      return torch::nn::AnyModule(Hardsigmoid());
    case Activation::kSiLU:
      return torch::nn::AnyModule(torch::nn::SiLU());
    case Activation::kSigmoid:
      return torch::nn::AnyModule(torch::nn::Sigmoid());
  }
  FRUGAL_CHECK(false, "make_activation: unknown activation");
  return {};
}

SqueezeExcitationImpl::SqueezeExcitationImpl(int64_t input_channels, int64_t squeeze_channels,
                                             Activation activation, Activation scale_activation)
    : activation_(make_activation(activation)),
      scale_activation_(make_activation(scale_activation)) {
  register_module("avgpool", torch::nn::AdaptiveAvgPool2d(1));
  fc1 = register_module(
      "fc1", torch::nn::Conv2d(torch::nn::Conv2dOptions(input_channels, squeeze_channels, 1)));
  fc2 = register_module(
      "fc2", torch::nn::Conv2d(torch::nn::Conv2dOptions(squeeze_channels, input_channels, 1)));
  register_module("activation", activation_.ptr());
  register_module("scale_activation", scale_activation_.ptr());
}

at::Tensor SqueezeExcitationImpl::forward(at::Tensor x) {
  auto scale = torch::adaptive_avg_pool2d(x, {1, 1});
  scale = fc1->forward(scale);
  scale = activation_.forward(scale);
  scale = fc2->forward(scale);
  scale = scale_activation_.forward(scale);
  return scale * x;
}

deploy::OnnxValue SqueezeExcitationImpl::export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                                     const deploy::OnnxValue& x) {
  auto scale = g.global_average_pool(x, child_path(path, "avgpool"));
  scale = g.conv2d(*fc1, nullptr, child_path(path, "fc1"), scale);
  scale = g.module(*activation_.ptr(), child_path(path, "activation"), scale);
  scale = g.conv2d(*fc2, nullptr, child_path(path, "fc2"), scale);
  scale = g.module(*scale_activation_.ptr(), child_path(path, "scale_activation"), scale);
  return g.mul(scale, x, path);
}

StochasticDepthImpl::StochasticDepthImpl(double p) : p_(p) {
  FRUGAL_CHECK(p >= 0.0 && p <= 1.0, "StochasticDepth: drop probability must be in [0, 1], got ",
               p);
}

at::Tensor StochasticDepthImpl::forward(at::Tensor x) {
  if (!is_training() || p_ == 0.0) return x;
  const double survival = 1.0 - p_;
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  auto noise = torch::empty(shape, x.options()).bernoulli_(survival);
  if (survival > 0.0) noise.div_(survival);
  return x * noise;
}

deploy::OnnxValue StochasticDepthImpl::export_onnx(deploy::OnnxGraph&, const std::string&,
                                                   const deploy::OnnxValue& x) {
  return x;
}

int64_t make_divisible(double v, int64_t divisor, int64_t min_value) {
  if (min_value <= 0) min_value = divisor;
  int64_t new_v =
      std::max<int64_t>(min_value, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(new_v) < 0.9 * v) new_v += divisor;
  return new_v;
}

Seq Conv2dNormActivation(int64_t in, int64_t out, int64_t kernel_size, int64_t stride,
                         int64_t groups, Activation activation, NormOptions norm,
                         int64_t dilation) {
  Seq seq;
  seq->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel_size)
                                       .stride(stride)
                                       .padding((kernel_size - 1) / 2 * dilation)
                                       .dilation(dilation)
                                       .groups(groups)
                                       .bias(false)));
  seq->push_back(torch::nn::BatchNorm2d(
      torch::nn::BatchNorm2dOptions(out).eps(norm.eps).momentum(norm.momentum)));
  if (activation != Activation::kNone) seq->push_back(make_activation(activation));
  return seq;
}

namespace {

// A block with one Sequential body (named `body_name`: "conv" in MobileNetV2, "block" in V3 and
// EfficientNet), an optional residual connection and optional stochastic depth on the branch.
class ResidualBlockImpl : public torch::nn::Module, public deploy::OnnxExportable {
 public:
  ResidualBlockImpl(const std::string& body_name, Seq body, bool use_residual,
                    double stochastic_depth_p = -1.0)
      : use_residual_(use_residual), body_name_(body_name) {
    body_ = register_module(body_name, std::move(body));
    if (stochastic_depth_p >= 0.0)
      stochastic_depth_ = register_module("stochastic_depth", StochasticDepth(stochastic_depth_p));
  }
  at::Tensor forward(at::Tensor x) {
    auto result = body_->forward(x);
    if (!use_residual_) return result;
    if (stochastic_depth_) result = stochastic_depth_->forward(result);
    return result + x;
  }
  // Stochastic depth is the identity in eval mode.
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override {
    auto result = g.module(*body_, child_path(path, body_name_), x);
    return use_residual_ ? g.add(result, x, path) : result;
  }

 private:
  bool use_residual_;
  std::string body_name_;
  Seq body_{nullptr};
  StochasticDepth stochastic_depth_{nullptr};
};
TORCH_MODULE(ResidualBlock);

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(padding).bias(false));
}

// torchvision.models.resnet.BasicBlock (expansion 1) and Bottleneck (expansion 4).
class ResNetBlockImpl : public torch::nn::Module, public deploy::OnnxExportable {
 public:
  ResNetBlockImpl(bool bottleneck, int64_t inplanes, int64_t planes, int64_t stride)
      : bottleneck_(bottleneck) {
    const int64_t out = planes * (bottleneck ? 4 : 1);
    if (bottleneck) {
      conv1 = register_module("conv1", conv(inplanes, planes, 1, 1, 0));
      bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
      conv2 = register_module("conv2", conv(planes, planes, 3, stride, 1));
      bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
      conv3 = register_module("conv3", conv(planes, out, 1, 1, 0));
      bn3 = register_module("bn3", torch::nn::BatchNorm2d(out));
    } else {
      conv1 = register_module("conv1", conv(inplanes, planes, 3, stride, 1));
      bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
      conv2 = register_module("conv2", conv(planes, planes, 3, 1, 1));
      bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
    }
    if (stride != 1 || inplanes != out) {
      Seq down;
      down->push_back(conv(inplanes, out, 1, stride, 0));
      down->push_back(torch::nn::BatchNorm2d(out));
      downsample = register_module("downsample", down);
    }
  }
  at::Tensor forward(at::Tensor x) {
    auto out = torch::relu(bn1->forward(conv1->forward(x)));
    out = bn2->forward(conv2->forward(out));
    if (bottleneck_) out = bn3->forward(conv3->forward(torch::relu(out)));
    auto identity = downsample ? downsample->forward(x) : x;
    return torch::relu(out + identity);
  }
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override {
    auto conv_bn = [&](torch::nn::Conv2d& c, torch::nn::BatchNorm2d& b, const char* index,
                       const deploy::OnnxValue& in) {
      return g.conv_bn(*c, *b, child_path(path, std::string("conv") + index),
                       child_path(path, std::string("bn") + index), in);
    };
    auto out = conv_bn(conv2, bn2, "2", g.relu(conv_bn(conv1, bn1, "1", x), path));
    if (bottleneck_) out = conv_bn(conv3, bn3, "3", g.relu(out, path));
    auto identity = downsample ? g.module(*downsample, child_path(path, "downsample"), x) : x;
    return g.relu(g.add(out, identity, path), path);
  }
  // The last BatchNorm of the branch (zero_init_residual).
  torch::nn::BatchNorm2d last_bn() const { return bottleneck_ ? bn3 : bn2; }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  Seq downsample{nullptr};

 private:
  bool bottleneck_;
};
TORCH_MODULE(ResNetBlock);

void init_conv_bn(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* c = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (c->bias.defined()) c->bias.zero_();
    } else if (auto* b = m->as<torch::nn::BatchNorm2d>()) {
      b->weight.fill_(1.0);
      b->bias.zero_();
    }
  }
}

}  // namespace

// ---- ResNet ----

ResNetModelImpl::ResNetModelImpl(std::vector<int64_t> layers, bool bottleneck, int64_t num_classes,
                                 int64_t in_channels, bool zero_init_residual) {
  FRUGAL_CHECK(layers.size() == 4, "resnet: expected 4 stage depths, got ", layers.size());
  FRUGAL_CHECK(num_classes > 0, "resnet: num_classes must be positive, got ", num_classes);
  FRUGAL_CHECK(in_channels > 0, "resnet: in_channels must be positive, got ", in_channels);
  conv1 = register_module("conv1", conv(in_channels, 64, 7, 2, 3));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(64));
  maxpool = register_module(
      "maxpool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
  int64_t inplanes = 64;
  const int64_t expansion = bottleneck ? 4 : 1;
  Seq* stages[4] = {&layer1, &layer2, &layer3, &layer4};
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = int64_t{64} << s;
    Seq stage;
    for (int64_t b = 0; b < layers[s]; ++b) {
      stage->push_back(ResNetBlock(bottleneck, inplanes, planes, (b == 0 && s > 0) ? 2 : 1));
      inplanes = planes * expansion;
    }
    *stages[s] = register_module("layer" + std::to_string(s + 1), stage);
  }
  fc = register_module("fc", torch::nn::Linear(512 * expansion, num_classes));
  init_conv_bn(*this);
  if (zero_init_residual) {
    torch::NoGradGuard no_grad;
    for (auto& m : modules(false))
      if (auto* block = m->as<ResNetBlockImpl>()) block->last_bn()->weight.zero_();
  }
}

at::Tensor ResNetModelImpl::forward(at::Tensor x) {
  x = torch::relu(bn1->forward(conv1->forward(x)));
  x = maxpool->forward(x);
  x = layer4->forward(layer3->forward(layer2->forward(layer1->forward(x))));
  x = torch::flatten(torch::adaptive_avg_pool2d(x, {1, 1}), 1);
  return fc->forward(x);
}

deploy::OnnxValue ResNetModelImpl::export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                               const deploy::OnnxValue& input) {
  auto x = g.relu(
      g.conv_bn(*conv1, *bn1, child_path(path, "conv1"), child_path(path, "bn1"), input), path);
  x = g.module(*maxpool, child_path(path, "maxpool"), x);
  Seq* stages[4] = {&layer1, &layer2, &layer3, &layer4};
  for (int s = 0; s < 4; ++s)
    x = g.module(**stages[s], child_path(path, "layer" + std::to_string(s + 1)), x);
  x = pool_and_flatten(g, path, x);
  return g.linear(*fc, child_path(path, "fc"), x);
}

void ResNetModelImpl::reset_classifier(int64_t num_classes) {
  FRUGAL_CHECK(num_classes > 0, "reset_classifier: num_classes must be positive, got ",
               num_classes);
  auto device = fc->weight.device();
  fc = replace_module("fc", torch::nn::Linear(fc->options.in_features(), num_classes));
  fc->to(device);
}

ResNetModel resnet18(int64_t num_classes, int64_t in_channels, bool zero_init_residual) {
  return ResNetModel(std::vector<int64_t>{2, 2, 2, 2}, false, num_classes, in_channels,
                     zero_init_residual);
}
ResNetModel resnet34(int64_t num_classes, int64_t in_channels, bool zero_init_residual) {
  return ResNetModel(std::vector<int64_t>{3, 4, 6, 3}, false, num_classes, in_channels,
                     zero_init_residual);
}
ResNetModel resnet50(int64_t num_classes, int64_t in_channels, bool zero_init_residual) {
  return ResNetModel(std::vector<int64_t>{3, 4, 6, 3}, true, num_classes, in_channels,
                     zero_init_residual);
}

// ---- features + classifier networks ----

at::Tensor FeaturesClassifierImpl::forward(at::Tensor x) {
  x = features->forward(x);
  x = torch::flatten(torch::adaptive_avg_pool2d(x, {1, 1}), 1);
  return classifier->forward(x);
}

deploy::OnnxValue FeaturesClassifierImpl::export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                                      const deploy::OnnxValue& input) {
  auto x = g.module(*features, child_path(path, "features"), input);
  x = pool_and_flatten(g, path, x);
  return g.module(*classifier, child_path(path, "classifier"), x);
}

namespace {
torch::nn::Linear last_linear(const Seq& classifier) {
  auto last = classifier->ptr(classifier->size() - 1);
  auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(last);
  FRUGAL_CHECK(linear != nullptr, "classifier: its last layer is not a Linear");
  return torch::nn::Linear(linear);
}

void init_linear(torch::nn::LinearImpl& l, FeaturesClassifierImpl::LinearInit init) {
  torch::NoGradGuard no_grad;
  if (init == FeaturesClassifierImpl::LinearInit::kNormal001) {
    l.weight.normal_(0.0, 0.01);
  } else {
    const double range = 1.0 / std::sqrt(static_cast<double>(l.options.out_features()));
    l.weight.uniform_(-range, range);
  }
  l.bias.zero_();
}
}  // namespace

int64_t FeaturesClassifierImpl::num_classes() const {
  return last_linear(classifier)->options.out_features();
}

void FeaturesClassifierImpl::init_weights(LinearInit init) {
  linear_init = init;
  init_conv_bn(*this);
  for (auto& m : modules(false))
    if (auto* l = m->as<torch::nn::Linear>()) init_linear(*l, init);
}

void FeaturesClassifierImpl::reset_classifier(int64_t num_classes) {
  FRUGAL_CHECK(num_classes > 0, "reset_classifier: num_classes must be positive, got ",
               num_classes);
  auto old = last_linear(classifier);
  torch::nn::Linear fresh(old->options.in_features(), num_classes);
  init_linear(*fresh, linear_init);
  fresh->to(old->weight.device());
  // Sequential keeps its children in a vector and in the named-children map: rebuild the head.
  Seq head;
  auto it = classifier->begin();
  for (size_t i = 0; i + 1 < classifier->size(); ++i, ++it) head->push_back(*it);
  head->push_back(fresh);
  classifier = replace_module("classifier", head);
}

FeaturesClassifier mobilenet_v2(int64_t num_classes, int64_t in_channels, double width_mult,
                                double dropout) {
  FRUGAL_CHECK(num_classes > 0, "mobilenet_v2: num_classes must be positive, got ", num_classes);
  FRUGAL_CHECK(in_channels > 0, "mobilenet_v2: in_channels must be positive, got ", in_channels);
  FRUGAL_CHECK(width_mult > 0, "mobilenet_v2: width_mult must be positive, got ", width_mult);
  FRUGAL_CHECK(dropout >= 0 && dropout < 1, "mobilenet_v2: dropout must be in [0, 1), got ",
               dropout);
  FeaturesClassifier net;
  const int64_t settings[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int64_t input_channel = make_divisible(32 * width_mult, 8);
  const int64_t last_channel = make_divisible(1280 * std::max(1.0, width_mult), 8);
  Seq features;
  features->push_back(
      Conv2dNormActivation(in_channels, input_channel, 3, 2, 1, Activation::kReLU6));
  for (const auto& s : settings) {
    const int64_t t = s[0], c = s[1], n = s[2], stride0 = s[3];
    const int64_t output_channel = make_divisible(c * width_mult, 8);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t stride = i == 0 ? stride0 : 1;
      const auto hidden = static_cast<int64_t>(std::round(input_channel * static_cast<double>(t)));
      Seq body;
      if (t != 1)
        body->push_back(Conv2dNormActivation(input_channel, hidden, 1, 1, 1, Activation::kReLU6));
      body->push_back(Conv2dNormActivation(hidden, hidden, 3, stride, hidden, Activation::kReLU6));
      body->push_back(conv(hidden, output_channel, 1, 1, 0));
      body->push_back(torch::nn::BatchNorm2d(output_channel));
      features->push_back(
          ResidualBlock("conv", body, stride == 1 && input_channel == output_channel));
      input_channel = output_channel;
    }
  }
  features->push_back(
      Conv2dNormActivation(input_channel, last_channel, 1, 1, 1, Activation::kReLU6));
  Seq classifier;
  classifier->push_back(torch::nn::Dropout(dropout));
  classifier->push_back(torch::nn::Linear(last_channel, num_classes));
  net->features = net->register_module("features", features);
  net->classifier = net->register_module("classifier", classifier);
  net->init_weights(FeaturesClassifierImpl::LinearInit::kNormal001);
  return net;
}

namespace {
struct V3Block {
  int64_t in, kernel, expanded, out;
  bool se, hs;
  int64_t stride, dilation;
};

FeaturesClassifier mobilenet_v3(const char* name, bool large, int64_t num_classes,
                                int64_t in_channels, double width_mult, double dropout,
                                bool reduced_tail, bool dilated) {
  FRUGAL_CHECK(num_classes > 0, name, ": num_classes must be positive, got ", num_classes);
  FRUGAL_CHECK(in_channels > 0, name, ": in_channels must be positive, got ", in_channels);
  FRUGAL_CHECK(width_mult > 0, name, ": width_mult must be positive, got ", width_mult);
  FRUGAL_CHECK(dropout >= 0 && dropout < 1, name, ": dropout must be in [0, 1), got ", dropout);
  const int64_t rd = reduced_tail ? 2 : 1, dil = dilated ? 2 : 1;
  std::vector<V3Block> blocks;
  if (large) {
    blocks = {{16, 3, 16, 16, false, false, 1, 1},
              {16, 3, 64, 24, false, false, 2, 1},
              {24, 3, 72, 24, false, false, 1, 1},
              {24, 5, 72, 40, true, false, 2, 1},
              {40, 5, 120, 40, true, false, 1, 1},
              {40, 5, 120, 40, true, false, 1, 1},
              {40, 3, 240, 80, false, true, 2, 1},
              {80, 3, 200, 80, false, true, 1, 1},
              {80, 3, 184, 80, false, true, 1, 1},
              {80, 3, 184, 80, false, true, 1, 1},
              {80, 3, 480, 112, true, true, 1, 1},
              {112, 3, 672, 112, true, true, 1, 1},
              {112, 5, 672, 160 / rd, true, true, 2, dil},
              {160 / rd, 5, 960 / rd, 160 / rd, true, true, 1, dil},
              {160 / rd, 5, 960 / rd, 160 / rd, true, true, 1, dil}};
  } else {
    blocks = {{16, 3, 16, 16, true, false, 2, 1},
              {16, 3, 72, 24, false, false, 2, 1},
              {24, 3, 88, 24, false, false, 1, 1},
              {24, 5, 96, 40, true, true, 2, 1},
              {40, 5, 240, 40, true, true, 1, 1},
              {40, 5, 240, 40, true, true, 1, 1},
              {40, 5, 120, 48, true, true, 1, 1},
              {48, 5, 144, 48, true, true, 1, 1},
              {48, 5, 288, 96 / rd, true, true, 2, dil},
              {96 / rd, 5, 576 / rd, 96 / rd, true, true, 1, dil},
              {96 / rd, 5, 576 / rd, 96 / rd, true, true, 1, dil}};
  }
  auto adjust = [&](int64_t c) { return make_divisible(c * width_mult, 8); };
  const int64_t last_channel = adjust((large ? 1280 : 1024) / rd);
  const NormOptions norm{0.001, 0.01};
  Seq features;
  features->push_back(Conv2dNormActivation(in_channels, adjust(blocks[0].in), 3, 2, 1,
                                           Activation::kHardswish, norm));
  for (const auto& b : blocks) {
    const int64_t in = adjust(b.in), expanded = adjust(b.expanded), out = adjust(b.out);
    const Activation act = b.hs ? Activation::kHardswish : Activation::kReLU;
    Seq body;
    if (expanded != in) body->push_back(Conv2dNormActivation(in, expanded, 1, 1, 1, act, norm));
    body->push_back(Conv2dNormActivation(expanded, expanded, b.kernel,
                                         b.dilation > 1 ? 1 : b.stride, expanded, act, norm,
                                         b.dilation));
    if (b.se)
      body->push_back(SqueezeExcitation(expanded, make_divisible(expanded / 4, 8),
                                        Activation::kReLU, Activation::kHardsigmoid));
    body->push_back(Conv2dNormActivation(expanded, out, 1, 1, 1, Activation::kNone, norm));
    features->push_back(ResidualBlock("block", body, b.stride == 1 && in == out));
  }
  const int64_t lastconv_in = adjust(blocks.back().out), lastconv_out = 6 * lastconv_in;
  features->push_back(
      Conv2dNormActivation(lastconv_in, lastconv_out, 1, 1, 1, Activation::kHardswish, norm));
  Seq classifier;
  classifier->push_back(torch::nn::Linear(lastconv_out, last_channel));
  classifier->push_back(Hardswish());
  classifier->push_back(torch::nn::Dropout(dropout));
  classifier->push_back(torch::nn::Linear(last_channel, num_classes));
  FeaturesClassifier net;
  net->features = net->register_module("features", features);
  net->classifier = net->register_module("classifier", classifier);
  net->init_weights(FeaturesClassifierImpl::LinearInit::kNormal001);
  return net;
}
}  // namespace

FeaturesClassifier mobilenet_v3_small(int64_t num_classes, int64_t in_channels, double width_mult,
                                      double dropout, bool reduced_tail, bool dilated) {
  return mobilenet_v3("mobilenet_v3_small", false, num_classes, in_channels, width_mult, dropout,
                      reduced_tail, dilated);
}

FeaturesClassifier mobilenet_v3_large(int64_t num_classes, int64_t in_channels, double width_mult,
                                      double dropout, bool reduced_tail, bool dilated) {
  return mobilenet_v3("mobilenet_v3_large", true, num_classes, in_channels, width_mult, dropout,
                      reduced_tail, dilated);
}

FeaturesClassifier efficientnet_b0(int64_t num_classes, int64_t in_channels, double dropout,
                                   double stochastic_depth_prob) {
  FRUGAL_CHECK(num_classes > 0, "efficientnet_b0: num_classes must be positive, got ", num_classes);
  FRUGAL_CHECK(in_channels > 0, "efficientnet_b0: in_channels must be positive, got ", in_channels);
  FRUGAL_CHECK(dropout >= 0 && dropout < 1, "efficientnet_b0: dropout must be in [0, 1), got ",
               dropout);
  FRUGAL_CHECK(stochastic_depth_prob >= 0 && stochastic_depth_prob <= 1,
               "efficientnet_b0: stochastic_depth_prob must be in [0, 1], got ",
               stochastic_depth_prob);
  // expand_ratio, kernel, stride, input_channels, out_channels, num_layers (width/depth 1.0).
  const int64_t settings[7][6] = {
      {1, 3, 1, 32, 16, 1},  {6, 3, 2, 16, 24, 2},   {6, 5, 2, 24, 40, 2},  {6, 3, 2, 40, 80, 3},
      {6, 5, 1, 80, 112, 3}, {6, 5, 2, 112, 192, 4}, {6, 3, 1, 192, 320, 1}};
  int64_t total_blocks = 0;
  for (const auto& s : settings) total_blocks += s[5];
  Seq features;
  features->push_back(Conv2dNormActivation(in_channels, make_divisible(settings[0][3], 8), 3, 2, 1,
                                           Activation::kSiLU));
  int64_t block_id = 0;
  for (const auto& s : settings) {
    Seq stage;
    for (int64_t i = 0; i < s[5]; ++i) {
      const int64_t in = make_divisible(i == 0 ? s[3] : s[4], 8);
      const int64_t out = make_divisible(s[4], 8);
      const int64_t stride = i == 0 ? s[2] : 1;
      const int64_t expanded = make_divisible(static_cast<double>(in * s[0]), 8);
      Seq body;
      if (expanded != in)
        body->push_back(Conv2dNormActivation(in, expanded, 1, 1, 1, Activation::kSiLU));
      body->push_back(
          Conv2dNormActivation(expanded, expanded, s[1], stride, expanded, Activation::kSiLU));
      body->push_back(SqueezeExcitation(expanded, std::max<int64_t>(1, in / 4), Activation::kSiLU,
                                        Activation::kSigmoid));
      body->push_back(Conv2dNormActivation(expanded, out, 1, 1, 1, Activation::kNone));
      const double sd =
          stochastic_depth_prob * static_cast<double>(block_id) / static_cast<double>(total_blocks);
      stage->push_back(ResidualBlock("block", body, stride == 1 && in == out, sd));
      ++block_id;
    }
    features->push_back(stage);
  }
  const int64_t lastconv_in = make_divisible(settings[6][4], 8), lastconv_out = 4 * lastconv_in;
  features->push_back(Conv2dNormActivation(lastconv_in, lastconv_out, 1, 1, 1, Activation::kSiLU));
  Seq classifier;
  classifier->push_back(torch::nn::Dropout(dropout));
  classifier->push_back(torch::nn::Linear(lastconv_out, num_classes));
  FeaturesClassifier net;
  net->features = net->register_module("features", features);
  net->classifier = net->register_module("classifier", classifier);
  net->init_weights(FeaturesClassifierImpl::LinearInit::kUniformFanOut);
  return net;
}

std::vector<std::string> model_names() {
  return {"resnet18",           "resnet34",           "resnet50",       "mobilenet_v2",
          "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"};
}

std::shared_ptr<ZooModel> create_model(const std::string& name, int64_t num_classes,
                                       int64_t in_channels) {
  if (name == "resnet18") return resnet18(num_classes, in_channels).ptr();
  if (name == "resnet34") return resnet34(num_classes, in_channels).ptr();
  if (name == "resnet50") return resnet50(num_classes, in_channels).ptr();
  if (name == "mobilenet_v2") return mobilenet_v2(num_classes, in_channels).ptr();
  if (name == "mobilenet_v3_small") return mobilenet_v3_small(num_classes, in_channels).ptr();
  if (name == "mobilenet_v3_large") return mobilenet_v3_large(num_classes, in_channels).ptr();
  if (name == "efficientnet_b0") return efficientnet_b0(num_classes, in_channels).ptr();
  FRUGAL_CHECK(false, "create_model: unknown model '", name,
               "' (expected resnet18, resnet34, resnet50, mobilenet_v2, mobilenet_v3_small, "
               "mobilenet_v3_large or efficientnet_b0)");
  return nullptr;
}

}  // namespace frugal::models

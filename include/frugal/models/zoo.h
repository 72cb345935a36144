// A model zoo with torchvision's architectures, names and initialisation (torchvision 0.14):
// ResNet-18/34/50 (V1.5), MobileNetV2, MobileNetV3-Small/Large, EfficientNet-B0. Parameter and
// buffer names equal torchvision's state_dict() keys ("features.3.block.1.fc1.weight",
// "layer2.0.downsample.1.running_var", ...), so weights move between Python and C++ unchanged
// (see frugal/io/weights.h). (The small-image ResNet of models/small.h is another network.) Inputs
// are N x C x H x W float tensors; outputs are N x classes logits. Every model and block exports
// itself to ONNX (frugal/deploy/onnx.h: residual Add, squeeze-excitation Mul, HardSwish,
// stochastic depth as identity).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "frugal/deploy/onnx.h"

namespace frugal::models {

// ---- building blocks (torchvision/ops/misc.py, ops/stochastic_depth.py) ----

/// nn::Sequential that can be nested in another Sequential (its forward is not a template).
/// Children are named "0", "1", ... in insertion order, as in Python's nn.Sequential.
class SeqImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  at::Tensor forward(at::Tensor x);
};
TORCH_MODULE(Seq);

/// x * relu6(x + 3) / 6 (LibTorch 1.13 has the function but no module).
class HardswishImpl : public torch::nn::Cloneable<HardswishImpl>, public deploy::OnnxExportable {
 public:
  void reset() override {}
  at::Tensor forward(at::Tensor x);
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override;
};
TORCH_MODULE(Hardswish);

/// relu6(x + 3) / 6.
class HardsigmoidImpl : public torch::nn::Cloneable<HardsigmoidImpl>,
                        public deploy::OnnxExportable {
 public:
  void reset() override {}
  at::Tensor forward(at::Tensor x);
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override;
};
TORCH_MODULE(Hardsigmoid);

/// Which activation a block uses (parameter-free; it still takes a Sequential index).
enum class Activation { kNone, kReLU, kReLU6, kHardswish, kHardsigmoid, kSiLU, kSigmoid };

/// torchvision.ops.SqueezeExcitation: avgpool -> fc1 (1x1 conv) -> activation -> fc2 ->
/// scale_activation, times the input. Children: avgpool, fc1, fc2, activation, scale_activation.
class SqueezeExcitationImpl : public torch::nn::Module, public deploy::OnnxExportable {
 public:
  SqueezeExcitationImpl(int64_t input_channels, int64_t squeeze_channels,
                        Activation activation = Activation::kReLU,
                        Activation scale_activation = Activation::kSigmoid);
  at::Tensor forward(at::Tensor x);
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override;
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};

 private:
  torch::nn::AnyModule activation_, scale_activation_;
};
TORCH_MODULE(SqueezeExcitation);

/// torchvision.ops.StochasticDepth in "row" mode: in training, each sample's residual branch is
/// zeroed with probability p and the survivors are divided by (1 - p); identity in eval mode.
class StochasticDepthImpl : public torch::nn::Cloneable<StochasticDepthImpl>,
                            public deploy::OnnxExportable {
 public:
  explicit StochasticDepthImpl(double p = 0.0);
  void reset() override {}
  at::Tensor forward(at::Tensor x);
  /// Identity (eval mode).
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override;
  double p() const { return p_; }

 private:
  double p_;
};
TORCH_MODULE(StochasticDepth);

/// BatchNorm settings (torchvision's norm_layer).
struct NormOptions {
  double eps = 1e-5;
  double momentum = 0.1;
};

/// torchvision.ops.Conv2dNormActivation: conv (padding (k-1)/2*dilation, no bias) -> BatchNorm ->
/// activation, as a Seq whose children are "0", "1", "2".
Seq Conv2dNormActivation(int64_t in, int64_t out, int64_t kernel_size = 3, int64_t stride = 1,
                         int64_t groups = 1, Activation activation = Activation::kReLU,
                         NormOptions norm = {}, int64_t dilation = 1);

/// torchvision.models._utils._make_divisible.
int64_t make_divisible(double v, int64_t divisor, int64_t min_value = 0);

/// A torch module built from an Activation (nullptr-free: kNone is an identity).
torch::nn::AnyModule make_activation(Activation activation);

// ---- the models ----

/// Common interface of the zoo's networks.
class ZooModel : public torch::nn::Module, public deploy::OnnxExportable {
 public:
  virtual at::Tensor forward(at::Tensor x) = 0;
  /// Replaces the last Linear layer by a fresh one with `num_classes` outputs (torchvision's
  /// initialisation for that model); its parameters are trainable.
  virtual void reset_classifier(int64_t num_classes) = 0;
  /// Number of classes of the current head.
  virtual int64_t num_classes() const = 0;
  /// Name prefix of the head's parameters ("fc" or "classifier").
  virtual std::string head_prefix() const = 0;
};

/// torchvision.models.ResNet (BasicBlock / Bottleneck, V1.5: stride on the 3x3 conv).
class ResNetModelImpl : public ZooModel {
 public:
  /// `layers` blocks per stage; bottleneck = false for ResNet-18/34.
  ResNetModelImpl(std::vector<int64_t> layers, bool bottleneck, int64_t num_classes,
                  int64_t in_channels, bool zero_init_residual);
  at::Tensor forward(at::Tensor x) override;
  void reset_classifier(int64_t num_classes) override;
  int64_t num_classes() const override { return fc->options.out_features(); }
  std::string head_prefix() const override { return "fc"; }
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override;

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  /// 3x3, stride 2, padding 1 (no parameters: the state_dict keys stay torchvision's).
  torch::nn::MaxPool2d maxpool{nullptr};
  Seq layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNetModel);

/// A features/classifier network (MobileNetV2/V3, EfficientNet): features -> global average
/// pooling -> flatten -> classifier.
class FeaturesClassifierImpl : public ZooModel {
 public:
  at::Tensor forward(at::Tensor x) override;
  void reset_classifier(int64_t num_classes) override;
  int64_t num_classes() const override;
  std::string head_prefix() const override { return "classifier"; }
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override;

  /// How Linear layers are initialised: N(0, 0.01) (MobileNets) or U(+-1/sqrt(out_features))
  /// (EfficientNet); biases zero.
  enum class LinearInit { kNormal001, kUniformFanOut };
  /// torchvision's initialisation: Conv2d kaiming_normal_(fan_out), zero bias; BatchNorm 1 / 0;
  /// Linear as `linear_init`.
  void init_weights(LinearInit linear_init);

  Seq features{nullptr};
  Seq classifier{nullptr};
  LinearInit linear_init = LinearInit::kNormal001;
};
TORCH_MODULE(FeaturesClassifier);

ResNetModel resnet18(int64_t num_classes = 1000, int64_t in_channels = 3,
                     bool zero_init_residual = false);
ResNetModel resnet34(int64_t num_classes = 1000, int64_t in_channels = 3,
                     bool zero_init_residual = false);
ResNetModel resnet50(int64_t num_classes = 1000, int64_t in_channels = 3,
                     bool zero_init_residual = false);
/// torchvision.models.mobilenet_v2 (ReLU6, inverted residuals features.N.conv.M).
FeaturesClassifier mobilenet_v2(int64_t num_classes = 1000, int64_t in_channels = 3,
                                double width_mult = 1.0, double dropout = 0.2);
/// torchvision.models.mobilenet_v3_small / _large (BatchNorm eps 1e-3, momentum 0.01).
FeaturesClassifier mobilenet_v3_small(int64_t num_classes = 1000, int64_t in_channels = 3,
                                      double width_mult = 1.0, double dropout = 0.2,
                                      bool reduced_tail = false, bool dilated = false);
FeaturesClassifier mobilenet_v3_large(int64_t num_classes = 1000, int64_t in_channels = 3,
                                      double width_mult = 1.0, double dropout = 0.2,
                                      bool reduced_tail = false, bool dilated = false);
/// torchvision.models.efficientnet_b0 (SiLU, SE max(1, in/4), stochastic depth
/// stochastic_depth_prob * k / 16 per block k, row mode, training only).
FeaturesClassifier efficientnet_b0(int64_t num_classes = 1000, int64_t in_channels = 3,
                                   double dropout = 0.2, double stochastic_depth_prob = 0.2);

/// A zoo model by torchvision's name ("resnet18", "mobilenet_v3_small", ...), default options.
std::shared_ptr<ZooModel> create_model(const std::string& name, int64_t num_classes = 1000,
                                       int64_t in_channels = 3);
/// The names create_model knows.
std::vector<std::string> model_names();

}  // namespace frugal::models

#include "frugal/models/small.h"

#include <torch/torch.h>

#include "frugal/deploy/onnx.h"
#include "frugal/error.h"

namespace frugal::models {

namespace nn = torch::nn;

namespace {
int64_t after_two_pools(int64_t size) {
  // conv 3x3 with padding 1 keeps the size; each 2x2 max-pool halves it.
  return size / 2 / 2;
}
}  // namespace

torch::nn::Sequential SmallCnn(int64_t classes, int64_t in_channels, int64_t image_size,
                               double dropout) {
  FRUGAL_CHECK(classes >= 2 && in_channels >= 1 && image_size >= 4,
               "SmallCnn: need classes >= 2, in_channels >= 1, image_size >= 4; got ", classes,
               ", ", in_channels, ", ", image_size);
  const int64_t s = after_two_pools(image_size);
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in_channels, 32, 3).padding(1)), nn::ReLU(),
                        nn::MaxPool2d(2), nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1)),
                        nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(), nn::Linear(64 * s * s, 128),
                        nn::ReLU(), nn::Dropout(dropout), nn::Linear(128, classes));
}

torch::nn::Sequential SmallCnnBn(int64_t classes, int64_t in_channels, int64_t image_size) {
  FRUGAL_CHECK(classes >= 2 && in_channels >= 1 && image_size >= 4,
               "SmallCnnBn: need classes >= 2, in_channels >= 1, image_size >= 4; got ", classes,
               ", ", in_channels, ", ", image_size);
  const int64_t s = after_two_pools(image_size);
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in_channels, 32, 3).padding(1).bias(false)),
                        nn::BatchNorm2d(32), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1).bias(false)),
                        nn::BatchNorm2d(64), nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                        nn::Linear(64 * s * s, 128), nn::ReLU(), nn::Linear(128, classes));
}

torch::nn::Sequential Mlp(int64_t inputs, int64_t hidden, int64_t classes, int64_t layers) {
  FRUGAL_CHECK(inputs >= 1 && hidden >= 1 && classes >= 2 && layers >= 1,
               "Mlp: need inputs, hidden >= 1, classes >= 2, layers >= 1; got ", inputs, ", ",
               hidden, ", ", classes, ", ", layers);
  nn::Sequential net{nn::Flatten()};
  int64_t width = inputs;
  for (int64_t i = 0; i < layers; ++i) {
    net->push_back(nn::Linear(width, hidden));
    net->push_back(nn::ReLU());
    width = hidden;
  }
  net->push_back(nn::Linear(width, classes));
  return net;
}

namespace {

/// conv-bn-relu-conv-bn plus a shortcut (1x1 conv + bn when the shape changes), then relu.
/// Exports itself to ONNX (its forward is not a Sequential): folded Conv+BN, Relu, residual Add.
struct BasicBlockImpl : nn::Module, deploy::OnnxExportable {
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride)
      : conv1(register_module(
            "conv1",
            nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false)))),
        bn1(register_module("bn1", nn::BatchNorm2d(out))),
        conv2(register_module("conv2",
                              nn::Conv2d(nn::Conv2dOptions(out, out, 3).padding(1).bias(false)))),
        bn2(register_module("bn2", nn::BatchNorm2d(out))) {
    if (stride != 1 || in != out) {
      shortcut = register_module(
          "shortcut",
          nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)),
                         nn::BatchNorm2d(out)));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = torch::relu(bn1->forward(conv1->forward(x)));
    y = bn2->forward(conv2->forward(y));
    return torch::relu(y + (shortcut ? shortcut->forward(x) : x));
  }
  deploy::OnnxValue export_onnx(deploy::OnnxGraph& g, const std::string& path,
                                const deploy::OnnxValue& x) override {
    deploy::OnnxValue y = g.relu(g.conv_bn(*conv1, *bn1, path + ".conv1", path + ".bn1", x), path);
    y = g.conv_bn(*conv2, *bn2, path + ".conv2", path + ".bn2", y);
    deploy::OnnxValue skip = shortcut ? g.module(*shortcut, path + ".shortcut", x) : x;
    return g.relu(g.add(y, skip, path), path);
  }
  nn::Conv2d conv1;
  nn::BatchNorm2d bn1;
  nn::Conv2d conv2;
  nn::BatchNorm2d bn2;
  nn::Sequential shortcut{nullptr};
};
TORCH_MODULE(BasicBlock);

}  // namespace

torch::nn::Sequential ResNet(int64_t classes, int64_t in_channels, std::vector<int64_t> widths,
                             int64_t blocks) {
  FRUGAL_CHECK(classes >= 2 && in_channels >= 1 && blocks >= 1,
               "ResNet: need classes >= 2, in_channels >= 1 and blocks >= 1; got ", classes, ", ",
               in_channels, ", ", blocks);
  FRUGAL_CHECK(!widths.empty(), "ResNet: widths must name at least one stage");
  for (int64_t w : widths) FRUGAL_CHECK(w >= 1, "ResNet: every width must be >= 1, got ", w);
  nn::Sequential net(
      nn::Conv2d(nn::Conv2dOptions(in_channels, widths.front(), 3).padding(1).bias(false)),
      nn::BatchNorm2d(widths.front()), nn::ReLU());
  int64_t in = widths.front();
  for (size_t stage = 0; stage < widths.size(); ++stage) {
    const int64_t out = widths[stage];
    net->push_back(BasicBlock(in, out, stage == 0 ? 1 : 2));
    for (int64_t b = 1; b < blocks; ++b) net->push_back(BasicBlock(out, out, 1));
    in = out;
  }
  net->push_back(nn::AdaptiveAvgPool2d(1));
  net->push_back(nn::Flatten());
  net->push_back(nn::Linear(in, classes));
  return net;
}

torch::nn::Sequential ResNet18(int64_t classes, int64_t in_channels) {
  FRUGAL_CHECK(classes >= 2 && in_channels >= 1,
               "ResNet18: need classes >= 2 and in_channels >= 1; got ", classes, ", ",
               in_channels);
  return ResNet(classes, in_channels, {64, 128, 256, 512}, 2);
}

torch::nn::Sequential SmallResNet(int64_t classes, int64_t in_channels, int64_t width) {
  FRUGAL_CHECK(classes >= 2 && in_channels >= 1 && width >= 1,
               "SmallResNet: need classes >= 2, in_channels >= 1 and width >= 1; got ", classes,
               ", ", in_channels, ", ", width);
  return ResNet(classes, in_channels, {width, 2 * width, 4 * width}, 1);
}

}  // namespace frugal::models

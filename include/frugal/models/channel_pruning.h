// Structured channel pruning that really shrinks the network: whole channels (convolution
// filters, Linear rows) with the smallest L1 norm are removed, and every layer that reads or
// carries them is cut to match, in place, so the model has fewer parameters and multiply-adds and
// runs faster on dense kernels (unlike unstructured pruning, pytorch#36214).
//
//   auto report = frugal::prune_channels(*model, frugal::ChannelPruningOptions().amount(0.5));
//   // then fine-tune with a NEW optimizer (the old one holds tensors of the old shapes)
//
// Only channels internal to a block are pruned, never a residual stream or a block's input and
// output, so the model's structure, forward code and state_dict keys stay as they were:
// - zoo ResNet blocks: conv1 -> bn1 -> conv2 (and conv2 -> bn2 -> conv3 in a Bottleneck); the
//   small ResNets' blocks alike;
// - inverted residual blocks (MobileNetV2/V3, EfficientNet): the expanded channels, from the
//   expand convolution through its BatchNorm, the depthwise convolution and its BatchNorm, the
//   squeeze-excitation's input and output, to the projection;
// - Sequential chains (SmallCnn, SmallCnnBn, Mlp, a zoo head): a Conv2d or Linear whose outputs
//   reach the next Conv2d or Linear through BatchNorm, activations, dropout, pooling or Flatten.
// A model that has been pruned loads its state_dict only into a model of the same shapes: build
// the architecture, prune it with the same options (the shapes depend only on them), then load.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace frugal {

struct ChannelPruningOptions {
  /// Fraction of each group's channels removed: round(amount x channels), the rounding of
  /// torch.nn.utils.prune.ln_structured. In [0, 1).
  TORCH_ARG(double, amount) = 0.5;
  /// Channels every group keeps at least.
  TORCH_ARG(int64_t, min_channels) = 1;
};

/// One set of channels pruned together.
struct ChannelGroup {
  std::string producer;  // the layer whose outputs are the channels, e.g. "layer1.0.conv1"
  std::string consumer;  // the layer that reads them, e.g. "layer1.0.conv2"
  std::vector<std::string> along;  // BatchNorms, depthwise convolutions, squeeze-excitations
  int64_t channels_before = 0;
  std::vector<int64_t> kept;        // indices kept, ascending
  int64_t columns_per_channel = 1;  // consumer inputs per channel (a Linear after Flatten: H x W)
};

struct ChannelPruningReport {
  std::vector<ChannelGroup> groups;
  int64_t channels_before = 0, channels_after = 0;
  int64_t parameters_before = 0, parameters_after = 0;
};

/// Prunes `model` in place (see above). Throws frugal::Error naming the option, or saying that the
/// model has no prunable channel group, before anything is changed. Gradients of the changed
/// parameters are dropped.
ChannelPruningReport prune_channels(torch::nn::Module& model,
                                    const ChannelPruningOptions& options = {});

}  // namespace frugal

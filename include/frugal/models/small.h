// Small image-classification models used by the examples, tests and benchmarks.
// Inputs are N x C x H x W float tensors; outputs are N x classes logits.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <vector>

namespace frugal::models {

/// Two conv + pooling blocks and a two-layer head (the "2 Conv+pooling" baseline of the
/// Fashion-MNIST benchmark): conv(1->32,3x3)-relu-pool, conv(32->64,3x3)-relu-pool,
/// fc(64*s*s->128)-relu-dropout, fc(128->classes).
torch::nn::Sequential SmallCnn(int64_t classes = 10, int64_t in_channels = 1,
                               int64_t image_size = 28, double dropout = 0.25);
/// Same as SmallCnn with BatchNorm after each convolution.
torch::nn::Sequential SmallCnnBn(int64_t classes = 10, int64_t in_channels = 1,
                                 int64_t image_size = 28);
/// Flatten, hidden ReLU layers, logits.
torch::nn::Sequential Mlp(int64_t inputs = 784, int64_t hidden = 256, int64_t classes = 10,
                          int64_t layers = 2);

/// ResNet-18 (BasicBlocks 2-2-2-2, 64-128-256-512 channels, ~11M parameters) with a 3x3 stem
/// for small images (CIFAR-style, no initial max-pool); global average pooling, then logits.
torch::nn::Sequential ResNet18(int64_t classes = 10, int64_t in_channels = 1);

/// A ResNet of BasicBlocks for small images: a 3x3 stem to widths[0] channels, then one stage per
/// entry of `widths` with `blocks` BasicBlocks each (stride 2 from the second stage on), global
/// average pooling, logits. ResNet18 is ResNet(classes, in_channels, {64, 128, 256, 512}, 2).
torch::nn::Sequential ResNet(int64_t classes, int64_t in_channels, std::vector<int64_t> widths,
                             int64_t blocks);
/// A narrow ResNet-8 (widths {w, 2w, 4w}, one BasicBlock per stage; about 78k parameters at
/// w = 16): residual connections and BatchNorm at the cost of a small CNN, quick enough on a CPU.
torch::nn::Sequential SmallResNet(int64_t classes = 10, int64_t in_channels = 1,
                                  int64_t width = 16);

}  // namespace frugal::models

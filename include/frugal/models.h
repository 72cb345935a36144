// Small image-classification models used by the examples, tests and benchmarks.
// Inputs are N x C x H x W float tensors; outputs are N x classes logits.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>

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

}  // namespace frugal::models

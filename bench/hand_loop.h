// The hand-written LibTorch loop that the Trainer benches (trainer_overhead, lightning) measure
// frugal's Trainer against.
#pragma once

#include <frugal/data/batch_source.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>

#include "compat.h"

namespace frugal::bench {

/// One epoch by hand: the TensorLoader's shuffle for (seed, epoch), one index_select per batch
/// (data and labels), forward and cross_entropy (under CPU bf16 autocast with `bf16`), the loss
/// divided by its accumulation window's size (the epoch's last window by its own size, as the
/// Trainer does), and an optimizer step then zero_grad at the end of each window of `k` batches.
inline void hand_epoch(torch::nn::Sequential& net, torch::optim::Optimizer& optimizer,
                       const at::Tensor& images, const at::Tensor& labels, int64_t batch_size,
                       int64_t k, bool bf16, uint64_t seed, int64_t epoch) {
  const int64_t n = images.size(0);
  at::Generator gen = at::detail::createCPUGenerator(frugal::detail::seed_mix(seed, epoch));
  const at::Tensor order = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
  const int64_t batches = (n + batch_size - 1) / batch_size;
  for (int64_t i = 0; i < batches; ++i) {
    const at::Tensor index = order.slice(0, i * batch_size, std::min((i + 1) * batch_size, n));
    const at::Tensor x = images.index_select(0, index);
    const at::Tensor y = labels.index_select(0, index);
    if (bf16) frugal::compat::set_autocast(c10::DeviceType::CPU, true, at::kBFloat16);
    const at::Tensor loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    if (bf16) {
      frugal::compat::set_autocast(c10::DeviceType::CPU, false, at::kBFloat16);
      at::autocast::clear_cache();
    }
    const int64_t window_start = (i / k) * k;
    const int64_t window = std::min(k, batches - window_start);
    (window == 1 ? loss : loss / static_cast<double>(window)).backward();
    if (i + 1 == window_start + window) {
      optimizer.step();
      optimizer.zero_grad();
    }
  }
}

}  // namespace frugal::bench

// The model whose checkpoints seed fuzz_checkpoint (fuzz/make_seeds.cpp writes them).
#pragma once
#include <torch/torch.h>

namespace frugal::fuzz {
inline torch::nn::Sequential tiny_model() {
  torch::manual_seed(0);
  return torch::nn::Sequential(torch::nn::Linear(4, 3), torch::nn::BatchNorm1d(3),
                               torch::nn::ReLU(), torch::nn::Linear(3, 2));
}
}  // namespace frugal::fuzz

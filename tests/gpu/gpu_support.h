// Shared helpers of the GPU tests (tests/gpu): they compile everywhere (so CI compile-checks
// them) and skip themselves when no CUDA device is visible. scripts/gpu-check runs them.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_support.h"

/// Skips the current test unless a CUDA device is usable.
#define FRUGAL_REQUIRE_CUDA()                                                                 \
  do {                                                                                        \
    if (!torch::cuda::is_available()) {                                                       \
      GTEST_SKIP() << "no CUDA device visible (or this LibTorch has no CUDA): GPU-only test"; \
    }                                                                                         \
  } while (false)

namespace frugal::testing {

/// quiet_options() on the GPU.
inline TrainerOptions gpu_options(const std::string& dir = "") {
  return quiet_options(dir).accelerator("cuda");
}

/// A small MLP classifier that records the dtype of its first Linear's output and the mean
/// training loss of every epoch (call finish() after fit for the last one).
struct RecordingTask : Task {
  torch::nn::Sequential net;
  double lr;
  at::ScalarType forward_dtype = at::kFloat;
  std::vector<double> epoch_losses;

  explicit RecordingTask(uint64_t seed = 0, double learning_rate = 0.01) : lr(learning_rate) {
    torch::manual_seed(seed);
    net = torch::nn::Sequential(torch::nn::Linear(8, 64), torch::nn::ReLU(),
                                torch::nn::Linear(64, 3));
  }
  torch::nn::Module& module() override { return *net; }
  at::Tensor training_step(const Batch& b, StepContext& ctx) override {
    const int64_t epoch = ctx.trainer().state().epoch;
    if (epoch != epoch_) {
      finish();
      epoch_ = epoch;
    }
    at::Tensor hidden = net[0]->as<torch::nn::Linear>()->forward(b.data);
    forward_dtype = hidden.scalar_type();
    at::Tensor logits = net[2]->as<torch::nn::Linear>()->forward(torch::relu(hidden));
    at::Tensor loss = torch::nn::functional::cross_entropy(logits, b.target);
    sum_ += loss.item<double>();  // a host sync per step: fine in a test
    ++count_;
    return loss;
  }
  void finish() {
    if (count_ > 0) epoch_losses.push_back(sum_ / count_);
    sum_ = 0;
    count_ = 0;
  }
  OptimizerConfig configure_optimizers() override { return AdamW(lr, 0.0)(*net); }

 private:
  int64_t epoch_ = -1;
  double sum_ = 0;
  int64_t count_ = 0;
};

}  // namespace frugal::testing

// Gradient accumulation on CUDA: k micro-batches of b equal one batch of k*b (fp32, and with loss
// scaling unscaled once per window).
#include <algorithm>

#include "gpu_support.h"
#include "precision/plugin.h"

namespace {

torch::nn::Sequential mlp() {
  torch::manual_seed(7);
  return torch::nn::Sequential(torch::nn::Linear(8, 32), torch::nn::Tanh(),
                               torch::nn::Linear(32, 3));
}

std::vector<at::Tensor> train(int64_t batch, int64_t accumulate, const std::string& precision) {
  static auto d = frugal::testing::make_toy_data(128, 8, 3, 5);
  auto net = mlp();
  frugal::Classifier task(net, frugal::SGD(0.2));
  frugal::Trainer trainer(frugal::testing::gpu_options()
                              .max_epochs(2)
                              .accumulate_grad_batches(accumulate)
                              .precision(precision));
  trainer.fit(task,
              std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(batch)));
  EXPECT_EQ(trainer.state().global_step, 2 * 128 / (batch * accumulate));
  std::vector<at::Tensor> out;
  for (auto& p : net->parameters()) out.push_back(p.detach().to(at::kCPU));
  return out;
}

double max_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (a[i] - b[i]).abs().max().item<double>());
  return m;
}

TEST(GpuAccumulation, AccumulatedWindowsEqualTheFullBatch) {
  FRUGAL_REQUIRE_CUDA();
  const auto full = train(16, 1, "32");
  const auto accumulated = train(4, 4, "32");
  EXPECT_LT(max_diff(full, accumulated), 1e-5);
}

TEST(GpuAccumulation, LossScaledAccumulationUnscalesOncePerWindow) {
  FRUGAL_REQUIRE_CUDA();
  const auto full = train(16, 1, "32");
  // "16-mixed"'s scaler without autocast: scaling by powers of two is exact, so any extra or
  // missing unscale shows up as a factor of 65536.
  struct Hook {
    Hook() {
      frugal::detail::set_precision_factory([](frugal::Precision, c10::Device device) {
        return frugal::detail::make_loss_scaling_plugin({}, device, /*autocast=*/false);
      });
    }
    ~Hook() { frugal::detail::set_precision_factory(nullptr); }
  } hook;
  const auto scaled = train(4, 4, "16-mixed");
  EXPECT_LT(max_diff(full, scaled), 1e-5);
}

}  // namespace

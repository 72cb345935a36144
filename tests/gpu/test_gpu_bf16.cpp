// "bf16-mixed" on CUDA: bf16 autocast, fp32 parameters, no loss scaling.
#include "gpu_support.h"

namespace {

TEST(GpuBf16, TrainsWithBf16AutocastAndFp32Parameters) {
  FRUGAL_REQUIRE_CUDA();
  auto d = frugal::testing::make_toy_data(1024, 8, 3, 1);
  auto train = std::make_shared<frugal::TensorLoader>(
      d.x, d.y, frugal::TensorLoaderOptions(64).shuffle(true).seed(2));
  frugal::testing::RecordingTask task(0);
  frugal::Trainer trainer(frugal::testing::gpu_options().max_epochs(5).precision("bf16-mixed"));
  trainer.fit(task, train);
  task.finish();
  EXPECT_EQ(task.forward_dtype, at::kBFloat16);
  for (auto& p : task.net->parameters()) {
    EXPECT_TRUE(p.is_cuda());
    EXPECT_EQ(p.scalar_type(), at::kFloat);
    EXPECT_EQ(p.grad().defined() ? p.grad().scalar_type() : at::kFloat, at::kFloat);
  }
  EXPECT_EQ(trainer.state().skipped_steps, 0);
  ASSERT_EQ(task.epoch_losses.size(), 5u);
  EXPECT_LT(task.epoch_losses.back(), 0.5 * task.epoch_losses.front())
      << "first epoch " << task.epoch_losses.front() << ", last " << task.epoch_losses.back();
  // Autocast is off again outside the step.
  task.net->to(torch::kCUDA);
  EXPECT_EQ(task.net->forward(d.x.to(torch::kCUDA)).scalar_type(), at::kFloat);
}

}  // namespace

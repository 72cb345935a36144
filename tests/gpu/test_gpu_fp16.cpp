// "16-mixed" on CUDA: fp16 autocast with dynamic loss scaling, in real training runs.
#include <gmock/gmock.h>

#include <cmath>
#include <iostream>
#include <stdexcept>
#include <string>

#include "gpu_support.h"
#include "precision/plugin.h"

namespace {

using frugal::GradScalerOptions;
using frugal::Trainer;
using frugal::testing::RecordingTask;

std::shared_ptr<frugal::TensorLoader> train_data() {
  static auto d = frugal::testing::make_toy_data(1024, 8, 3, 1);
  return std::make_shared<frugal::TensorLoader>(
      d.x, d.y, frugal::TensorLoaderOptions(64).shuffle(true).seed(2));
}

/// While alive, the Trainer's "16-mixed" plugin uses `options` for its GradScaler (the built-in
/// one uses the defaults), and `last` points at it to read the scaler's state.
struct ScalerOptionsForFit {
  frugal::detail::PrecisionPlugin* last = nullptr;
  explicit ScalerOptionsForFit(GradScalerOptions options) {
    frugal::detail::set_precision_factory([this, options](frugal::Precision, c10::Device device) {
      auto plugin = frugal::detail::make_loss_scaling_plugin(options, device, /*autocast=*/true);
      last = plugin.get();
      return plugin;
    });
  }
  ~ScalerOptionsForFit() { frugal::detail::set_precision_factory(nullptr); }
  double scale() const { return last->state_dict().at("scale").toDouble(); }
  int64_t tracker() const { return last->state_dict().at("_growth_tracker").toInt(); }
};

/// Saves a checkpoint at a global step, then the "process" dies.
struct SaveAndDieAt : frugal::Callback {
  int64_t step;
  std::string path;
  SaveAndDieAt(int64_t s, std::string p) : step(s), path(std::move(p)) {}
  void on_train_batch_end(Trainer& t, frugal::Task&, const at::Tensor&, const frugal::Batch&,
                          int64_t) override {
    if (t.state().global_step != step) return;
    t.save_checkpoint(path);
    throw std::runtime_error("killed");
  }
};

TEST(GpuFp16, TrainsWithFp16AutocastKeepsFp32ParametersAndResumes) {
  FRUGAL_REQUIRE_CUDA();
  const std::string dir = frugal::testing::temp_dir("gpu_fp16");
  {
    RecordingTask task(0);  // the built-in "16-mixed" plugin, as users get it
    Trainer trainer(frugal::testing::gpu_options(dir).max_epochs(5).precision("16-mixed"));
    trainer.fit(task, train_data());
    task.finish();
    EXPECT_EQ(task.forward_dtype, at::kHalf);
    for (auto& p : task.net->parameters()) {
      EXPECT_TRUE(p.is_cuda());
      EXPECT_EQ(p.scalar_type(), at::kFloat);
      EXPECT_TRUE(p.isfinite().all().item<bool>());
    }
    ASSERT_EQ(task.epoch_losses.size(), 5u);
    EXPECT_LT(task.epoch_losses.back(), 0.5 * task.epoch_losses.front())
        << "first epoch " << task.epoch_losses.front() << ", last " << task.epoch_losses.back();
    EXPECT_LE(trainer.state().skipped_steps, 2);
  }

  // The scaler's state (device tensors) goes through a checkpoint: killed at step 24 of 48,
  // resumed, the growth count goes on from where it was (a fresh scaler would restart at 0).
  ScalerOptionsForFit hook{GradScalerOptions()};  // the built-in options; lets us read the state
  double saved_scale = 0;
  int64_t saved_tracker = 0, saved_skipped = 0;
  {
    RecordingTask task(0);
    Trainer killed(frugal::testing::gpu_options(dir).max_epochs(3).precision("16-mixed"),
                   {std::make_shared<SaveAndDieAt>(24, dir + "/fp16.ckpt")});
    EXPECT_THROW(killed.fit(task, train_data()), std::runtime_error);
    saved_scale = hook.scale();
    saved_tracker = hook.tracker();
    saved_skipped = killed.state().skipped_steps;
  }
  RecordingTask task(1);
  Trainer resumed(frugal::testing::gpu_options(dir).max_epochs(3).precision("16-mixed"));
  resumed.fit(task, train_data(), nullptr, dir + "/fp16.ckpt");
  EXPECT_EQ(resumed.state().global_step, 48);
  EXPECT_TRUE(std::isfinite(hook.scale()));
  if (resumed.state().skipped_steps == saved_skipped) {  // no overflow after the resume
    EXPECT_EQ(hook.scale(), saved_scale);
    EXPECT_EQ(hook.tracker(), saved_tracker + 24);
  }
}

TEST(GpuFp16, OverflowingScaleBacksOffSkipsStepsAndStillTrains) {
  FRUGAL_REQUIRE_CUDA();
  // 2^40 overflows fp16 gradients for sure: the scaler must back off until they fit.
  ScalerOptionsForFit hook(GradScalerOptions().init_scale(std::ldexp(1.0, 40)).growth_interval(20));
  RecordingTask task(0);
  Trainer trainer(frugal::testing::gpu_options().max_epochs(5).precision("16-mixed"));
  trainer.fit(task, train_data());
  task.finish();
  const double scale = hook.scale();
  std::cout << "skipped " << trainer.state().skipped_steps << " of " << trainer.state().global_step
            << " steps, final scale " << scale << "\n";
  EXPECT_GE(trainer.state().skipped_steps, 1);
  EXPECT_LT(trainer.state().skipped_steps, trainer.state().global_step / 2);
  EXPECT_DOUBLE_EQ(trainer.metrics().get("train/skipped_steps").value(),
                   static_cast<double>(trainer.state().skipped_steps));
  EXPECT_TRUE(std::isfinite(scale));
  EXPECT_GT(scale, 0.0);
  EXPECT_LT(scale, std::ldexp(1.0, 40));
  for (auto& p : task.net->parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());
  ASSERT_EQ(task.epoch_losses.size(), 5u);
  EXPECT_LT(task.epoch_losses.back(), task.epoch_losses.front());
}

TEST(GpuFp16, UnscaledFp16GradientsApproximateFp32Gradients) {
  FRUGAL_REQUIRE_CUDA();
  RecordingTask ref(3), amp(3);
  ref.net->to(torch::kCUDA);
  amp.net->to(torch::kCUDA);
  const auto d = frugal::testing::make_toy_data(256, 8, 3, 4);
  const at::Tensor x = d.x.to(torch::kCUDA), y = d.y.to(torch::kCUDA);
  torch::nn::functional::cross_entropy(ref.net->forward(x), y).backward();

  torch::optim::SGD opt(amp.net->parameters(), torch::optim::SGDOptions(0.1));
  frugal::GradScaler scaler;
  at::Tensor loss;
  {
    frugal::detail::PrecisionPlugin::ForwardScope scope(c10::DeviceType::CUDA, true, at::kHalf);
    at::Tensor logits = amp.net->forward(x);
    EXPECT_EQ(logits.scalar_type(), at::kHalf);
    loss = torch::nn::functional::cross_entropy(logits, y);
  }
  scaler.scale(loss).backward();
  scaler.unscale_(opt);
  auto r = ref.net->parameters();
  auto a = amp.net->parameters();
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(a[i].grad().scalar_type(), at::kFloat);
    const double rel = ((a[i].grad() - r[i].grad()).norm() / r[i].grad().norm()).item<double>();
    EXPECT_LT(rel, 1e-2) << "parameter " << i;
  }
  EXPECT_TRUE(scaler.step(opt));
  scaler.update();
  EXPECT_EQ(scaler.get_scale(), 65536.0);
}

}  // namespace

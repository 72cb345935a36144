// Precision plugins: bf16 autocast, the "16-mixed" loss-scaling plugin called in the Trainer's
// order (unscale before clipping, skip on overflow, scheduler not stepped after a skip), its
// state in checkpoints, and the clear error for fp16 autocast on a CPU LibTorch without it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "compat.h"
#include "precision/plugin.h"
#include "test_support.h"

namespace {

using frugal::Batch;
using frugal::GradScalerOptions;
using frugal::Precision;
using frugal::Trainer;
using frugal::detail::PrecisionPlugin;
using frugal::testing::error_message;
using ::testing::HasSubstr;

torch::nn::Sequential tiny_net(uint64_t seed = 0) {
  torch::manual_seed(seed);
  return torch::nn::Sequential(torch::nn::Linear(8, 16), torch::nn::Tanh(),
                               torch::nn::Linear(16, 3));
}

std::shared_ptr<frugal::TensorLoader> loader(int64_t n = 16, int64_t batch = 4) {
  static auto data = frugal::testing::make_toy_data(64);
  return std::make_shared<frugal::TensorLoader>(data.x.slice(0, 0, n), data.y.slice(0, 0, n),
                                                frugal::TensorLoaderOptions(batch));
}

double total_norm(torch::nn::Module& m) {
  double sq = 0;
  for (auto& p : m.parameters()) {
    if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(sq);
}

/// Forwards to a plugin and copies its state out after every step and load, so that a test can
/// read the scaler's state after the Trainer that owned the plugin is gone.
class Recording final : public PrecisionPlugin {
 public:
  Recording(std::unique_ptr<PrecisionPlugin> inner, frugal::StateDict* out)
      : inner_(std::move(inner)), out_(out) {}
  std::unique_ptr<ForwardScope> forward_scope() const override { return inner_->forward_scope(); }
  void backward(const at::Tensor& loss) override { inner_->backward(loss); }
  void unscale(torch::optim::Optimizer& optimizer) override { inner_->unscale(optimizer); }
  bool step(torch::optim::Optimizer& optimizer, bool skip) override {
    const bool stepped = inner_->step(optimizer, skip);
    *out_ = inner_->state_dict();
    return stepped;
  }
  frugal::StateDict state_dict() const override { return inner_->state_dict(); }
  void load_state_dict(const frugal::StateDict& state) override {
    inner_->load_state_dict(state);
    *out_ = inner_->state_dict();
  }
  Precision mode() const override { return inner_->mode(); }

 private:
  std::unique_ptr<PrecisionPlugin> inner_;
  frugal::StateDict* out_;
};

/// While alive, the Trainer's "16-mixed" is the loss-scaling plugin without autocast (LibTorch
/// 1.13 has no CPU fp16 autocast): the scaler's whole control flow runs in the real loop.
struct UseLossScaling {
  frugal::StateDict state;  // the scaler's state after the latest optimizer step of any fit
  explicit UseLossScaling(GradScalerOptions options) {
    frugal::detail::set_precision_factory([this, options](Precision p, c10::Device device) {
      EXPECT_EQ(p, Precision::k16Mixed);
      return std::make_unique<Recording>(
          frugal::detail::make_loss_scaling_plugin(options, device, /*autocast=*/false), &state);
    });
  }
  ~UseLossScaling() { frugal::detail::set_precision_factory(nullptr); }
  UseLossScaling(const UseLossScaling&) = delete;
  UseLossScaling& operator=(const UseLossScaling&) = delete;
  double scale() const { return state.at("scale").toDouble(); }
  int64_t tracker() const { return state.at("_growth_tracker").toInt(); }
};

/// Writes +inf into one gradient after backward at the given optimizer step.
struct PoisonGradAt : frugal::Callback {
  int64_t step;
  explicit PoisonGradAt(int64_t s) : step(s) {}
  void on_after_backward(Trainer& t, frugal::Task& task) override {
    if (t.state().global_step != step) return;
    torch::NoGradGuard g;
    task.module().parameters()[0].grad()[0][0] = std::numeric_limits<float>::infinity();
  }
};

/// Records what the optimizer step sees and whether it moved the parameters.
struct StepProbe : frugal::Callback {
  std::vector<double> grad_norms;  // at on_before_optimizer_step (after unscale, before clip)
  std::vector<bool> moved;
  std::vector<at::Tensor> before;
  void on_before_optimizer_step(Trainer&, frugal::Task& task, torch::optim::Optimizer&) override {
    grad_norms.push_back(total_norm(task.module()));
    before.clear();
    for (auto& p : task.module().parameters()) before.push_back(p.detach().clone());
  }
  void on_before_zero_grad(Trainer&, frugal::Task& task, torch::optim::Optimizer&) override {
    auto ps = task.module().parameters();
    bool any = false;
    for (size_t i = 0; i < ps.size(); ++i) any = any || !torch::equal(ps[i].detach(), before[i]);
    moved.push_back(any);
  }
};

// ---- the plugins on their own ----------------------------------------------------------------

TEST(Precision, ModesOfThePlugins) {
  const c10::Device cpu(c10::kCPU);
  EXPECT_EQ(frugal::detail::make_precision(Precision::k32, cpu)->mode(), Precision::k32);
  EXPECT_EQ(frugal::detail::make_precision(Precision::kBf16Mixed, cpu)->mode(),
            Precision::kBf16Mixed);
  EXPECT_EQ(frugal::detail::make_loss_scaling_plugin({}, cpu, false)->mode(), Precision::k16Mixed);
  EXPECT_TRUE(frugal::detail::make_precision(Precision::k32, cpu)->forward_scope() == nullptr);
  EXPECT_TRUE(frugal::detail::make_precision(Precision::k32, cpu)->state_dict().empty());
}

TEST(Precision, Bf16ForwardGivesBf16LinearOutputAndKeepsParametersAndGradientsFp32) {
  auto plugin = frugal::detail::make_precision(Precision::kBf16Mixed, c10::Device(c10::kCPU));
  torch::nn::Linear net(8, 3);
  const at::Tensor x = torch::randn({4, 8});
  at::Tensor loss;
  {
    auto scope = plugin->forward_scope();
    ASSERT_TRUE(scope != nullptr);
    at::Tensor out = net->forward(x);
    EXPECT_EQ(out.scalar_type(), at::kBFloat16);
    {
      auto inner = plugin->forward_scope();  // nesting keeps the outer scope's state
    }
    EXPECT_EQ(net->forward(x).scalar_type(), at::kBFloat16);
    loss = torch::mse_loss(out, torch::zeros({4, 3}));
    EXPECT_EQ(loss.scalar_type(), at::kFloat);  // losses run in fp32 under autocast
  }
  plugin->backward(loss);
  EXPECT_EQ(net->weight.scalar_type(), at::kFloat);
  EXPECT_EQ(net->weight.grad().scalar_type(), at::kFloat);
  EXPECT_EQ(net->forward(x).scalar_type(), at::kFloat);  // autocast off again
}

TEST(Precision, SixteenMixedAutocastNeedsCudaOrCpuFp16Autocast) {
  const c10::Device cpu(c10::kCPU);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  auto plugin = frugal::detail::make_precision(Precision::k16Mixed, cpu);
  torch::nn::Linear net(8, 3);
  auto scope = plugin->forward_scope();
  EXPECT_EQ(net->forward(torch::randn({2, 8})).scalar_type(), at::kHalf);
#else
  const std::string message =
      error_message([&] { frugal::detail::make_precision(Precision::k16Mixed, cpu); });
  EXPECT_THAT(message, HasSubstr("precision=\"16-mixed\" needs a CUDA device"));
  EXPECT_THAT(message, HasSubstr("use precision=\"bf16-mixed\" on CPU"));
  EXPECT_THAT(error_message([&] { frugal::detail::make_loss_scaling_plugin({}, cpu, true); }),
              HasSubstr("bf16-mixed"));
  // Without autocast the loss-scaling plugin runs anywhere.
  EXPECT_NO_THROW(frugal::detail::make_loss_scaling_plugin({}, cpu, false));
#endif
  if (torch::cuda::is_available()) {
    auto plugin = frugal::detail::make_precision(Precision::k16Mixed, c10::Device(c10::kCUDA, 0));
    torch::nn::Linear net(8, 3);
    net->to(torch::kCUDA);
    auto scope = plugin->forward_scope();
    EXPECT_EQ(net->forward(torch::randn({2, 8}, torch::kCUDA)).scalar_type(), at::kHalf);
  }
}

/// The Trainer's order on one step, by hand: backward (scaled), unscale, clip, step, update.
TEST(Precision, LossScalingPluginInTheTrainersOrderClipsTrueGradients) {
  const double clip = 0.01;
  auto net = tiny_net(1);
  auto ref = tiny_net(1);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1.0));
  auto plugin = frugal::detail::make_loss_scaling_plugin({}, c10::Device(c10::kCPU), false);
  EXPECT_TRUE(plugin->forward_scope() == nullptr);
  const auto data = frugal::testing::make_toy_data(8);
  torch::nn::functional::cross_entropy(ref->forward(data.x), data.y).backward();
  const double true_norm = total_norm(*ref);
  ASSERT_GT(true_norm, 10 * clip);  // so that clipping is active

  plugin->backward(torch::nn::functional::cross_entropy(net->forward(data.x), data.y));
  EXPECT_NEAR(total_norm(*net) / true_norm, 65536.0, 1e-2);  // scaled
  plugin->unscale(opt);
  EXPECT_NEAR(total_norm(*net), true_norm, 1e-6 * true_norm);  // true gradients again
  torch::nn::utils::clip_grad_norm_(net->parameters(), clip);
  EXPECT_NEAR(total_norm(*net), clip, 1e-4 * clip);
  std::vector<at::Tensor> before;
  for (auto& p : net->parameters()) before.push_back(p.detach().clone());
  EXPECT_TRUE(plugin->step(opt, /*skip=*/false));
  double moved_sq = 0;
  auto ps = net->parameters();
  for (size_t i = 0; i < ps.size(); ++i)
    moved_sq += (ps[i].detach() - before[i]).pow(2).sum().item<double>();
  EXPECT_NEAR(std::sqrt(moved_sq), clip, 1e-6);  // SGD(lr=1) moves by the clipped norm

  // The wrong order (clip the scaled gradients, then unscale) is ~65536x off.
  opt.zero_grad();
  plugin->backward(torch::nn::functional::cross_entropy(net->forward(data.x), data.y));
  torch::nn::utils::clip_grad_norm_(net->parameters(), clip);
  plugin->unscale(opt);
  EXPECT_GT(clip / total_norm(*net), 60000.0);
}

TEST(Precision, LossScalingPluginSkipsWhenAskedAndBacksOff) {
  auto net = tiny_net(2);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  auto plugin = frugal::detail::make_loss_scaling_plugin(GradScalerOptions().growth_interval(3),
                                                         c10::Device(c10::kCPU), false);
  const auto data = frugal::testing::make_toy_data(8);
  auto one_step = [&](bool skip, float poison) {
    opt.zero_grad();
    plugin->backward(torch::nn::functional::cross_entropy(net->forward(data.x), data.y));
    if (poison != 0) {
      torch::NoGradGuard g;
      net->parameters()[1].grad()[0] = poison;
    }
    plugin->unscale(opt);
    std::vector<at::Tensor> before;
    for (auto& p : net->parameters()) before.push_back(p.detach().clone());
    const bool stepped = plugin->step(opt, skip);
    bool same = true;
    auto ps = net->parameters();
    for (size_t i = 0; i < ps.size(); ++i) same = same && torch::equal(ps[i].detach(), before[i]);
    EXPECT_EQ(same, !stepped);
    return stepped;
  };
  EXPECT_TRUE(one_step(false, 0));
  EXPECT_FALSE(one_step(true, 0));  // finite gradients, skipped by the caller: still backs off
  EXPECT_EQ(plugin->state_dict().at("scale").toDouble(), 32768.0);
  EXPECT_EQ(plugin->state_dict().at("_growth_tracker").toInt(), 0);
  EXPECT_FALSE(one_step(false, std::numeric_limits<float>::quiet_NaN()));
  EXPECT_EQ(plugin->state_dict().at("scale").toDouble(), 16384.0);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(one_step(false, 0));
  EXPECT_EQ(plugin->state_dict().at("scale").toDouble(), 32768.0);

  // State round trip; an empty state (a "32" checkpoint) leaves a fresh plugin at its defaults.
  auto other = frugal::detail::make_loss_scaling_plugin({}, c10::Device(c10::kCPU), false);
  other->load_state_dict({});
  EXPECT_EQ(other->state_dict().at("scale").toDouble(), 65536.0);
  other->load_state_dict(plugin->state_dict());
  EXPECT_EQ(other->state_dict(), plugin->state_dict());
}

// ---- "16-mixed" in the Trainer -------------------------------------------------------------

TEST(PrecisionTrainer, LossScalingTrainsExactlyLikeFp32IncludingClipping) {
  // Power-of-two scales make scaling exact, so with unscale before clipping the run must match
  // fp32. Clipping the scaled gradients (or not unscaling) would make it differ by ~65536x.
  auto options = frugal::testing::quiet_options().max_epochs(2).gradient_clip_val(0.05);
  auto run = [&](const std::string& precision, StepProbe& probe) {
    auto net = tiny_net(3);
    frugal::Classifier task(net, frugal::SGD(0.5));
    Trainer trainer(options.precision(precision),
                    {std::shared_ptr<StepProbe>(&probe, [](auto*) {})});
    trainer.fit(task, loader());
    EXPECT_EQ(trainer.state().skipped_steps, 0);
    EXPECT_EQ(trainer.state().global_step, 8);
    std::vector<at::Tensor> out;
    for (auto& p : net->parameters()) out.push_back(p.detach().clone());
    return out;
  };
  StepProbe fp32_probe, scaled_probe;
  const auto fp32 = run("32", fp32_probe);
  std::vector<at::Tensor> scaled;
  {
    UseLossScaling hook{GradScalerOptions()};
    scaled = run("16-mixed", scaled_probe);
    EXPECT_EQ(hook.scale(), 65536.0);
    EXPECT_EQ(hook.tracker(), 8);
  }
  ASSERT_EQ(fp32_probe.grad_norms.size(), scaled_probe.grad_norms.size());
  for (size_t i = 0; i < fp32_probe.grad_norms.size(); ++i) {
    EXPECT_NEAR(scaled_probe.grad_norms[i], fp32_probe.grad_norms[i],
                1e-6 * fp32_probe.grad_norms[i]);
  }
  EXPECT_GT(fp32_probe.grad_norms.front(), 0.05);  // clipping was active
  for (size_t i = 0; i < fp32.size(); ++i) {
    EXPECT_TRUE(torch::allclose(scaled[i], fp32[i], 1e-6, 1e-7)) << "parameter " << i;
  }
}

/// "16-mixed" on the CPU with real fp16 autocast and the GradScaler, in the Trainer: LibTorch
/// 2.4+ only (1.13's CPU autocast refuses fp16; SixteenMixedAutocastNeedsCudaOrCpuFp16Autocast
/// checks that error there). The forward runs in fp16, the scaler steps, and training reaches
/// the loss fp32 reaches on the same data to 5%.
TEST(PrecisionTrainer, SixteenMixedWithFp16AutocastTrainsOnTheCpu) {
  if (!frugal::compat::kCpuFp16Autocast) {
    GTEST_SKIP() << "LibTorch " << TORCH_VERSION
                 << " has no fp16 CPU autocast (2.4+); runs in the 2.11 build";
  }
  auto data = frugal::testing::make_toy_data(64, 8, 3, 5);
  auto full_loss = [&](torch::nn::Sequential& net) {
    torch::NoGradGuard no_grad;
    return torch::cross_entropy_loss(net->forward(data.x), data.y).item<double>();
  };
  auto run = [&](const std::string& precision, at::ScalarType* seen, int64_t* skipped) {
    torch::manual_seed(4);
    torch::nn::Sequential net(torch::nn::Linear(8, 16),
                              torch::nn::Functional([seen](const at::Tensor& x) {
                                if (seen != nullptr) *seen = x.scalar_type();
                                return x;
                              }),
                              torch::nn::Tanh(), torch::nn::Linear(16, 3));
    const double before = full_loss(net);
    frugal::Classifier task(net, frugal::SGD(0.3));
    Trainer trainer(frugal::testing::quiet_options().max_epochs(6).precision(precision));
    trainer.fit(task, std::make_shared<frugal::TensorLoader>(data.x, data.y,
                                                             frugal::TensorLoaderOptions(8)));
    if (skipped != nullptr) *skipped = trainer.state().skipped_steps;
    EXPECT_EQ(trainer.state().global_step, 48);
    for (auto& p : net->parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());
    EXPECT_EQ(net->parameters()[0].scalar_type(), at::kFloat);  // master weights stay fp32
    const double after = full_loss(net);
    EXPECT_LT(after, 0.7 * before) << precision;
    return after;
  };
  at::ScalarType seen = at::kFloat;
  int64_t skipped = -1;
  frugal::StateDict scaler;
  double fp16 = 0;
  {
    frugal::detail::set_precision_factory([&](Precision p, c10::Device device) {
      EXPECT_EQ(p, Precision::k16Mixed);
      return std::make_unique<Recording>(
          frugal::detail::make_loss_scaling_plugin(GradScalerOptions(), device, /*autocast=*/true),
          &scaler);
    });
    fp16 = run("16-mixed", &seen, &skipped);
    frugal::detail::set_precision_factory(nullptr);
  }
  const double fp32 = run("32", nullptr, nullptr);
  EXPECT_EQ(seen, at::kHalf);  // the first Linear ran under fp16 autocast
  ASSERT_FALSE(scaler.empty());
  // Every step either stepped (counted towards growth) or backed the scale off.
  const double scale = scaler.at("scale").toDouble();
  EXPECT_EQ(scale, 65536.0 * std::pow(0.5, static_cast<double>(skipped)));
  if (skipped == 0) EXPECT_EQ(scaler.at("_growth_tracker").toInt(), 48);
  EXPECT_LT(skipped, 3);
  EXPECT_NEAR(fp16, fp32, 0.05 * fp32);
}

TEST(PrecisionTrainer, LossScaledAccumulationEqualsTheFullBatch) {
  // Scaled micro-batch gradients add up, and the window is unscaled once: an unscale per
  // micro-batch (or none) would be off by a factor of 65536.
  auto run = [](int64_t batch, int64_t k, const std::string& precision) {
    auto net = tiny_net(6);
    frugal::Classifier task(net, frugal::SGD(0.2));
    Trainer trainer(
        frugal::testing::quiet_options().max_epochs(2).accumulate_grad_batches(k).precision(
            precision));
    trainer.fit(task, loader(32, batch));
    EXPECT_EQ(trainer.state().global_step, 4);
    std::vector<at::Tensor> out;
    for (auto& p : net->parameters()) out.push_back(p.detach().clone());
    return out;
  };
  const auto full = run(16, 1, "32");
  UseLossScaling hook{GradScalerOptions()};
  const auto accumulated = run(4, 4, "16-mixed");
  EXPECT_EQ(hook.tracker(), 4);
  for (size_t i = 0; i < full.size(); ++i) {
    EXPECT_LT((full[i] - accumulated[i]).abs().max().item<double>(), 1e-6) << "parameter " << i;
  }
}

TEST(PrecisionTrainer, OverflowSkipsTheStepIsCountedAndDoesNotStepTheScheduler) {
  UseLossScaling hook(GradScalerOptions().growth_interval(3));
  auto net = tiny_net(4);
  frugal::Classifier task(net, frugal::with_scheduler(
                                   frugal::SGD(0.1),
                                   [](torch::optim::Optimizer& o) {
                                     return std::make_shared<frugal::StepLR>(o, 1, 0.5);
                                   },
                                   frugal::Interval::kStep));
  auto probe = std::make_shared<StepProbe>();
  Trainer trainer(frugal::testing::quiet_options().max_epochs(1).precision("16-mixed"),
                  {std::make_shared<PoisonGradAt>(1), probe});
  trainer.fit(task, loader());  // 4 optimizer steps, the second overflows
  EXPECT_EQ(trainer.state().global_step, 4);
  EXPECT_EQ(trainer.state().skipped_steps, 1);
  EXPECT_DOUBLE_EQ(trainer.metrics().get("train/skipped_steps").value(), 1.0);
  EXPECT_EQ(probe->moved, (std::vector<bool>{true, false, true, true}));
  EXPECT_TRUE(std::isinf(probe->grad_norms[1]));
  for (size_t i : {0u, 2u, 3u}) EXPECT_LT(probe->grad_norms[i], 100.0);  // unscaled
  // 3 steps taken, so the scheduler stepped 3 times, not 4.
  EXPECT_NEAR(trainer.lr_scheduler()->get_last_lr()[0], 0.1 * std::pow(0.5, 3), 1e-12);
  EXPECT_EQ(hook.scale(), 32768.0);
  EXPECT_EQ(hook.tracker(), 2);
  for (auto& p : net->parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());
}

TEST(PrecisionTrainer, NonFiniteLossSkippedByPolicyBacksOffTheScale) {
  struct NanAt : frugal::Task {
    torch::nn::Linear net{8, 3};
    int calls = 0;
    torch::nn::Module& module() override { return *net; }
    at::Tensor training_step(const Batch& b, frugal::StepContext&) override {
      at::Tensor loss = torch::nn::functional::cross_entropy(net->forward(b.data), b.target);
      if (calls++ == 2) loss = loss * std::numeric_limits<float>::quiet_NaN();
      return loss;
    }
    frugal::OptimizerConfig configure_optimizers() override { return frugal::SGD(0.1)(*net); }
  } task;
  UseLossScaling hook(GradScalerOptions().growth_interval(3));
  Trainer trainer(frugal::testing::quiet_options()
                      .max_epochs(1)
                      .precision("16-mixed")
                      .nan_loss(frugal::NanLossPolicy::kSkip));
  trainer.fit(task, loader());
  EXPECT_EQ(trainer.state().skipped_steps, 1);
  EXPECT_EQ(hook.scale(), 32768.0);  // see Note [A step skipped for a non-finite loss ...]
  EXPECT_EQ(hook.tracker(), 1);
  EXPECT_TRUE(task.net->weight.isfinite().all().item<bool>());
}

/// Saves at a global step, then the "process" dies.
struct SaveAndDieAt : frugal::Callback {
  int64_t step;
  std::string path;
  SaveAndDieAt(int64_t s, std::string p) : step(s), path(std::move(p)) {}
  void on_train_batch_end(Trainer& t, frugal::Task&, const at::Tensor&, const Batch&,
                          int64_t) override {
    if (t.state().global_step != step) return;
    t.save_checkpoint(path);
    throw std::runtime_error("killed");
  }
};

TEST(PrecisionTrainer, ScalerStateIsCheckpointedAndResumeContinuesIdentically) {
  UseLossScaling hook(GradScalerOptions().growth_interval(3));
  const std::string dir = frugal::testing::temp_dir("precision_resume");
  auto options = frugal::testing::quiet_options(dir).max_epochs(2).seed(1).precision("16-mixed");
  auto poison = std::make_shared<PoisonGradAt>(1);

  auto ref_net = tiny_net(5);
  frugal::Classifier ref_task(ref_net, frugal::SGD(0.1));
  Trainer ref(options, {poison});
  ref.fit(ref_task, loader());  // 8 steps, step 1 overflows
  EXPECT_EQ(ref.state().skipped_steps, 1);
  // 65536 -> 32768 at step 1, grown at steps 4 and 7 (3 clean steps each).
  EXPECT_EQ(hook.scale(), 131072.0);
  EXPECT_EQ(hook.tracker(), 0);
  const frugal::StateDict ref_state = hook.state;

  {
    auto net = tiny_net(5);
    frugal::Classifier task(net, frugal::SGD(0.1));
    Trainer killed(options, {poison, std::make_shared<SaveAndDieAt>(3, dir + "/s3.ckpt")});
    EXPECT_THROW(killed.fit(task, loader()), std::runtime_error);
    EXPECT_EQ(hook.scale(), 32768.0);
    EXPECT_EQ(hook.tracker(), 1);
  }
  auto net = tiny_net(99);  // other weights: the checkpoint must bring everything back
  frugal::Classifier task(net, frugal::SGD(0.1));
  Trainer resumed(options, {poison});
  resumed.fit(task, loader(), nullptr, dir + "/s3.ckpt");
  EXPECT_EQ(resumed.state().global_step, 8);
  EXPECT_EQ(resumed.state().skipped_steps, 1);
  // A fresh scaler would end at (131072, 2): the restored one ends where the reference did.
  EXPECT_EQ(hook.state, ref_state);
  EXPECT_EQ(frugal::params_sha256(*net), frugal::params_sha256(*ref_net));
}

}  // namespace

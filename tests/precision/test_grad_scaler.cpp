// GradScaler: PyTorch's defaults and semantics — skip on inf/NaN with bitwise-unchanged
// parameters, back-off and growth of the scale, true gradients after unscale_, misuse errors,
// state_dict round trip, and the fallback kernels against ATen's (and a reference of them).
#include <frugal/precision/grad_scaler.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "test_support.h"

namespace {

using frugal::GradScaler;
using frugal::GradScalerOptions;
using frugal::testing::error_message;
using ::testing::HasSubstr;
namespace detail = frugal::detail;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

/// A tiny regression model with its optimizer and data, seeded.
struct Rig {
  torch::nn::Sequential net;
  std::unique_ptr<torch::optim::SGD> opt;
  at::Tensor x, y;
  explicit Rig(uint64_t seed = 0, double lr = 0.1) {
    torch::manual_seed(seed);
    net =
        torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 2));
    opt = std::make_unique<torch::optim::SGD>(net->parameters(), torch::optim::SGDOptions(lr));
    x = torch::randn({16, 4});
    y = torch::randn({16, 2});
  }
  at::Tensor loss() { return torch::mse_loss(net->forward(x), y); }
  std::vector<at::Tensor> params_copy() {
    std::vector<at::Tensor> out;
    for (auto& p : net->parameters()) out.push_back(p.detach().clone());
    return out;
  }
  bool params_equal(const std::vector<at::Tensor>& other) {
    auto ps = net->parameters();
    for (size_t i = 0; i < ps.size(); ++i) {
      if (!torch::equal(ps[i].detach(), other[i])) return false;
    }
    return true;
  }
};

/// One iteration in PyTorch's order; `poison` (if not 0) is written into one gradient after
/// backward. Returns whether the optimizer stepped.
bool iteration(Rig& s, GradScaler& scaler, float poison = 0) {
  s.opt->zero_grad();
  scaler.scale(s.loss()).backward();
  if (poison != 0) {
    torch::NoGradGuard g;
    s.net->parameters()[0].grad()[0][0] = poison;
  }
  scaler.unscale_(*s.opt);
  const bool stepped = scaler.step(*s.opt);
  scaler.update();
  return stepped;
}

TEST(GradScaler, DefaultsArePyTorchs) {
  GradScalerOptions o;
  EXPECT_EQ(o.init_scale(), 65536.0);
  EXPECT_EQ(o.growth_factor(), 2.0);
  EXPECT_EQ(o.backoff_factor(), 0.5);
  EXPECT_EQ(o.growth_interval(), 2000);
  EXPECT_TRUE(o.enabled());
  GradScaler scaler;
  EXPECT_EQ(scaler.get_scale(), 65536.0);
  EXPECT_EQ(scaler.get_growth_tracker(), 0);
  at::Tensor scaled = scaler.scale(torch::tensor(3.0f));
  EXPECT_EQ(scaled.item<float>(), 3.0f * 65536.0f);
  EXPECT_EQ(scaled.scalar_type(), at::kFloat);
}

TEST(GradScaler, BadOptionsAreRefusedNamingOptionAndValue) {
  EXPECT_THAT(error_message([] { GradScaler(GradScalerOptions().growth_factor(1.0)); }),
              HasSubstr("growth_factor must be a finite number > 1, got 1"));
  EXPECT_THAT(error_message([] { GradScaler(GradScalerOptions().backoff_factor(1.5)); }),
              HasSubstr("backoff_factor must be in (0, 1), got 1.5"));
  EXPECT_THAT(error_message([] { GradScaler(GradScalerOptions().backoff_factor(0)); }),
              HasSubstr("backoff_factor must be in (0, 1), got 0"));
  EXPECT_THAT(error_message([] { GradScaler(GradScalerOptions().growth_interval(0)); }),
              HasSubstr("growth_interval must be >= 1 (and fit in int32), got 0"));
  EXPECT_THAT(error_message([] { GradScaler(GradScalerOptions().init_scale(-2)); }),
              HasSubstr("init_scale must be a finite number > 0, got -2"));
  EXPECT_THAT(error_message([] { GradScaler(GradScalerOptions().init_scale(INFINITY)); }),
              HasSubstr("init_scale must be a finite number > 0, got inf"));
}

TEST(GradScaler, InfSkipsStepBacksOffAndGrowsBackAfterIntervalCleanSteps) {
  Rig s;
  GradScaler scaler(GradScalerOptions().growth_interval(3));
  std::vector<double> scales;
  std::vector<int64_t> trackers;
  std::vector<bool> stepped;
  for (int it = 0; it < 6; ++it) {
    const auto before = s.params_copy();
    stepped.push_back(iteration(s, scaler, it == 1 ? kInf : 0));
    if (it == 1) {
      EXPECT_TRUE(s.params_equal(before)) << "a skipped step must leave parameters bitwise equal";
    } else {
      EXPECT_FALSE(s.params_equal(before));
    }
    scales.push_back(scaler.get_scale());
    trackers.push_back(scaler.get_growth_tracker());
  }
  EXPECT_EQ(stepped, (std::vector<bool>{true, false, true, true, true, true}));
  // it1: 65536 -> 32768; it2..it4 are 3 clean steps: doubled back at it4.
  EXPECT_EQ(scales, (std::vector<double>{65536, 32768, 32768, 32768, 65536, 65536}));
  EXPECT_EQ(trackers, (std::vector<int64_t>{1, 0, 1, 2, 0, 1}));
}

TEST(GradScaler, NanIsDetectedLikeInf) {
  Rig s;
  GradScaler scaler(GradScalerOptions().growth_interval(3));
  const auto before = s.params_copy();
  EXPECT_FALSE(iteration(s, scaler, kNaN));
  EXPECT_TRUE(s.params_equal(before));
  EXPECT_EQ(scaler.get_scale(), 32768.0);
  EXPECT_FALSE(iteration(s, scaler, -kInf));
  EXPECT_EQ(scaler.get_scale(), 16384.0);
  EXPECT_TRUE(iteration(s, scaler));
  EXPECT_EQ(scaler.get_scale(), 16384.0);
}

TEST(GradScaler, UnscaledGradientsEqualTrueGradients) {
  Rig ref(3), scaled(3);
  ref.loss().backward();
  GradScaler scaler;
  scaler.scale(scaled.loss()).backward();
  // Before unscale_ the gradients are 65536x the true ones ...
  auto r = ref.net->parameters();
  auto p = scaled.net->parameters();
  EXPECT_NEAR((p[0].grad().norm() / r[0].grad().norm()).item<double>(), 65536.0, 1e-2);
  scaler.unscale_(*scaled.opt);
  // ... after it, equal to an unscaled fp32 backward.
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_TRUE(torch::allclose(p[i].grad(), r[i].grad(), /*rtol=*/1e-6, /*atol=*/0)) << i;
  }
}

TEST(GradScaler, StepUnscalesWhenUnscaleWasNotCalled) {
  Rig ref(4, /*lr=*/0.0), scaled(4, 0.0);
  ref.loss().backward();
  GradScaler scaler;
  scaler.scale(scaled.loss()).backward();
  EXPECT_TRUE(scaler.step(*scaled.opt));
  scaler.update();
  auto r = ref.net->parameters();
  auto p = scaled.net->parameters();
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_TRUE(torch::allclose(p[i].grad(), r[i].grad(), 1e-6, 0)) << i;
  }
}

TEST(GradScaler, GradientsAreGroupedByDtypeAndEachGroupIsChecked) {
  torch::manual_seed(0);
  auto a = torch::randn({3}, torch::requires_grad());
  auto b = torch::randn({3}, torch::dtype(at::kDouble).requires_grad(true));
  torch::optim::SGD opt({a, b}, torch::optim::SGDOptions(0.1));
  GradScaler scaler;
  scaler.scale(a.sum() + b.sum().to(at::kFloat) * 2).backward();
  EXPECT_EQ(b.grad().scalar_type(), at::kDouble);
  {
    torch::NoGradGuard g;
    b.grad()[1] = INFINITY;  // only the double group overflows
  }
  scaler.unscale_(opt);
  EXPECT_TRUE(torch::equal(a.grad(), torch::ones({3})));
  EXPECT_EQ(b.grad()[0].item<double>(), 2.0);
  EXPECT_FALSE(scaler.step(opt));
  scaler.update();
  EXPECT_EQ(scaler.get_scale(), 32768.0);
}

TEST(GradScaler, MisuseIsRefusedLikePyTorch) {
  Rig s;
  GradScaler scaler;
  EXPECT_THAT(error_message([&] { scaler.unscale_(*s.opt); }), HasSubstr("before any scale(loss)"));
  scaler.scale(s.loss()).backward();
  scaler.unscale_(*s.opt);
  EXPECT_THAT(error_message([&] { scaler.unscale_(*s.opt); }),
              HasSubstr("unscale_() has already been called on this optimizer since the last "
                        "update()"));
  scaler.step(*s.opt);
  EXPECT_THAT(error_message([&] { scaler.unscale_(*s.opt); }),
              HasSubstr("unscale_() is being called after step()"));
  EXPECT_THAT(error_message([&] { scaler.step(*s.opt); }),
              HasSubstr("step() has already been called since the last update()"));
  scaler.update();
  EXPECT_THAT(error_message([&] { scaler.update(); }), HasSubstr("no inf checks were recorded"));
  // After update() a new iteration may unscale again.
  s.opt->zero_grad();
  scaler.scale(s.loss()).backward();
  scaler.unscale_(*s.opt);
}

TEST(GradScaler, Fp16GradientsAreRefused) {
  auto w = torch::ones({2}, torch::dtype(at::kHalf).requires_grad(true));
  torch::optim::SGD opt({w}, torch::optim::SGDOptions(0.1));
  GradScaler scaler;
  scaler.scale(torch::tensor(1.0f));  // creates the scale
  w.mutable_grad() = torch::ones({2}, at::kHalf);
  EXPECT_THAT(error_message([&] { scaler.unscale_(opt); }),
              HasSubstr("Attempting to unscale FP16 gradients"));
}

TEST(GradScaler, SkipBacksOffWithoutSteppingEvenWithFiniteGradients) {
  Rig s;
  GradScaler scaler(GradScalerOptions().growth_interval(3));
  EXPECT_TRUE(iteration(s, scaler));
  EXPECT_EQ(scaler.get_growth_tracker(), 1);
  s.opt->zero_grad();
  scaler.scale(s.loss()).backward();
  scaler.unscale_(*s.opt);
  const auto before = s.params_copy();
  scaler.skip(*s.opt);
  scaler.update();
  EXPECT_TRUE(s.params_equal(before));
  EXPECT_EQ(scaler.get_scale(), 32768.0);
  EXPECT_EQ(scaler.get_growth_tracker(), 0);
}

TEST(GradScaler, DisabledPassesEverythingThrough) {
  Rig s;
  GradScaler scaler(GradScalerOptions().enabled(false));
  at::Tensor loss = s.loss();
  at::Tensor scaled = scaler.scale(loss);
  EXPECT_TRUE(scaled.is_same(loss));
  scaled.backward();
  const auto before = s.params_copy();
  scaler.unscale_(*s.opt);
  EXPECT_TRUE(scaler.step(*s.opt));
  scaler.update();
  EXPECT_FALSE(s.params_equal(before));
  EXPECT_EQ(scaler.get_scale(), 1.0);
  EXPECT_TRUE(scaler.state_dict().empty());
}

TEST(GradScaler, StateDictHasPyTorchsKeysAndRoundTripContinuesIdentically) {
  Rig a(7), b(7);
  GradScaler first(GradScalerOptions().growth_interval(3));
  iteration(a, first);
  iteration(a, first, kInf);
  iteration(a, first);  // scale 32768, tracker 1
  const frugal::StateDict st = first.state_dict();
  ASSERT_EQ(st.size(), 5u);
  EXPECT_EQ(st.at("scale").toDouble(), 32768.0);
  EXPECT_EQ(st.at("growth_factor").toDouble(), 2.0);
  EXPECT_EQ(st.at("backoff_factor").toDouble(), 0.5);
  EXPECT_EQ(st.at("growth_interval").toInt(), 3);
  EXPECT_EQ(st.at("_growth_tracker").toInt(), 1);

  // A fresh scaler with other options, loaded before its first scale(): continues exactly.
  GradScaler second(GradScalerOptions().init_scale(8).growth_interval(100));
  second.load_state_dict(st);
  {
    torch::NoGradGuard g;
    auto pa = a.net->parameters();
    auto pb = b.net->parameters();
    for (size_t i = 0; i < pa.size(); ++i) pb[i].copy_(pa[i]);
  }
  std::vector<double> sa, sb;
  for (int it = 0; it < 5; ++it) {
    const float poison = it == 3 ? kNaN : 0;
    EXPECT_EQ(iteration(a, first, poison), iteration(b, second, poison));
    sa.push_back(first.get_scale());
    sb.push_back(second.get_scale());
    EXPECT_EQ(first.get_growth_tracker(), second.get_growth_tracker());
  }
  EXPECT_EQ(sa, sb);
  EXPECT_EQ(sa, (std::vector<double>{32768, 65536, 65536, 32768, 32768}));
  EXPECT_TRUE(a.params_equal(b.params_copy()));

  // Loading into a scaler that already has its scale tensor overwrites it.
  second.load_state_dict(GradScaler().state_dict());
  EXPECT_EQ(second.get_scale(), 65536.0);
  EXPECT_EQ(second.get_growth_tracker(), 0);
  EXPECT_EQ(second.options().growth_interval(), 2000);
}

TEST(GradScaler, LoadStateDictRejectsMissingOrBadEntries) {
  GradScaler scaler;
  EXPECT_THAT(error_message([&] { scaler.load_state_dict({}); }),
              HasSubstr("saved from a disabled GradScaler"));
  frugal::StateDict st = GradScaler().state_dict();
  st.erase("_growth_tracker");
  EXPECT_THAT(error_message([&] { scaler.load_state_dict(st); }),
              HasSubstr("no \"_growth_tracker\" in the state"));
  st = GradScaler().state_dict();
  st["scale"] = std::string("big");
  EXPECT_THAT(error_message([&] { scaler.load_state_dict(st); }),
              HasSubstr("\"scale\" must be a number"));
  st = GradScaler().state_dict();
  st["backoff_factor"] = 2.0;
  EXPECT_THAT(error_message([&] { scaler.load_state_dict(st); }),
              HasSubstr("backoff_factor must be in (0, 1), got 2"));
  st = GradScaler().state_dict();
  st["_growth_tracker"] = int64_t{2000};
  EXPECT_THAT(error_message([&] { scaler.load_state_dict(st); }),
              HasSubstr("_growth_tracker must be in [0, growth_interval = 2000), got 2000"));
  EXPECT_EQ(scaler.get_scale(), 65536.0);  // unchanged by the failed loads
}

// ---- the kernels --------------------------------------------------------------------------

/// ATen's CPU kernels (AmpGradScalerKernels.cpp), element by element on the host: the reference
/// the fallback must match bitwise.
template <typename T>
void reference_unscale(at::Tensor& grad, float& found, float inv) {
  at::Tensor g = grad.contiguous();
  T* data = g.data_ptr<T>();
  for (int64_t i = 0; i < g.numel(); ++i) {
    using Op = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const Op v = static_cast<Op>(data[i]);
    if (!std::isfinite(v)) found = 1.f;
    data[i] = static_cast<T>(inv == 1.f ? v : v * inv);
  }
  grad = g;
}

void reference_update(float& scale, int& tracker, float found, double growth, double backoff,
                      int64_t interval) {
  if (found) {
    scale = scale * backoff;
    tracker = 0;
  } else {
    const int successful = tracker + 1;
    if (successful == interval) {
      const float grown = static_cast<float>(scale * growth);
      if (std::isfinite(grown)) scale = grown;
      tracker = 0;
    } else {
      tracker = successful;
    }
  }
}

at::Tensor poisoned(at::ScalarType dtype, int64_t n, bool poison, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor t = (torch::randn({n}) * 1e4).to(dtype);
  if (poison) t[n / 2] = std::numeric_limits<float>::infinity();
  return t;
}

TEST(GradScalerKernels, FallbackUnscaleMatchesATenCpuKernelReferenceBitwise) {
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    for (bool poison : {false, true}) {
      for (float scale : {65536.f, 3.f, 1.f, 0.125f}) {
        at::Tensor grad = poisoned(dtype, 1000, poison, 1);
        at::Tensor expected = grad.clone();
        const float inv = static_cast<float>(1.0 / static_cast<double>(scale));
        float found_ref = 0;
        if (dtype == at::kFloat) reference_unscale<float>(expected, found_ref, inv);
        if (dtype == at::kDouble) reference_unscale<double>(expected, found_ref, inv);
        if (dtype == at::kBFloat16) reference_unscale<c10::BFloat16>(expected, found_ref, inv);

        at::Tensor found = torch::zeros({1});
        at::Tensor inv_scale = torch::full({1}, scale, at::kDouble).reciprocal().to(at::kFloat);
        detail::non_finite_check_and_unscale({grad}, found, inv_scale, detail::AmpOps::kFallback);
        EXPECT_EQ(found.item<float>(), found_ref) << dtype << " " << poison << " " << scale;
        EXPECT_TRUE(torch::equal(grad, expected)) << dtype << " " << poison << " " << scale;
      }
    }
  }
}

TEST(GradScalerKernels, FallbackUpdateMatchesATenCpuKernelReference) {
  // Random sequences of found_inf with several factors, including growth near fp32's maximum.
  std::mt19937 rng(5);
  for (double growth : {2.0, 1.5, 1.0001}) {
    for (double backoff : {0.5, 0.3, 0.999}) {
      for (float start : {65536.f, 1.f, 3e38f}) {
        at::Tensor scale = torch::full({1}, start);
        at::Tensor tracker = torch::zeros({1}, at::kInt);
        float s = start;
        int t = 0;
        for (int it = 0; it < 60; ++it) {
          const float found = rng() % 5 == 0 ? 1.f : 0.f;
          reference_update(s, t, found, growth, backoff, 3);
          detail::update_scale(scale, tracker, torch::full({1}, found), growth, backoff, 3,
                               detail::AmpOps::kFallback);
          ASSERT_EQ(scale.item<float>(), s) << growth << " " << backoff << " it " << it;
          ASSERT_EQ(tracker.item<int>(), t) << growth << " " << backoff << " it " << it;
        }
      }
    }
  }
  // Never grows past fp32's range.
  at::Tensor scale = torch::full({1}, 3e38f);
  at::Tensor tracker = torch::zeros({1}, at::kInt);
  detail::update_scale(scale, tracker, torch::zeros({1}), 2.0, 0.5, 1, detail::AmpOps::kFallback);
  EXPECT_EQ(scale.item<float>(), 3e38f);
  EXPECT_EQ(tracker.item<int>(), 0);
}

TEST(GradScalerKernels, FallbackAndATenOpsAgreeWhereATenHasThem) {
  std::vector<c10::Device> devices{c10::Device(c10::kCPU)};
  if (torch::cuda::is_available()) devices.emplace_back(c10::kCUDA, 0);
  int compared = 0;
  for (const c10::Device& device : devices) {
    if (!detail::has_aten_amp_ops(device)) {
      // The compat flag must not lie: ATen really has no kernel here.
      at::Tensor g = torch::ones({3}, device);
      at::Tensor found = torch::zeros({1}, device);
      EXPECT_ANY_THROW(detail::non_finite_check_and_unscale({g}, found, torch::ones({1}, device),
                                                            detail::AmpOps::kAten));
      continue;
    }
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (bool poison : {false, true}) {
        at::Tensor a = poisoned(dtype, 4099, poison, 2).to(device);
        at::Tensor b = a.clone();
        at::Tensor fa = torch::zeros({1}, device), fb = torch::zeros({1}, device);
        at::Tensor inv = torch::full({1}, 1.0f / 1024, device);
        detail::non_finite_check_and_unscale({a}, fa, inv, detail::AmpOps::kAten);
        detail::non_finite_check_and_unscale({b}, fb, inv, detail::AmpOps::kFallback);
        EXPECT_TRUE(torch::equal(fa, fb)) << device << dtype;
        EXPECT_TRUE(torch::equal(a.isnan(), b.isnan())) << device << dtype;
        EXPECT_TRUE(torch::equal(a.nan_to_num(0), b.nan_to_num(0))) << device << dtype;
      }
    }
    std::mt19937 rng(9);
    at::Tensor sa = torch::full({1}, 65536.f, device), sb = sa.clone();
    at::Tensor ta = torch::zeros({1}, torch::dtype(at::kInt).device(device)), tb = ta.clone();
    for (int it = 0; it < 50; ++it) {
      at::Tensor found = torch::full({1}, rng() % 4 == 0 ? 1.f : 0.f, device);
      detail::update_scale(sa, ta, found, 2.0, 0.5, 3, detail::AmpOps::kAten);
      detail::update_scale(sb, tb, found, 2.0, 0.5, 3, detail::AmpOps::kFallback);
      ASSERT_TRUE(torch::equal(sa, sb)) << device << " it " << it;
      ASSERT_TRUE(torch::equal(ta, tb)) << device << " it " << it;
    }
    ++compared;
  }
  if (compared == 0) {
    GTEST_SKIP() << "this LibTorch has no ATen _amp_ kernels for CPU (they came with 2.3) and no "
                    "CUDA device is visible: only the fallback ran";
  }
}

TEST(GradScalerKernels, GradScalerOnCudaUsesDeviceTensors) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(0);
  torch::nn::Linear net(4, 2);
  net->to(torch::kCUDA);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  GradScaler scaler(GradScalerOptions().growth_interval(3));
  for (int it = 0; it < 5; ++it) {
    opt.zero_grad();
    at::Tensor loss = net->forward(torch::randn({8, 4}, torch::kCUDA)).pow(2).mean();
    scaler.scale(loss).backward();
    if (it == 1) {
      torch::NoGradGuard g;
      net->weight.grad()[0][0] = INFINITY;
    }
    EXPECT_EQ(scaler.step(opt), it != 1);
    scaler.update();
  }
  EXPECT_EQ(scaler.get_scale(), 65536.0);  // backed off at it1, grown back at it4
  EXPECT_EQ(scaler.get_growth_tracker(), 0);
}

}  // namespace

// frugal::quantize_dynamic: int8 Linear layers through LibTorch's quantized ops, on every engine
// this build has.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "frugal/deploy/quantize.h"
#include "frugal/error.h"
#include "frugal/models/small.h"
#include "test_support.h"

namespace nn = torch::nn;
using ::testing::HasSubstr;

namespace {

double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

size_t serialized_size(nn::Sequential net) {
  std::ostringstream out;
  torch::save(net, out);
  return out.str().size();
}

}  // namespace

TEST(QuantizeDynamic, TheBuildHasAnEngine) {
  const auto engines = frugal::quantization_engines();
  ASSERT_FALSE(engines.empty());
  for (const auto& e : engines) std::cout << "engine: " << e << "\n";
}

TEST(QuantizeDynamic, LinearOnEveryEngineIsCloseToFloatAndReallyInt8) {
  torch::manual_seed(0);
  nn::Linear linear(256, 64);
  at::Tensor x = torch::randn({32, 256});
  at::Tensor y = linear->forward(x).detach();
  for (const auto& engine : frugal::quantization_engines()) {
    for (bool per_channel : {true, false}) {
      SCOPED_TRACE(engine + (per_channel ? " per-channel" : " per-tensor"));
      frugal::DynamicQuantizeOptions options;
      options.engine = engine;
      options.per_channel = per_channel;
      frugal::DynamicQuantizedLinear q(*linear, options);
      EXPECT_EQ(q->engine(), engine);
      EXPECT_EQ(q->weight_int8.scalar_type(), at::kChar);
      EXPECT_EQ(q->weight_scale.numel(), per_channel ? 64 : 1);
      // The int8 weight is round(w / scale): within half a step of the float weight.
      at::Tensor step = per_channel ? q->weight_scale.to(at::kFloat).unsqueeze(1)
                                    : q->weight_scale.to(at::kFloat);
      EXPECT_TRUE(
          ((q->dequantized_weight() - linear->weight).abs() <= step * 0.5001).all().item<bool>());
      at::Tensor yq = q->forward(x);
      const double err = relative_error(yq, y);
      std::cout << engine << (per_channel ? " per-channel" : " per-tensor") << " relative error "
                << err << "\n";
      EXPECT_LT(err, 0.02);
      EXPECT_GT(err, 1e-5) << "outputs identical to float: not quantized";
      // Rank-3 inputs go through too.
      at::Tensor x3 = x.reshape({4, 8, 256});
      EXPECT_TRUE(torch::allclose(q->forward(x3).reshape({32, 64}), yq, 1e-5, 1e-5));
    }
  }
}

TEST(QuantizeDynamic, SequentialKeepsNamesSharesTheRestAndLeavesTheOriginal) {
  torch::manual_seed(1);
  nn::Sequential mlp = frugal::models::Mlp(784, 128, 10, 2);
  mlp->eval();
  at::Tensor x = torch::rand({64, 1, 28, 28});
  at::Tensor y = mlp->forward(x).detach();
  int64_t left = -1;
  nn::Sequential q = frugal::quantize_dynamic(mlp, {}, &left);
  EXPECT_EQ(left, 0);
  ASSERT_EQ(q->size(), mlp->size());
  int64_t quantized = 0;
  for (size_t i = 0; i < q->size(); ++i) {
    if (mlp->ptr(i)->as<nn::Linear>() != nullptr) {
      EXPECT_NE(q->ptr(i)->as<frugal::DynamicQuantizedLinear>(), nullptr) << i;
      ++quantized;
    } else {
      EXPECT_EQ(q->ptr(i).get(), mlp->ptr(i).get()) << "shared, not copied: " << i;
    }
  }
  EXPECT_EQ(quantized, 3);
  EXPECT_TRUE(torch::equal(mlp->forward(x), y)) << "the float model is unchanged";
  at::Tensor yq = q->forward(x);
  EXPECT_LT(relative_error(yq, y), 0.03);
  const double agree = yq.argmax(1).eq(y.argmax(1)).to(at::kDouble).mean().item<double>();
  EXPECT_GE(agree, 0.9);
  // int8 weights: the archive shrinks to about a quarter.
  const double ratio = static_cast<double>(serialized_size(q)) / serialized_size(mlp);
  std::cout << "archive size ratio " << ratio << "\n";
  EXPECT_LT(ratio, 0.3);
  EXPECT_GT(ratio, 0.2);
}

TEST(QuantizeDynamic, SavedStateReloadsWithEqualOutputs) {
  torch::manual_seed(2);
  nn::Sequential q = frugal::quantize_dynamic(frugal::models::Mlp(20, 16, 4, 2));
  const std::string path = frugal::testing::temp_dir("quantize_reload") + "/int8.pt";
  torch::save(q, path);
  torch::manual_seed(3);
  nn::Sequential other = frugal::quantize_dynamic(frugal::models::Mlp(20, 16, 4, 2));
  at::Tensor x = torch::randn({5, 20});
  ASSERT_FALSE(torch::equal(other->forward(x), q->forward(x)));
  torch::load(other, path);
  for (const auto& m : other->modules()) {
    if (auto* l = dynamic_cast<frugal::DynamicQuantizedLinearImpl*>(m.get())) l->repack();
  }
  EXPECT_TRUE(torch::equal(other->forward(x), q->forward(x)));
}

TEST(QuantizeDynamic, RefusesAnUnknownEngineNamingTheSupportedOnes) {
  frugal::DynamicQuantizeOptions options;
  options.engine = "tpu";
  try {
    frugal::quantize_dynamic(frugal::models::Mlp(8, 8, 2, 1), options);
    FAIL() << "accepted engine 'tpu'";
  } catch (const frugal::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'tpu'"));
    EXPECT_THAT(e.what(), HasSubstr(frugal::quantization_engines().front()));
  }
  nn::Linear float_linear(8, 4);
  frugal::DynamicQuantizedLinear q(*float_linear);
  EXPECT_THROW(q->forward(torch::randn({2, 7})), frugal::Error);
}

// The bundled models: output shapes, parameter counts, argument checks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_support.h"

namespace {

int64_t count(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(Models, ShapesAndSizes) {
  torch::NoGradGuard g;
  const at::Tensor x = torch::randn({2, 1, 28, 28});
  auto cnn = frugal::models::SmallCnn();
  EXPECT_EQ(cnn->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
  // conv 1->32 (3x3) + conv 32->64 (3x3) + fc 3136->128 + fc 128->10
  EXPECT_EQ(count(*cnn), (9 * 32 + 32) + (9 * 32 * 64 + 64) + (3136 * 128 + 128) + (128 * 10 + 10));
  auto bn = frugal::models::SmallCnnBn();
  EXPECT_EQ(bn->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
  auto mlp = frugal::models::Mlp(784, 64, 10, 2);
  EXPECT_EQ(mlp->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(count(*mlp), (784 * 64 + 64) + (64 * 64 + 64) + (64 * 10 + 10));
  auto resnet = frugal::models::ResNet18(10, 1);
  resnet->eval();
  EXPECT_EQ(resnet->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
  const int64_t n = count(*resnet);
  EXPECT_GT(n, 11'000'000);  // ResNet-18-sized
  EXPECT_LT(n, 11'300'000);
}

TEST(Models, BadArgumentsNameTheValues) {
  EXPECT_THAT(frugal::testing::error_message([] { frugal::models::SmallCnn(1); }),
              ::testing::HasSubstr("SmallCnn: need classes >= 2"));
  EXPECT_THAT(frugal::testing::error_message([] { frugal::models::ResNet18(10, 0); }),
              ::testing::HasSubstr("ResNet18: need classes >= 2 and in_channels >= 1; got 10, 0"));
}

}  // namespace

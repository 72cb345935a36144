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
  // ResNet18 is the general ResNet with its widths and two blocks per stage: same layers, same
  // parameter names (checkpoints stay loadable).
  auto general = frugal::models::ResNet(10, 1, {64, 128, 256, 512}, 2);
  EXPECT_EQ(count(*general), n);
  EXPECT_EQ(general->named_parameters().keys(), resnet->named_parameters().keys());
  auto small = frugal::models::SmallResNet(10, 1, 16);
  small->eval();
  EXPECT_EQ(small->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
  // stem conv+bn; stage 1: two 16->16 convs + bns; stage 2: 16->32, 32->32, bns, 1x1 shortcut +
  // bn; stage 3: the same at 32->64; fc 64->10.
  EXPECT_EQ(count(*small), (144 + 32) + (2 * 16 * 16 * 9 + 2 * 32) +
                               (16 * 32 * 9 + 32 * 32 * 9 + 2 * 64 + 16 * 32 + 64) +
                               (32 * 64 * 9 + 64 * 64 * 9 + 2 * 128 + 32 * 64 + 128) +
                               (64 * 10 + 10));
}

TEST(Models, BadArgumentsNameTheValues) {
  EXPECT_THAT(frugal::testing::error_message([] { frugal::models::SmallCnn(1); }),
              ::testing::HasSubstr("SmallCnn: need classes >= 2"));
  EXPECT_THAT(frugal::testing::error_message([] { frugal::models::ResNet18(10, 0); }),
              ::testing::HasSubstr("ResNet18: need classes >= 2 and in_channels >= 1; got 10, 0"));
  EXPECT_THAT(frugal::testing::error_message([] { frugal::models::SmallResNet(10, 1, 0); }),
              ::testing::HasSubstr("SmallResNet: need classes >= 2, in_channels >= 1 and width >= "
                                   "1; got 10, 1, 0"));
  EXPECT_THAT(frugal::testing::error_message([] { frugal::models::ResNet(10, 1, {}, 1); }),
              ::testing::HasSubstr("ResNet: widths must name at least one stage"));
}

}  // namespace

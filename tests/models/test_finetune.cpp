// Fine-tuning: freeze by prefix (weights and BatchNorm statistics bitwise unchanged through a
// Trainer fit while the head learns), unfreeze, parameter groups with their own learning rates,
// reset_classifier, and the BackboneFinetuning callback.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "frugal/callbacks/backbone_finetuning.h"
#include "frugal/classifier.h"
#include "frugal/io/weights.h"
#include "frugal/models/finetune.h"
#include "frugal/models/zoo.h"
#include "frugal/trainer.h"
#include "test_support.h"

namespace {

using frugal::TensorMap;
using frugal::testing::error_message;
using ::testing::HasSubstr;

std::shared_ptr<frugal::TensorLoader> images(int64_t n, int64_t classes, uint64_t seed) {
  torch::manual_seed(seed);
  auto y = torch::arange(n) % classes;
  auto x = torch::randn({n, 1, 32, 32}) + y.view({n, 1, 1, 1}).to(torch::kFloat);
  return std::make_shared<frugal::TensorLoader>(x, y, frugal::TensorLoaderOptions(8));
}

TensorMap snapshot(torch::nn::Module& m) {
  TensorMap out;
  for (const auto& [k, t] : frugal::module_state(m)) out[k] = t.detach().clone();
  return out;
}

TEST(Freeze, BackboneWeightsAndBatchNormStatisticsBitwiseUnchangedWhileTheHeadLearns) {
  auto net = frugal::models::mobilenet_v3_small(3, 1);
  const auto frozen = frugal::freeze(*net, {"features"});
  EXPECT_EQ(frozen.size(), 138u);  // every features.* parameter (142 minus the 4 of the head)
  const auto before = snapshot(*net);
  frugal::Classifier task(net, frugal::SGD(0.05, 0.9));
  frugal::Trainer trainer(frugal::testing::quiet_options().max_epochs(2));
  trainer.fit(task, images(32, 3, 1), images(16, 3, 2));  // validation switches eval/train too
  EXPECT_EQ(trainer.state().global_step, 8);
  const auto after = snapshot(*net);
  size_t same = 0, changed = 0;
  for (const auto& [k, t] : before) {
    if (frugal::name_under_prefix(k, "features")) {
      EXPECT_TRUE(torch::equal(after.at(k), t)) << k << " moved although frozen";
      ++same;
    } else {
      EXPECT_FALSE(torch::equal(after.at(k), t)) << k << " did not learn";
      ++changed;
    }
  }
  EXPECT_EQ(changed, 4u);  // classifier.0 and classifier.3 weights and biases
  EXPECT_GT(same, 200u);   // parameters + running_mean/var + num_batches_tracked
  // After the fit the module is in eval; back in train mode frozen BatchNorm stays in eval.
  net->train();
  frugal::keep_frozen_batchnorm_eval(*net);
  for (const auto& m : net->features->modules(false))
    if (m->as<torch::nn::BatchNorm2d>()) EXPECT_FALSE(m->is_training());
}

TEST(Freeze, WithoutFreezingTheStatisticsMove) {
  // The control for the test above: the same fit, nothing frozen, changes the backbone.
  auto net = frugal::models::mobilenet_v3_small(3, 1);
  const auto before = snapshot(*net);
  frugal::Classifier task(net, frugal::SGD(0.05, 0.9));
  frugal::Trainer trainer(frugal::testing::quiet_options().max_epochs(1));
  trainer.fit(task, images(32, 3, 1));
  const auto after = snapshot(*net);
  EXPECT_FALSE(
      torch::equal(after.at("features.0.1.running_mean"), before.at("features.0.1.running_mean")));
  EXPECT_FALSE(torch::equal(after.at("features.0.0.weight"), before.at("features.0.0.weight")));
}

TEST(Freeze, UnfreezeAndBadPrefixes) {
  auto net = frugal::models::resnet18(4, 1);
  frugal::freeze(*net, {"conv1", "bn1", "layer1", "layer2"});
  EXPECT_FALSE(net->conv1->weight.requires_grad());
  EXPECT_FALSE(net->bn1->weight.requires_grad());
  EXPECT_TRUE(net->layer3->parameters()[0].requires_grad());
  EXPECT_TRUE(net->fc->weight.requires_grad());
  net->train();
  frugal::keep_frozen_batchnorm_eval(*net);
  EXPECT_FALSE(net->bn1->is_training());
  const auto names = frugal::unfreeze(*net, {"layer2"});
  EXPECT_EQ(names.size(), 15u);  // 2 BasicBlocks x (2 convs + 2 BNs x 2) + downsample conv + BN (2)
  EXPECT_FALSE(net->conv1->weight.requires_grad());
  frugal::unfreeze(*net);
  for (const auto& p : net->parameters()) EXPECT_TRUE(p.requires_grad());
  // "layer1" must not cover "layer10..."; a prefix naming nothing is an error, nothing changed.
  EXPECT_FALSE(frugal::name_under_prefix("layer10.weight", "layer1"));
  EXPECT_TRUE(frugal::name_under_prefix("layer1.0.conv1.weight", "layer1"));
  EXPECT_THAT(error_message([&] {
                frugal::freeze(*net, {"fc", "backbone"});
              }),
              HasSubstr("freeze: no parameter is named 'backbone' or starts with 'backbone.'"));
  EXPECT_TRUE(net->fc->weight.requires_grad());
}

TEST(ParamGroups, BackboneAndHeadTrainWithTheirOwnLearningRates) {
  auto net = frugal::models::mobilenet_v3_small(3, 1);
  auto factory = frugal::with_param_groups(frugal::SGD(0.1), {{"features", 0.01}});
  auto config = factory(*net);
  auto& groups = config.optimizer->param_groups();
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_DOUBLE_EQ(groups[0].options().get_lr(), 0.01);
  EXPECT_DOUBLE_EQ(groups[1].options().get_lr(), 0.1);
  EXPECT_EQ(groups[0].params().size(), 138u);
  EXPECT_EQ(groups[1].params().size(), 4u);
  // One SGD step: each parameter moves by exactly its group's lr x its gradient.
  auto before = snapshot(*net);
  net->train();
  auto x = torch::randn({4, 1, 32, 32});
  auto loss = torch::nn::functional::cross_entropy(net->forward(x), torch::tensor({0, 1, 2, 0}));
  config.optimizer->zero_grad();
  loss.backward();
  config.optimizer->step();
  for (const auto& q : net->named_parameters()) {
    const double lr = frugal::name_under_prefix(q.key(), "features") ? 0.01 : 0.1;
    auto expected = before.at(q.key()) - lr * q.value().grad();
    EXPECT_TRUE(torch::allclose(q.value(), expected, 0, 1e-7)) << q.key();
  }
  EXPECT_THAT(error_message([] {
                frugal::with_param_groups(frugal::SGD(0.1), {{"x", 0}});
              }),
              HasSubstr("with_param_groups: lr for 'x' must be > 0, got 0"));
}

TEST(ResetClassifier, NewHeadWithTorchvisionInitialisation) {
  auto net = frugal::models::efficientnet_b0(1000, 3);
  net->reset_classifier(7);
  auto head = frugal::module_state(*net);
  ASSERT_EQ(head.at("classifier.1.weight").sizes(), (std::vector<int64_t>{7, 1280}));
  // EfficientNet's Linear init: U(-1/sqrt(out), 1/sqrt(out)), bias 0.
  EXPECT_LE(head.at("classifier.1.weight").abs().max().item<double>(), 1.0 / std::sqrt(7.0));
  EXPECT_EQ(head.at("classifier.1.bias").abs().max().item<double>(), 0.0);
  auto r18 = frugal::models::resnet18();
  r18->reset_classifier(3);
  EXPECT_EQ(r18->fc->weight.sizes(), (std::vector<int64_t>{3, 512}));
  EXPECT_TRUE(r18->fc->weight.requires_grad());
}

TEST(BackboneFinetuning, UnfreezesAtTheEpochWithALowerGrowingLearningRate) {
  auto net = frugal::models::mobilenet_v3_small(3, 1);
  auto ft = std::make_shared<frugal::BackboneFinetuning>(
      frugal::BackboneFinetuningOptions().backbone({"features"}).unfreeze_backbone_at_epoch(2));
  struct Probe : frugal::Callback {
    std::vector<double> backbone_lr;
    std::vector<size_t> groups;
    std::vector<bool> stem_trainable;
    std::shared_ptr<frugal::BackboneFinetuning> ft;
    void on_train_epoch_end(frugal::Trainer& t, frugal::Task& task) override {
      backbone_lr.push_back(ft->backbone_lr());
      groups.push_back(t.optimizer()->param_groups().size());
      stem_trainable.push_back(
          task.module().named_parameters()["features.0.0.weight"].requires_grad());
    }
  };
  auto probe = std::make_shared<Probe>();
  probe->ft = ft;
  frugal::Classifier task(net, frugal::SGD(0.1));
  frugal::Trainer trainer(frugal::testing::quiet_options().max_epochs(4), {ft, probe});
  auto stem_before = net->features->named_parameters()["0.0.weight"].detach().clone();
  trainer.fit(task, images(16, 3, 1));
  // Epochs 0-1 frozen (the optimizer holds the head only), 2: lr 0.1 x 0.1, 3: x 1.5.
  EXPECT_EQ(probe->groups, (std::vector<size_t>{1, 1, 2, 2}));
  EXPECT_EQ(probe->stem_trainable, (std::vector<bool>{false, false, true, true}));
  ASSERT_EQ(probe->backbone_lr.size(), 4u);
  EXPECT_NEAR(probe->backbone_lr[2], 0.01, 1e-12);
  EXPECT_NEAR(probe->backbone_lr[3], 0.015, 1e-12);
  EXPECT_FALSE(torch::equal(net->features->named_parameters()["0.0.weight"], stem_before));
  EXPECT_THAT(
      error_message([] { frugal::BackboneFinetuning{frugal::BackboneFinetuningOptions()}; }),
      HasSubstr("BackboneFinetuning: backbone must name at least one parameter prefix"));
}

}  // namespace

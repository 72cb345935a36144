// Activation checkpointing: the same gradients as the plain forward/backward (MLP, CNN, dropout
// with the RNG restored, any number of segments), the same training through the Trainer (fp32 and
// bf16 autocast), no recomputation in eval / no-grad, and clear errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_support.h"

namespace {

using frugal::testing::error_message;

torch::nn::Sequential make_mlp() {
  return torch::nn::Sequential(
      torch::nn::Linear(8, 32), torch::nn::Tanh(), torch::nn::Linear(32, 32), torch::nn::ReLU(),
      torch::nn::Linear(32, 32), torch::nn::Tanh(), torch::nn::Linear(32, 4));  // 7 modules
}

torch::nn::Sequential make_cnn() {
  return torch::nn::Sequential(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 4, 3).padding(1)), torch::nn::ReLU(),
      torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3).padding(1)), torch::nn::ReLU(),
      torch::nn::MaxPool2d(2), torch::nn::Flatten(),  // Flatten returns a view
      torch::nn::Linear(4 * 4 * 4, 3));               // 7 modules
}

torch::nn::Sequential make_dropout_mlp() {
  return torch::nn::Sequential(torch::nn::Linear(8, 32), torch::nn::ReLU(), torch::nn::Dropout(0.5),
                               torch::nn::Linear(32, 32), torch::nn::Dropout(0.5),
                               torch::nn::Linear(32, 4));  // 6 modules
}

/// Gradients of every parameter, then of the input (when it requires grad), for one
/// forward/backward from the given seed; segments = 0: the plain forward.
std::vector<at::Tensor> gradients(torch::nn::Sequential net, const at::Tensor& x, int64_t segments,
                                  bool preserve_rng_state = true, uint64_t seed = 7) {
  net->zero_grad();
  at::Tensor input = x.detach().clone().requires_grad_(x.requires_grad());
  torch::manual_seed(seed);
  at::Tensor out = segments == 0
                       ? net->forward(input)
                       : frugal::checkpoint_sequential(net, segments, input, preserve_rng_state);
  (out * torch::linspace(-1, 1, out.numel()).view(out.sizes())).sum().backward();
  std::vector<at::Tensor> grads;
  for (const auto& p : net->parameters()) {
    EXPECT_TRUE(p.grad().defined());
    grads.push_back(p.grad().clone());
  }
  if (input.requires_grad()) grads.push_back(input.grad().clone());
  return grads;
}

double max_rel_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double scale = std::max(b[i].abs().max().item<double>(), 1e-12);
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>() / scale);
  }
  return worst;
}

void expect_same_gradients(torch::nn::Sequential net, const at::Tensor& x,
                           std::vector<int64_t> segment_counts) {
  const auto reference = gradients(net, x, 0);
  for (int64_t s : segment_counts) {
    EXPECT_LE(max_rel_diff(gradients(net, x, s), reference), 1e-6) << "segments = " << s;
  }
}

TEST(ActivationCheckpoint, MlpGradientsEqualThePlainForward) {
  torch::manual_seed(0);
  auto net = make_mlp();
  auto x = torch::randn({5, 8}).requires_grad_();
  expect_same_gradients(net, x, {1, 2, 3, 7});
}

TEST(ActivationCheckpoint, CnnGradientsEqualThePlainForward) {
  torch::manual_seed(1);
  auto net = make_cnn();
  auto x = torch::randn({3, 2, 8, 8}).requires_grad_();
  expect_same_gradients(net, x, {1, 2, 7});
}

TEST(ActivationCheckpoint, ParametersGetGradientsWhenTheInputNeedsNone) {
  // The usual case: the first segment is fed with data. The parameters' gradients flow through
  // the graph's edges, not through the input's.
  torch::manual_seed(2);
  auto net = make_mlp();
  auto x = torch::randn({5, 8});
  expect_same_gradients(net, x, {2, 7});
}

TEST(ActivationCheckpoint, DropoutMasksAreReplayedFromTheSavedRngState) {
  torch::manual_seed(3);
  auto net = make_dropout_mlp();
  net->train();
  auto x = torch::randn({16, 8}).requires_grad_();
  const auto reference = gradients(net, x, 0);
  for (int64_t s : {2, 3, 6}) {
    EXPECT_LE(max_rel_diff(gradients(net, x, s), reference), 1e-6) << "segments = " << s;
  }
  // Guards: the masks matter (another seed gives other gradients), and without restoring the
  // RNG state the recomputation draws other masks, so the equality above is not vacuous.
  EXPECT_GT(max_rel_diff(gradients(net, x, 0, true, /*seed=*/8), reference), 1e-2);
  EXPECT_GT(max_rel_diff(gradients(net, x, 3, /*preserve_rng_state=*/false), reference), 1e-2);
}

TEST(ActivationCheckpoint, RecomputationLeavesTheCallersRngStreamAlone) {
  torch::manual_seed(4);
  auto net = make_dropout_mlp();
  auto x = torch::randn({16, 8});
  auto next_random = [&](int64_t segments) {
    gradients(net, x, segments);
    return torch::rand({4});
  };
  const auto plain = next_random(0);
  EXPECT_TRUE(torch::equal(next_random(3), plain));
  EXPECT_FALSE(torch::equal(next_random(0), torch::rand({4})));  // the stream does move
}

TEST(ActivationCheckpoint, AutogradGradSeesTheParametersAsGraphInputs) {
  torch::manual_seed(5);
  auto net = make_mlp();
  auto x = torch::randn({5, 8});
  auto params = net->parameters();
  auto loss_plain = net->forward(x).pow(2).sum();
  auto plain = torch::autograd::grad({loss_plain}, params);
  auto loss_ckpt = frugal::checkpoint_sequential(net, 3, x).pow(2).sum();
  auto ckpt = torch::autograd::grad({loss_ckpt}, params);
  EXPECT_LE(max_rel_diff(ckpt, plain), 1e-6);
  for (const auto& p : params) EXPECT_FALSE(p.grad().defined());  // grad() accumulates nothing
}

// A Linear that counts its forward calls.
struct CountingImpl : torch::nn::Module {
  CountingImpl(int* calls)
      : linear(register_module("linear", torch::nn::Linear(6, 6))), calls(calls) {}
  at::Tensor forward(const at::Tensor& x) {
    ++*calls;
    return linear(x);
  }
  torch::nn::Linear linear;
  int* calls;
};
TORCH_MODULE(Counting);

TEST(ActivationCheckpoint, WrapperRecomputesOnlyWhileTrainingWithGrad) {
  std::vector<int> calls(4, 0);
  torch::nn::Sequential seq;
  for (auto& c : calls) seq->push_back(Counting(&c));
  frugal::CheckpointedSequential net(seq, frugal::CheckpointedSequentialOptions(2));
  auto x = torch::randn({3, 6});

  net->train();
  auto out = net->forward(x);
  out.sum().backward();
  EXPECT_EQ(calls, (std::vector<int>{2, 2, 1, 1}));  // first segment recomputed; last one not

  std::fill(calls.begin(), calls.end(), 0);
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(net->forward(x).requires_grad());
  }
  EXPECT_EQ(calls, (std::vector<int>{1, 1, 1, 1}));

  std::fill(calls.begin(), calls.end(), 0);
  net->eval();
  out = net->forward(x);
  ASSERT_TRUE(out.requires_grad());
  out.sum().backward();  // eval with grad mode: a plain graph, nothing to recompute
  EXPECT_EQ(calls, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(seq->forward(x).sum().item<double>(), out.sum().item<double>());
}

TEST(ActivationCheckpoint, WrapperHasTheSequentialsParameterNames) {
  auto seq = make_cnn();
  frugal::CheckpointedSequential net(seq, 3);
  EXPECT_EQ(net->named_parameters().keys(), seq->named_parameters().keys());
  ASSERT_EQ(net->parameters().size(), seq->parameters().size());
  for (size_t i = 0; i < seq->parameters().size(); ++i) {
    EXPECT_TRUE(net->parameters()[i].is_same(seq->parameters()[i]));
  }
}

std::vector<at::Tensor> train(bool checkpointed, frugal::Precision precision) {
  torch::manual_seed(11);
  auto seq = make_dropout_mlp();
  auto d = frugal::testing::make_toy_data(48, 8, 4);
  auto src = std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(8));
  frugal::Trainer trainer(frugal::testing::quiet_options().max_epochs(2).precision(
      std::string(frugal::to_string(precision))));
  if (checkpointed) {
    frugal::Classifier task(frugal::CheckpointedSequential(seq, 3), frugal::SGD(0.1));
    trainer.fit(task, src);
  } else {
    frugal::Classifier task(seq, frugal::SGD(0.1));
    trainer.fit(task, src);
  }
  EXPECT_EQ(trainer.state().global_step, 12);
  std::vector<at::Tensor> params;
  for (const auto& p : seq->parameters()) params.push_back(p.detach().clone());
  return params;
}

TEST(ActivationCheckpoint, TrainingThroughTheTrainerGivesThePlainModelsParameters) {
  const auto plain = train(false, frugal::Precision::k32);
  EXPECT_LE(max_rel_diff(train(true, frugal::Precision::k32), plain), 1e-6);
}

TEST(ActivationCheckpoint, RecomputationReentersTheForwardsAutocastState) {
  // bf16-mixed: the recomputation must run in bf16 like the forward did. Guard: bf16 training
  // ends far from fp32 training, so running the recomputation in fp32 could not pass.
  const auto plain = train(false, frugal::Precision::kBf16Mixed);
  EXPECT_LE(max_rel_diff(train(true, frugal::Precision::kBf16Mixed), plain), 1e-6);
  EXPECT_GT(max_rel_diff(train(false, frugal::Precision::k32), plain), 1e-4);
}

TEST(ActivationCheckpoint, BadSegmentCountsAreRefusedNamingTheValues) {
  auto net = make_mlp();
  auto x = torch::randn({2, 8});
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "segments must be between 1 and the number of modules in the Sequential (7), "
                      "got segments = 0",
                      error_message([&] { frugal::checkpoint_sequential(net, 0, x); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "(7), got segments = 8",
                      error_message([&] { frugal::checkpoint_sequential(net, 8, x); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "CheckpointedSequential: segments must be",
                      error_message([&] { frugal::CheckpointedSequential(net, -1); }));
}

TEST(ActivationCheckpoint, AnInPlaceFirstModuleIsRefused) {
  // Segment 1 (the ReLU) would overwrite segment 0's output, the input it saves for backward.
  torch::nn::Sequential net(torch::nn::Linear(8, 8),
                            torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)),
                            torch::nn::Linear(8, 2));
  auto x = torch::randn({2, 8});
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "modified its input in place",
                      error_message([&] { frugal::checkpoint_sequential(net, 3, x); }));
}

}  // namespace

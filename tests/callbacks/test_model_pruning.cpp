// ModelPruning: the masks equal torch.nn.utils.prune's (l1_unstructured and global_unstructured,
// applied repeatedly, Python's round-half-even counts) for the same tensors; Lightning's default
// choice and order of parameters; masks kept through training (pruned weights zero at every
// batch, their gradients zero at the optimizer step); the lottery ticket reset; permanent at the
// end; and a resumed run continues exactly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "frugal/callbacks/model_checkpoint.h"
#include "frugal/callbacks/model_pruning.h"
#include "frugal/classifier.h"
#include "frugal/data/batch_source.h"
#include "frugal/task.h"
#include "frugal/trainer.h"
#include "test_support.h"

namespace nn = torch::nn;
using frugal::testing::error_message;

namespace {

bool have_torch() {
  return std::system("/usr/bin/python3 -c 'import torch.nn.utils.prune' >/dev/null 2>&1") == 0;
}

void write_raw(const std::string& path, const at::Tensor& t) {
  const at::Tensor c = t.contiguous().to(at::kFloat);
  std::ofstream(path, std::ios::binary)
      .write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

at::Tensor read_raw(const std::string& path, at::IntArrayRef shape) {
  at::Tensor t = torch::empty(shape);
  std::ifstream in(path, std::ios::binary);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  EXPECT_TRUE(in.good()) << path;
  return t;
}

// PyTorch applies the amounts one after the other to Parameters holding our tensors and writes
// the final masks: argv = folder, "global" | "local", amounts...
const char* kOracle = R"PY(
import sys, numpy as np, torch
import torch.nn.utils.prune as prune
d, mode, amounts = sys.argv[1], sys.argv[2], [float(a) for a in sys.argv[3:]]
shapes = [(7, 5), (3, 7), (7,), (3,)]
mods = []
for i, s in enumerate(shapes):
    m = torch.nn.Module()
    m.w = torch.nn.Parameter(torch.from_numpy(np.fromfile(f"{d}/t{i}.f32", dtype=np.float32).reshape(s)))
    mods.append(m)
for a in amounts:
    if mode == "global":
        prune.global_unstructured([(m, "w") for m in mods], pruning_method=prune.L1Unstructured, amount=a)
    else:
        for m in mods:
            prune.l1_unstructured(m, "w", amount=a)
for i, m in enumerate(mods):
    m.w_mask.numpy().astype(np.float32).tofile(f"{d}/{mode}_mask{i}.f32")
)PY";

struct Data {
  at::Tensor x, y;
};
Data toy(int64_t n = 64) {
  torch::manual_seed(11);
  return {torch::randn({n, 6}), torch::randint(0, 3, {n})};
}

nn::Sequential mlp(uint64_t seed) {
  torch::manual_seed(seed);
  return nn::Sequential(nn::Linear(6, 12), nn::ReLU(), nn::Linear(12, 3));
}

// Checks, at every training batch, that pruned entries are zero in the weights and, at every
// optimizer step, in the gradients (it runs after ModelPruning's hooks).
struct MaskWatcher : frugal::Callback {
  std::shared_ptr<frugal::ModelPruning> pruning;
  std::vector<at::Tensor> params;
  int64_t weight_checks = 0, grad_checks = 0, violations = 0;
  std::vector<at::Tensor> initial;
  std::vector<bool> lottery_ok;  // per pruning epoch: unpruned weights back at their start
  std::string state_key() const override { return "MaskWatcher"; }
  void on_fit_start(frugal::Trainer&, frugal::Task& task) override {
    params = {task.module().named_parameters()["0.weight"],
              task.module().named_parameters()["2.weight"]};
    for (auto& p : params) initial.push_back(p.detach().clone());
  }
  void zero_where_pruned(const std::vector<at::Tensor>& tensors, int64_t* checks) {
    const auto state = pruning->state_dict();
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (!tensors[i].defined()) continue;
      const auto it = state.find(i == 0 ? "mask:0.weight" : "mask:2.weight");
      if (it == state.end()) continue;
      const at::Tensor pruned = it->second.toTensor() == 0;
      if (tensors[i].masked_select(pruned).abs().sum().item<double>() != 0) ++violations;
      ++*checks;
    }
  }
  void on_train_batch_start(frugal::Trainer&, frugal::Task&, const frugal::Batch&,
                            int64_t) override {
    zero_where_pruned(params, &weight_checks);
  }
  void on_before_optimizer_step(frugal::Trainer&, frugal::Task&,
                                torch::optim::Optimizer&) override {
    zero_where_pruned({params[0].grad(), params[1].grad()}, &grad_checks);
  }
  void on_train_epoch_start(frugal::Trainer& t, frugal::Task&) override {
    if (t.state().epoch == 0) return;
    bool ok = true;
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor kept = params[i] != 0;
      ok = ok && params[i].masked_select(kept).equal(initial[i].masked_select(kept));
    }
    lottery_ok.push_back(ok);
  }
};

std::vector<at::Tensor> fit(frugal::ModelPruningOptions options, int64_t epochs,
                            std::shared_ptr<MaskWatcher> watcher = nullptr,
                            std::shared_ptr<frugal::ModelPruning>* out = nullptr) {
  const Data d = toy();
  nn::Sequential net = mlp(5);
  frugal::Classifier task(net, frugal::SGD(0.1));
  auto pruning = std::make_shared<frugal::ModelPruning>(options);
  std::vector<std::shared_ptr<frugal::Callback>> callbacks{pruning};
  if (watcher) {
    watcher->pruning = pruning;
    callbacks.push_back(watcher);
  }
  frugal::Trainer trainer(
      frugal::testing::quiet_options().max_epochs(epochs).gradient_clip_val(0.5).num_threads(1),
      callbacks);
  trainer.fit(task,
              std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(16)));
  if (out) *out = pruning;
  std::vector<at::Tensor> params;
  for (const auto& p : net->parameters()) params.push_back(p.detach().clone());
  return params;
}

}  // namespace

TEST(ModelPruning, MasksEqualTorchPrunesForTheSameTensors) {
  if (!have_torch()) GTEST_SKIP() << "needs /usr/bin/python3 with torch (python3-torch)";
  const std::string dir = frugal::testing::temp_dir("model_pruning_oracle");
  torch::manual_seed(7);
  const std::vector<std::vector<int64_t>> shapes = {{7, 5}, {3, 7}, {7}, {3}};
  std::vector<at::Tensor> tensors;
  for (size_t i = 0; i < shapes.size(); ++i) {
    tensors.push_back(torch::randn(shapes[i]));
    write_raw(dir + "/t" + std::to_string(i) + ".f32", tensors.back());
  }
  std::ofstream(dir + "/oracle.py") << kOracle;
  // 0.5 x 35 = 17.5 and 0.5 x 7 = 3.5 round to even; then fractions of what is left.
  const std::vector<double> amounts = {0.5, 0.3, 0.25};
  for (const std::string mode : {"global", "local"}) {
    const std::string cmd =
        "/usr/bin/python3 " + dir + "/oracle.py " + dir + " " + mode + " 0.5 0.3 0.25";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::vector<at::Tensor> masks;
    for (const auto& t : tensors) masks.push_back(torch::ones_like(t));
    for (const double a : amounts) {
      frugal::l1_unstructured_prune_masks(tensors, masks, a, mode == "global");
    }
    int64_t pruned = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const at::Tensor expected =
          read_raw(dir + "/" + mode + "_mask" + std::to_string(i) + ".f32", shapes[i]);
      EXPECT_TRUE(masks[i].equal(expected)) << mode << " tensor " << i << "\n"
                                            << masks[i] << "\n"
                                            << expected;
      pruned += (masks[i] == 0).sum().item<int64_t>();
    }
    EXPECT_GT(pruned, 30) << mode;
  }
}

TEST(ModelPruning, DefaultParametersAreLightningsInItsOrder) {
  nn::Sequential net(nn::Linear(2, 3), nn::ReLU(), nn::BatchNorm1d(3), nn::Linear(3, 1));
  std::vector<std::string> names;
  for (const auto& [name, t] : frugal::default_prunable_parameters(*net)) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "2.weight", "3.weight", "0.bias", "2.bias",
                                             "3.bias"}));
  EXPECT_EQ(frugal::default_prunable_parameters(*net, {"weight"}).size(), 3u);
}

TEST(ModelPruning, MasksHoldThroughTrainingAndBecomePermanent) {
  auto watcher = std::make_shared<MaskWatcher>();
  std::shared_ptr<frugal::ModelPruning> pruning;
  const auto params = fit(frugal::ModelPruningOptions()
                              .amount(0.5)
                              .parameter_names({"weight"})
                              .use_lottery_ticket_hypothesis(false),
                          3, watcher, &pruning);
  EXPECT_EQ(watcher->violations, 0);
  EXPECT_GT(watcher->weight_checks, 10);
  EXPECT_GT(watcher->grad_checks, 10);
  // 108 weights: 54 pruned after epoch 0, 27 more after 1, round(0.5 x 27) = 14 after 2.
  const int64_t zeros =
      (params[0] == 0).sum().item<int64_t>() + (params[2] == 0).sum().item<int64_t>();
  EXPECT_EQ(zeros, 54 + 27 + 14);
  EXPECT_NEAR(pruning->sparsity(), 95.0 / 108, 1e-12);
  EXPECT_EQ(pruning->parameter_names(), (std::vector<std::string>{"0.weight", "2.weight"}));
  EXPECT_EQ((params[1] == 0).sum().item<int64_t>(), 0);  // biases untouched
}

TEST(ModelPruning, LotteryTicketResetsTheUnprunedWeights) {
  auto watcher = std::make_shared<MaskWatcher>();
  fit(frugal::ModelPruningOptions().amount(0.3).parameter_names({"weight"}), 3, watcher);
  ASSERT_EQ(watcher->lottery_ok.size(), 2u);
  EXPECT_TRUE(watcher->lottery_ok[0]);
  EXPECT_TRUE(watcher->lottery_ok[1]);
  // Without it, training moves them on.
  auto free = std::make_shared<MaskWatcher>();
  fit(frugal::ModelPruningOptions()
          .amount(0.3)
          .parameter_names({"weight"})
          .use_lottery_ticket_hypothesis(false),
      3, free);
  EXPECT_FALSE(free->lottery_ok[1]);
}

TEST(ModelPruning, ScheduleAndGlobalOrPerTensor) {
  std::shared_ptr<frugal::ModelPruning> pruning;
  // Only epoch 1 prunes; per tensor: each tensor loses round(0.25 x n).
  const auto params = fit(frugal::ModelPruningOptions()
                              .amount_fn([](int64_t e) { return e == 1 ? 0.25 : 0.0; })
                              .use_global_unstructured(false)
                              .use_lottery_ticket_hypothesis(false),
                          3, nullptr, &pruning);
  EXPECT_EQ((params[0] == 0).sum().item<int64_t>(), 18);  // 72 weights
  EXPECT_EQ((params[1] == 0).sum().item<int64_t>(), 3);   // 12 biases
  EXPECT_EQ((params[2] == 0).sum().item<int64_t>(), 9);   // 36 weights
  EXPECT_EQ((params[3] == 0).sum().item<int64_t>(), 1);   // round(0.75) biases
  const auto per_tensor = pruning->sparsities();
  ASSERT_EQ(per_tensor.size(), 4u);
  EXPECT_EQ(per_tensor[0].first, "0.weight");
  EXPECT_DOUBLE_EQ(per_tensor[0].second, 0.25);
}

TEST(ModelPruning, ResumedRunContinuesExactly) {
  // The masks and the lottery ticket are in the checkpoint written mid-training (after epoch 1):
  // resumed, the run ends exactly as the uninterrupted one.
  const auto options = frugal::ModelPruningOptions().amount(0.4);
  const Data d = toy();
  const std::string dir = frugal::testing::temp_dir("model_pruning_resume");
  auto source = [&] {
    return std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(16));
  };
  const auto trainer_options = frugal::testing::quiet_options()
                                   .max_epochs(4)
                                   .gradient_clip_val(0.5)
                                   .num_threads(1)
                                   .default_root_dir(dir);
  std::vector<at::Tensor> straight;
  {
    nn::Sequential net = mlp(5);
    frugal::Classifier task(net, frugal::SGD(0.1));
    auto checkpoints = std::make_shared<frugal::ModelCheckpoint>(
        frugal::ModelCheckpointOptions().dirpath(dir).save_top_k(-1).every_n_epochs(1));
    frugal::Trainer trainer(trainer_options,
                            {std::make_shared<frugal::ModelPruning>(options), checkpoints});
    trainer.fit(task, source());
    for (const auto& p : net->parameters()) straight.push_back(p.detach().clone());
  }
  ASSERT_TRUE(std::filesystem::exists(dir + "/epoch=1-step=8.ckpt"));
  nn::Sequential net = mlp(99);  // other initial weights: all must come from the checkpoint
  frugal::Classifier task(net, frugal::SGD(0.1));
  auto pruning = std::make_shared<frugal::ModelPruning>(options);
  frugal::Trainer resumed(trainer_options, {pruning});
  resumed.fit(task, source(), nullptr, dir + "/epoch=1-step=8.ckpt");
  const auto params = net->parameters();
  ASSERT_EQ(params.size(), straight.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(params[i].equal(straight[i])) << "parameter " << i;
  }
  EXPECT_GT(pruning->sparsity(), 0.8);
}

TEST(ModelPruning, BadOptionsAreErrors) {
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "amount must be in [0, 1]", error_message([] {
                        frugal::ModelPruning(frugal::ModelPruningOptions().amount(1.5));
                      }));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "pruning_fn must be \"l1_unstructured\"",
      error_message([] { frugal::ModelPruning(frugal::ModelPruningOptions().pruning_fn("ln")); }));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "\"running_mean\"", error_message([] {
        frugal::ModelPruning(frugal::ModelPruningOptions().parameter_names({"running_mean"}));
      }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "no parameter \"9.weight\"", error_message([] {
                        fit(frugal::ModelPruningOptions().parameters({"9.weight"}), 1);
                      }));
}

// frugal::prune_channels: the pruned model computes what the original computes with the pruned
// channels' contributions removed; the channels are the ones torch.nn.utils.prune.ln_structured
// picks; the pruned model shrinks as counted, trains, reloads and exports.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "frugal/deploy/onnx.h"
#include "frugal/error.h"
#include "frugal/io/weights.h"
#include "frugal/models/channel_pruning.h"
#include "frugal/models/small.h"
#include "frugal/models/zoo.h"
#include "python_oracle.h"
#include "test_support.h"

namespace nn = torch::nn;
using frugal::testing::error_message;

namespace {

struct Case {
  std::string name;
  std::function<std::shared_ptr<nn::Module>()> make;
  std::function<at::Tensor(nn::Module&, const at::Tensor&)> forward;
  std::vector<int64_t> input;
};

template <typename Holder>
Case sequential_case(const std::string& name, std::function<Holder()> make,
                     std::vector<int64_t> input) {
  return {name, [make] { return make().ptr(); },
          [](nn::Module& m, const at::Tensor& x) {
            return dynamic_cast<nn::SequentialImpl&>(m).forward(x);
          },
          input};
}

Case zoo_case(const std::string& name, std::vector<int64_t> input) {
  return {name, [name] { return frugal::models::create_model(name, 10); },
          [](nn::Module& m, const at::Tensor& x) {
            return dynamic_cast<frugal::models::ZooModel&>(m).forward(x);
          },
          input};
}

std::vector<Case> cases() {
  using frugal::models::Mlp;
  using frugal::models::SmallCnn;
  using frugal::models::SmallCnnBn;
  using frugal::models::SmallResNet;
  return {
      sequential_case<nn::Sequential>("SmallCnn", [] { return SmallCnn(); }, {3, 1, 28, 28}),
      sequential_case<nn::Sequential>("SmallCnnBn", [] { return SmallCnnBn(); }, {3, 1, 28, 28}),
      sequential_case<nn::Sequential>("Mlp", [] { return Mlp(784, 64, 10, 2); }, {3, 1, 28, 28}),
      sequential_case<nn::Sequential>("SmallResNet", [] { return SmallResNet(); }, {3, 1, 28, 28}),
      zoo_case("resnet18", {2, 3, 64, 64}),
      zoo_case("resnet50", {2, 3, 64, 64}),
      zoo_case("mobilenet_v2", {2, 3, 64, 64}),
      zoo_case("mobilenet_v3_small", {2, 3, 64, 64}),
      zoo_case("efficientnet_b0", {2, 3, 64, 64}),
  };
}

nn::Module& submodule(nn::Module& root, const std::string& path) {
  for (const auto& m : root.named_modules()) {
    if (m.key() == path) return *m.value();
  }
  throw std::runtime_error("no module " + path);
}

/// Random BatchNorm statistics and affine parameters, so that every channel carries a signal.
void randomize_batch_norm(nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model.modules()) {
    if (auto* bn = m->as<nn::BatchNorm2d>()) {
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
      bn->running_mean.uniform_(-0.1, 0.1);
      bn->running_var.uniform_(0.5, 1.5);
    }
  }
}

/// In `model`, the contribution of every channel the report prunes is removed where it is read:
/// the consumer's input columns and a squeeze-excitation's input columns are zeroed.
void zero_pruned_inputs(nn::Module& model, const frugal::ChannelPruningReport& report) {
  torch::NoGradGuard no_grad;
  for (const auto& g : report.groups) {
    std::set<int64_t> kept(g.kept.begin(), g.kept.end());
    std::vector<int64_t> gone;
    for (int64_t c = 0; c < g.channels_before; ++c) {
      if (!kept.count(c)) gone.push_back(c);
    }
    auto zero_columns = [&](at::Tensor w, int64_t per_channel) {
      for (int64_t c : gone) w.narrow(1, c * per_channel, per_channel).zero_();
    };
    nn::Module& consumer = submodule(model, g.consumer);
    if (auto* conv = consumer.as<nn::Conv2d>()) zero_columns(conv->weight, 1);
    if (auto* lin = consumer.as<nn::Linear>()) zero_columns(lin->weight, g.columns_per_channel);
    for (const auto& a : g.along) {
      if (auto* se = submodule(model, a).as<frugal::models::SqueezeExcitation>()) {
        zero_columns(se->fc1->weight, 1);
      }
    }
  }
}

}  // namespace

TEST(ChannelPruning, PrunedModelComputesTheOriginalWithoutThePrunedChannels) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    torch::manual_seed(0);
    auto model = c.make();
    randomize_batch_norm(*model);
    model->eval();
    auto reference = c.make();
    frugal::load_state_dict(*reference, frugal::module_state(*model));
    reference->eval();
    const auto report = frugal::prune_channels(*model, frugal::ChannelPruningOptions().amount(0.5));
    ASSERT_FALSE(report.groups.empty());
    EXPECT_LT(report.parameters_after, report.parameters_before);
    EXPECT_LT(report.channels_after, report.channels_before);
    zero_pruned_inputs(*reference, report);
    torch::NoGradGuard no_grad;
    at::Tensor x = torch::rand(c.input);
    at::Tensor expected = c.forward(*reference, x);
    at::Tensor got = c.forward(*model, x);
    const double err = ((got - expected).abs().max() / expected.abs().max()).item<double>();
    std::cout << c.name << ": " << report.groups.size() << " groups, " << report.channels_before
              << " -> " << report.channels_after << " channels, " << report.parameters_before
              << " -> " << report.parameters_after << " parameters, difference " << err << "\n";
    EXPECT_LT(err, 1e-5);
  }
}

TEST(ChannelPruning, ShapesAndCountsAreTheExpectedOnes) {
  torch::manual_seed(1);
  auto resnet = frugal::models::resnet18(10);
  const auto r = frugal::prune_channels(*resnet, frugal::ChannelPruningOptions().amount(0.5));
  EXPECT_EQ(r.groups.size(), 8u);  // one per BasicBlock
  auto& block = submodule(*resnet, "layer2.1");
  auto w1 = block.named_parameters()["conv1.weight"], w2 = block.named_parameters()["conv2.weight"];
  EXPECT_EQ(w1.sizes(), (std::vector<int64_t>{64, 128, 3, 3}));
  EXPECT_EQ(w2.sizes(), (std::vector<int64_t>{128, 64, 3, 3}));
  EXPECT_EQ(block.named_buffers()["bn1.running_var"].numel(), 64);
  // Each BasicBlock's inner width c halves: conv1 and conv2 lose c/2 * in * 9 and out * c/2 * 9,
  // bn1 loses c (weight and bias).
  int64_t removed = 0;
  for (int64_t stage = 0; stage < 4; ++stage) {
    const int64_t c = 64 << stage;
    for (int64_t b = 0; b < 2; ++b) {
      const int64_t in = (b == 0 && stage > 0) ? c / 2 : c;
      removed += (c / 2) * in * 9 + c * (c / 2) * 9 + c;
    }
  }
  EXPECT_EQ(r.parameters_before - r.parameters_after, removed);

  auto mnv2 = frugal::models::mobilenet_v2(10);
  const auto m = frugal::prune_channels(*mnv2, frugal::ChannelPruningOptions().amount(0.25));
  EXPECT_EQ(m.groups.size(), 16u);  // the 16 blocks with an expand convolution
  auto& b = submodule(*mnv2, "features.2.conv");
  // 16 -> 96 expanded channels; 72 kept
  EXPECT_EQ(b.named_parameters()["0.0.weight"].sizes(), (std::vector<int64_t>{72, 16, 1, 1}));
  EXPECT_EQ(b.named_parameters()["1.0.weight"].sizes(), (std::vector<int64_t>{72, 1, 3, 3}));
  EXPECT_EQ(b.named_parameters()["2.weight"].sizes(), (std::vector<int64_t>{24, 72, 1, 1}));
  EXPECT_EQ(submodule(b, "1.0").as<nn::Conv2d>()->options.groups(), 72);
}

namespace {

/// The kept channels torch.nn.utils.prune.ln_structured(n=1, dim=0, amount) gives for each
/// producer weight of `report` (taken from `before`), one list per group.
std::vector<std::vector<int64_t>> torch_kept(const std::map<std::string, at::Tensor>& before,
                                             const frugal::ChannelPruningReport& report,
                                             double amount, const std::string& name) {
  const std::string dir = frugal::testing::temp_dir(name);
  std::ofstream list(dir + "/list.txt");
  int index = 0;
  for (const auto& g : report.groups) {
    at::Tensor w = before.at(g.producer + ".weight").contiguous();
    const std::string file = dir + "/w" + std::to_string(index++) + ".bin";
    std::ofstream(file, std::ios::binary)
        .write(static_cast<const char*>(w.data_ptr()), static_cast<std::streamsize>(w.nbytes()));
    list << file << " " << w.size(0) << " " << w.numel() / w.size(0) << "\n";
  }
  list.close();
  std::ofstream(dir + "/oracle.py") << R"(
import sys, numpy as np, torch, torch.nn.utils.prune as prune
out = open(sys.argv[1] + "/kept.txt", "w")
for line in open(sys.argv[1] + "/list.txt"):
    path, rows, cols = line.split()
    w = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(int(rows), int(cols)))
    lin = torch.nn.Linear(int(cols), int(rows), bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    prune.ln_structured(lin, "weight", amount=float(sys.argv[2]), n=1, dim=0)
    kept = lin.weight_mask[:, 0].nonzero().flatten().tolist()
    out.write(" ".join(map(str, kept)) + "\n")
)";
  const std::string cmd =
      "/usr/bin/python3 " + dir + "/oracle.py " + dir + " " + std::to_string(amount);
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::vector<std::vector<int64_t>> kept;
  std::ifstream kept_file(dir + "/kept.txt");
  for (std::string line; std::getline(kept_file, line);) {
    std::istringstream in(line);
    kept.emplace_back();
    for (int64_t k; in >> k;) kept.back().push_back(k);
  }
  return kept;
}

}  // namespace

TEST(ChannelPruning, ChannelsAreTheOnesTorchLnStructuredKeeps) {
  if (!frugal::testing::python_can("import torch.nn.utils.prune, numpy")) {
    GTEST_SKIP() << "needs /usr/bin/python3 with torch and numpy (python3-torch)";
  }
  // MobileNetV3-Small (11 groups, through squeeze-excitation blocks and the head) at 0.3, and
  // SmallCnn's 32 + 64 + 128 channels at amounts whose count falls half-way: 32 x 0.265625 = 8.5
  // rounds to 8 and 32 x 0.296875 = 9.5 to 10 (Python's round, half to even).
  struct Run {
    std::shared_ptr<nn::Module> model;
    double amount;
  };
  torch::manual_seed(2);
  std::vector<Run> runs = {{frugal::models::mobilenet_v3_small(10).ptr(), 0.3},
                           {frugal::models::SmallCnn().ptr(), 0.265625},
                           {frugal::models::SmallCnn().ptr(), 0.296875}};
  int run_index = 0;
  for (auto& run : runs) {
    SCOPED_TRACE(run.amount);
    std::map<std::string, at::Tensor> before;
    for (const auto& p : run.model->named_parameters())
      before[p.key()] = p.value().detach().clone();
    const auto report =
        frugal::prune_channels(*run.model, frugal::ChannelPruningOptions().amount(run.amount));
    const auto expected = torch_kept(before, report, run.amount,
                                     "channel_pruning_oracle_" + std::to_string(run_index++));
    ASSERT_EQ(expected.size(), report.groups.size());
    for (size_t g = 0; g < expected.size(); ++g) {
      EXPECT_EQ(report.groups[g].kept, expected[g]) << report.groups[g].producer;
    }
    std::cout << report.groups.size() << " groups at amount " << run.amount
              << " compared with torch.nn.utils.prune.ln_structured\n";
  }
  EXPECT_EQ(runs[1].model->named_parameters()["0.weight"].size(0), 32 - 8);
  EXPECT_EQ(runs[2].model->named_parameters()["0.weight"].size(0), 32 - 10);
}

TEST(ChannelPruning, PrunedModelTrainsReloadsAndExports) {
  torch::manual_seed(3);
  auto model = frugal::models::mobilenet_v3_small(4);
  frugal::prune_channels(*model, frugal::ChannelPruningOptions().amount(0.5));
  model->train();
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  at::Tensor x = torch::rand({8, 3, 32, 32}), y = torch::randint(0, 4, {8});
  double first = 0, last = 0;
  for (int step = 0; step < 15; ++step) {
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, first);
  model->eval();
  // A fresh model pruned with the same options has the same shapes and takes the state.
  auto fresh = frugal::models::mobilenet_v3_small(4);
  frugal::prune_channels(*fresh, frugal::ChannelPruningOptions().amount(0.5));
  frugal::load_state_dict(*fresh, frugal::module_state(*model));
  fresh->eval();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(fresh->forward(x), model->forward(x)));
  // An unpruned model refuses it, naming a shape.
  auto unpruned = frugal::models::mobilenet_v3_small(4);
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "features.2.block.0.0.weight: file [36, 16, 1, 1]",
      error_message([&] { frugal::load_state_dict(*unpruned, frugal::module_state(*model)); }));
  if (frugal::onnx_export_available()) {
    EXPECT_GT(frugal::export_onnx_to_string(*model, x.slice(0, 0, 1)).size(), 10000u);
  }
}

TEST(ChannelPruning, BadOptionsAndUnprunableModelsAreNamed) {
  auto net = frugal::models::SmallCnn();
  const auto before = frugal::module_state(*net);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "options.amount must be in [0, 1), got 1",
                      error_message([&] {
                        frugal::prune_channels(*net, frugal::ChannelPruningOptions().amount(1.0));
                      }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "got -0.1", error_message([&] {
                        frugal::prune_channels(*net, frugal::ChannelPruningOptions().amount(-0.1));
                      }));
  nn::Sequential lonely(nn::Linear(4, 2));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "has no prunable channel group",
                      error_message([&] { frugal::prune_channels(*lonely); }));
  for (const auto& kv : frugal::module_state(*net)) {
    EXPECT_TRUE(at::equal(kv.second, before.at(kv.first))) << kv.first;
  }
}

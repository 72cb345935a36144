// ScriptModule: a TorchScript module written by Python (torch.jit.script) trained by frugal's
// Trainer. Python is the oracle (tests/deploy/torchscript_oracle.py): the same module trained one
// epoch by PyTorch ends with the same parameters and BatchNorm buffers as frugal's; the file
// frugal saves back runs in Python's torch.jit.load with outputs equal to LibTorch's (<= 1e-6);
// a checkpoint taken mid-epoch resumes exactly; a parameter Python froze stays frozen.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "frugal/deploy/torchscript.h"
#include "test_support.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

// True when `python` imports torch of LibTorch's release (major.minor): a file LibTorch saves is
// readable by the same release and newer ones, not always by older ones.
bool same_release(const std::string& python) {
  const std::string release =
      std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + ".";
  const std::string check =
      frugal::testing::shell_quote(python) +
      " -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith(\"" + release +
      "\") else 1)' > /dev/null 2>&1";
  return fs::exists(python) && std::system(check.c_str()) == 0;
}

// The oracle's interpreter: the 2.11 build's venv or Debian's python3-torch (1.13), whichever
// runs LibTorch's release; "" when neither does.
const std::string& python() {
  static const std::string p = [] {
    for (std::string c : {std::string(FRUGAL_VENV_PYTHON), std::string("/usr/bin/python3")})
      if (same_release(c)) return c;
    return std::string();
  }();
  return p;
}

at::Tensor read_raw(const std::string& path, at::IntArrayRef shape, at::ScalarType type) {
  at::Tensor t = torch::empty(shape, type);
  std::ifstream in(path, std::ios::binary);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  EXPECT_EQ(static_cast<size_t>(in.gcount()), t.nbytes()) << path;
  return t;
}

// The Python side's files, written once per test binary.
class TorchScript : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = frugal::testing::temp_dir("torchscript");
    if (python().empty()) {
      skip_ = "no Python with torch " + std::to_string(TORCH_VERSION_MAJOR) + "." +
              std::to_string(TORCH_VERSION_MINOR) +
              " (" FRUGAL_VENV_PYTHON " or /usr/bin/python3 with python3-torch)";
      return;
    }
    auto run = frugal::testing::run_program(
        python(), "'" FRUGAL_TORCHSCRIPT_ORACLE "' write " + frugal::testing::shell_quote(dir_),
        dir_, "write");
    if (run.exit_code == 77) skip_ = run.out;
    ASSERT_EQ(run.exit_code == 77 ? 0 : run.exit_code, 0) << run.describe();
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    x_ = read_raw(dir_ + "/x.bin", {32, 1, 8, 8}, torch::kFloat);
    y_ = read_raw(dir_ + "/y.bin", {32}, torch::kLong);
  }
  std::shared_ptr<frugal::TensorLoader> data(bool shuffle = false) const {
    return std::make_shared<frugal::TensorLoader>(
        x_, y_, frugal::TensorLoaderOptions(8).shuffle(shuffle).seed(3));
  }
  static std::string dir_, skip_;
  at::Tensor x_, y_;
};
std::string TorchScript::dir_, TorchScript::skip_;

TEST_F(TorchScript, TrainsAsPyTorchDoesWithItsBuffersAndFrozenParameter) {
  frugal::ScriptModule net(dir_ + "/model.pt");
  const at::Tensor frozen_before = net->named_parameters()["0.bias"].clone();
  EXPECT_FALSE(net->named_parameters()["0.bias"].requires_grad()) << "Python froze it";
  frugal::Classifier task(net, frugal::SGD(0.1));
  frugal::Trainer trainer(frugal::testing::quiet_options(dir_ + "/fit").max_epochs(1));
  trainer.fit(task, data());

  // Every parameter and buffer against PyTorch's, by name; the names are Python's.
  std::ifstream names(dir_ + "/names.txt");
  std::string name, dtype;
  int compared = 0;
  auto params = net->named_parameters();
  auto buffers = net->named_buffers();
  while (names >> name >> dtype) {
    SCOPED_TRACE(name);
    const at::Tensor* mine = params.find(name);
    if (mine == nullptr) mine = buffers.find(name);
    ASSERT_NE(mine, nullptr) << "ScriptModule lacks " << name;
    const at::Tensor theirs = read_raw(dir_ + "/trained/" + name + ".bin", mine->sizes(),
                                       dtype == "int64" ? torch::kLong : torch::kFloat);
    if (dtype == "int64") {
      EXPECT_TRUE(torch::equal(*mine, theirs)) << *mine << " vs " << theirs;
    } else {
      EXPECT_LE((*mine - theirs).abs().max().item<double>(), 1e-5);
    }
    ++compared;
  }
  EXPECT_EQ(compared, 9);
  EXPECT_EQ(net->named_buffers()["1.num_batches_tracked"].item<int64_t>(), 4);
  EXPECT_TRUE(torch::equal(net->named_parameters()["0.bias"], frozen_before));
  EXPECT_FALSE(
      torch::equal(net->named_parameters()["0.weight"],
                   frugal::ScriptModule(dir_ + "/model.pt")->named_parameters()["0.weight"]))
      << "training changed nothing";
}

TEST_F(TorchScript, TrainAndEvalReachEverySubmoduleOfTheScript) {
  frugal::ScriptModule net(dir_ + "/model.pt");
  net->eval();
  EXPECT_FALSE(net->script().is_training());
  for (const auto& child : net->script().modules()) EXPECT_FALSE(child.is_training());
  const at::Tensor eval_out = net->forward(x_);
  EXPECT_TRUE(torch::equal(eval_out, net->forward(x_))) << "eval mode uses running statistics";
  net->train();
  for (const auto& child : net->script().modules()) EXPECT_TRUE(child.is_training());
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(torch::allclose(net->forward(x_), eval_out)) << "train mode uses batch statistics";
}

// to() reaches the script: its parameters are the very tensors ScriptModule registered.
TEST_F(TorchScript, ToConvertsTheScriptsOwnTensors) {
  frugal::ScriptModule net(dir_ + "/model.pt");
  net->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor expected = net->forward(x_);
  net->to(torch::kDouble);
  for (const auto& p : net->script().named_parameters())
    EXPECT_EQ(p.value.scalar_type(), torch::kDouble) << p.name;
  const at::Tensor out = net->forward(x_.to(torch::kDouble));
  EXPECT_EQ(out.scalar_type(), torch::kDouble);
  EXPECT_LE((out.to(torch::kFloat) - expected).abs().max().item<double>(), 1e-5);
}

TEST_F(TorchScript, SavedBackItRunsInPythonWithEqualOutputs) {
  frugal::ScriptModule net(dir_ + "/model.pt");
  frugal::Classifier task(net, frugal::AdamW(1e-2));
  frugal::Trainer trainer(frugal::testing::quiet_options(dir_ + "/fit_save").max_epochs(2));
  trainer.fit(task, data(true));
  const std::string saved = dir_ + "/trained.pt";
  net->save_script(saved);
  net->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor expected = net->forward(x_);

  auto run = frugal::testing::run_program(python(),
                                          "'" FRUGAL_TORCHSCRIPT_ORACLE "' run " +
                                              frugal::testing::shell_quote(saved) + " '" + dir_ +
                                              "/x.bin' '" + dir_ + "/python_out.bin'",
                                          dir_, "run");
  ASSERT_EQ(run.exit_code, 0) << run.describe();
  const at::Tensor theirs = read_raw(dir_ + "/python_out.bin", {32, 5}, torch::kFloat);
  EXPECT_LE((theirs - expected).abs().max().item<double>(), 1e-6);
  // And it reloads in LibTorch with the trained weights (saved before any inference
  // optimisation, which 1.13 cannot reload).
  frugal::ScriptModule again(saved);
  again->eval();
  EXPECT_TRUE(torch::equal(again->forward(x_), expected));
}

TEST_F(TorchScript, CheckpointMidEpochResumesExactly) {
  auto options = [&](const std::string& sub) {
    return frugal::testing::quiet_options(dir_ + "/" + sub).max_epochs(3).seed(1);
  };
  auto state = [](frugal::ScriptModuleImpl& m) {
    std::ostringstream s;
    for (const auto& p : m.named_parameters()) s << p.key() << p.value().sum().item<double>();
    for (const auto& b : m.named_buffers()) s << b.key() << b.value().sum().item<double>();
    return frugal::params_sha256(m) + s.str();
  };
  std::string reference;
  {
    frugal::ScriptModule net(dir_ + "/model.pt");
    frugal::Classifier task(net, frugal::AdamW(1e-2));
    frugal::Trainer t(options("ref"));
    t.fit(task, data(true), data());
    reference = state(*net);
  }
  const std::string ckpt = dir_ + "/mid.ckpt";
  {
    struct SaveThenDie : frugal::Callback {
      std::string path;
      void on_train_batch_end(frugal::Trainer& t, frugal::Task&, const at::Tensor&,
                              const frugal::Batch&, int64_t) override {
        if (t.state().global_step == 6) {
          t.save_checkpoint(path);
          throw std::runtime_error("killed");
        }
      }
    };
    auto die = std::make_shared<SaveThenDie>();
    die->path = ckpt;
    frugal::ScriptModule net(dir_ + "/model.pt");
    frugal::Classifier task(net, frugal::AdamW(1e-2));
    frugal::Trainer t(options("killed"), {die});
    EXPECT_THROW(t.fit(task, data(true), data()), std::runtime_error);
  }
  frugal::ScriptModule net(dir_ + "/model.pt");
  frugal::Classifier task(net, frugal::AdamW(1e-2));
  frugal::Trainer t(options("resumed"));
  t.fit(task, data(true), data(), ckpt);
  EXPECT_EQ(state(*net), reference);
}

TEST(TorchScriptErrors, NameTheFile) {
  const std::string dir = frugal::testing::temp_dir("torchscript_errors");
  EXPECT_THAT(frugal::testing::error_message([&] { frugal::ScriptModule(dir + "/none.pt"); }),
              HasSubstr("no TorchScript file '" + dir + "/none.pt'"));
  std::ofstream(dir + "/text.pt") << "not a zip archive";
  EXPECT_THAT(frugal::testing::error_message([&] { frugal::ScriptModule(dir + "/text.pt"); }),
              HasSubstr("'" + dir + "/text.pt' is not a TorchScript file"));
}

}  // namespace

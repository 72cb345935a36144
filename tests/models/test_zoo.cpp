// The model zoo against torchvision 0.14 (Debian's python3-torchvision, run from the test as the
// oracle): parameter counts, state_dict keys and shapes, eval logits (1e-5) and one training
// step's gradients (1e-4) on the same weights and input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>

#include "frugal/io/weights.h"
#include "frugal/models/zoo.h"
#include "test_support.h"

namespace {

using frugal::TensorMap;

// Writes, per model, <name>.safetensors (state dict after three train-mode forwards, so running
// statistics are not trivial), <name>.pt (the same via torch.save) and <name>_io.safetensors
// (input, eval logits, target, loss and every parameter's gradient after one train-mode step).
// safetensors are written by a small pure-Python writer (no extra package needed).
const char* const kOracle = R"PY(
import json, struct, sys
import torch, torchvision
from torchvision import models

def save_st(tensors, path):
    header, blobs, off = {}, [], 0
    names = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16"}
    for k, t in tensors.items():
        t = t.detach().contiguous().cpu()
        b = t.view(torch.uint8).numpy().tobytes() if t.dim() else t.reshape(1).view(torch.uint8).numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

out = sys.argv[1]
size = int(sys.argv[2])
torch.manual_seed(0)
builders = {
    "resnet18": lambda: models.resnet18(),
    "resnet34": lambda: models.resnet34(),
    "resnet50": lambda: models.resnet50(),
    "mobilenet_v2": lambda: models.mobilenet_v2(dropout=0.0),
    "mobilenet_v3_small": lambda: models.mobilenet_v3_small(dropout=0.0),
    "mobilenet_v3_large": lambda: models.mobilenet_v3_large(dropout=0.0),
    "efficientnet_b0": lambda: models.efficientnet_b0(stochastic_depth_prob=0.0),
}
for name in sys.argv[3:]:
    m = builders[name]()
    if name == "efficientnet_b0":
        m.classifier[0].p = 0.0  # 0.14's efficientnet_b0 fixes dropout at 0.2
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(4, 3, size, size))
    sd = m.state_dict()
    save_st(sd, f"{out}/{name}.safetensors")
    torch.save(sd, f"{out}/{name}.pt")
    x = torch.randn(2, 3, size, size)
    target = torch.tensor([1, 7])
    m.eval()
    with torch.no_grad():
        logits = m(x)
    m.train()
    loss = torch.nn.functional.cross_entropy(m(x), target)
    loss.backward()
    io = {"x": x, "logits": logits, "target": target, "loss": loss.detach().reshape(1)}
    for k, p in m.named_parameters():
        io["grad." + k] = p.grad
    save_st(io, f"{out}/{name}_io.safetensors")
)PY";

const std::string& python() {
  static const std::string p = [] {
    const char* env = std::getenv("FRUGAL_PYTHON");
    return std::string(env ? env : "/usr/bin/python3");
  }();
  return p;
}

int64_t count(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(Zoo, ParameterCountsEqualTorchvision) {
  const std::pair<const char*, int64_t> expected[] = {
      {"resnet18", 11'689'512},          {"resnet34", 21'797'672},
      {"resnet50", 25'557'032},          {"mobilenet_v2", 3'504'872},
      {"mobilenet_v3_small", 2'542'856}, {"mobilenet_v3_large", 5'483'032},
      {"efficientnet_b0", 5'288'548}};
  for (const auto& [name, n] : expected) {
    auto m = frugal::models::create_model(name);
    EXPECT_EQ(count(*m), n) << name;
  }
}

TEST(Zoo, OutputShapesAndOptions) {
  torch::NoGradGuard g;
  auto x = torch::randn({2, 1, 64, 64});
  for (const auto& name : frugal::models::model_names()) {
    auto m = frugal::models::create_model(name, 10, 1);
    m->eval();
    EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 10})) << name;
    EXPECT_EQ(m->num_classes(), 10);
    m->reset_classifier(5);
    EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 5})) << name;
    EXPECT_EQ(m->num_classes(), 5);
    // The head keeps its name: the key set is that of a fresh 5-class model.
    auto fresh = frugal::models::create_model(name, 5, 1);
    EXPECT_EQ(frugal::module_state(*m).size(), frugal::module_state(*fresh).size()) << name;
    for (const auto& [k, t] : frugal::module_state(*fresh)) {
      ASSERT_TRUE(frugal::module_state(*m).count(k)) << name << " lacks " << k;
      EXPECT_EQ(frugal::module_state(*m).at(k).sizes(), t.sizes()) << k;
    }
  }
  // Width multiplier and MobileNetV3's reduced tail change the widths as torchvision does.
  EXPECT_EQ(count(*frugal::models::mobilenet_v2(1000, 3, 0.5)), 1'968'680);
  EXPECT_EQ(count(*frugal::models::mobilenet_v3_large(1000, 3, 1.0, 0.2, true)), 2'569'352);
  EXPECT_THAT(frugal::testing::error_message([] { frugal::models::create_model("vgg16"); }),
              ::testing::HasSubstr("create_model: unknown model 'vgg16'"));
  EXPECT_THAT(frugal::testing::error_message([] { frugal::models::mobilenet_v2(0); }),
              ::testing::HasSubstr("mobilenet_v2: num_classes must be positive, got 0"));
  EXPECT_THAT(
      frugal::testing::error_message([] { frugal::models::efficientnet_b0(10, 3, 0.2, 1.5); }),
      ::testing::HasSubstr("stochastic_depth_prob must be in [0, 1], got 1.5"));
}

TEST(Zoo, MakeDivisibleAsTorchvision) {
  using frugal::models::make_divisible;
  EXPECT_EQ(make_divisible(32 * 0.5, 8), 16);
  EXPECT_EQ(make_divisible(24 * 0.35, 8), 8);
  EXPECT_EQ(make_divisible(72 / 4, 8), 24);  // 18 -> 16 is < 0.9 * 18, so 24
  EXPECT_EQ(make_divisible(88 / 4, 8), 24);
  EXPECT_EQ(make_divisible(3, 8), 8);
}

TEST(Zoo, StochasticDepthRowModeTrainingOnly) {
  torch::manual_seed(3);
  frugal::models::StochasticDepth sd(0.5);
  auto x = torch::ones({2000, 3, 2, 2});
  auto y = sd->forward(x);
  // Each sample is either all zeros or all 1 / (1 - p) = 2.
  auto per_sample = y.view({2000, -1});
  EXPECT_TRUE(torch::all((per_sample.amin(1) == per_sample.amax(1))).item<bool>());
  EXPECT_TRUE(torch::all((per_sample.amin(1) == 0) | (per_sample.amin(1) == 2)).item<bool>());
  const double kept = (per_sample.amin(1) == 2).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(kept, 0.5, 0.05);
  sd->eval();
  EXPECT_TRUE(torch::equal(sd->forward(x), x));
}

class ZooOracle : public ::testing::TestWithParam<std::string> {
 public:
  static void SetUpTestSuite() {
    dir_ = frugal::testing::temp_dir("zoo_oracle");
    if (std::system((python() + " -c 'import torchvision' > /dev/null 2>&1").c_str()) != 0) {
      skip_ = "torchvision is not importable by " + python() +
              " (Debian: apt-get install python3-torchvision)";
      return;
    }
    std::ofstream(dir_ + "/oracle.py") << kOracle;
    std::string args = frugal::testing::shell_quote(dir_ + "/oracle.py") + " " +
                       frugal::testing::shell_quote(dir_) + " 64";
    for (const auto& n : frugal::models::model_names()) args += " " + n;
    auto run = frugal::testing::run_program(python(), args, dir_, "oracle");
    if (run.exit_code != 0) failure_ = "the torchvision oracle failed: " + run.describe();
  }
  static std::string dir_, skip_, failure_;
};
std::string ZooOracle::dir_, ZooOracle::skip_, ZooOracle::failure_;

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

TEST_P(ZooOracle, KeysShapesLogitsAndGradientsEqualTorchvision) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  ASSERT_TRUE(failure_.empty()) << failure_;
  const std::string name = GetParam();
  const TensorMap state = frugal::read_safetensors(dir_ + "/" + name + ".safetensors");
  const TensorMap io = frugal::read_safetensors(dir_ + "/" + name + "_io.safetensors");

  auto model = frugal::models::create_model(name);
  if (name == "efficientnet_b0") model = frugal::models::efficientnet_b0(1000, 3, 0.0, 0.0).ptr();
  if (name == "mobilenet_v2") model = frugal::models::mobilenet_v2(1000, 3, 1.0, 0.0).ptr();
  if (name == "mobilenet_v3_small")
    model = frugal::models::mobilenet_v3_small(1000, 3, 1.0, 0.0).ptr();
  if (name == "mobilenet_v3_large")
    model = frugal::models::mobilenet_v3_large(1000, 3, 1.0, 0.0).ptr();

  // Key set and shapes.
  const TensorMap mine = frugal::module_state(*model);
  std::vector<std::string> missing, extra, shapes;
  for (const auto& [k, t] : state) {
    if (!mine.count(k))
      missing.push_back(k);
    else if (mine.at(k).sizes() != t.sizes())
      shapes.push_back(k);
  }
  for (const auto& [k, t] : mine)
    if (!state.count(k)) extra.push_back(k);
  EXPECT_THAT(missing, ::testing::IsEmpty()) << "torchvision keys absent here";
  EXPECT_THAT(extra, ::testing::IsEmpty()) << "keys torchvision does not have";
  EXPECT_THAT(shapes, ::testing::IsEmpty()) << "shape mismatches";

  // The torch.save file reads to the same tensors, bitwise.
  const TensorMap pickled = frugal::read_torch_state_dict(dir_ + "/" + name + ".pt");
  ASSERT_EQ(pickled.size(), state.size());
  for (const auto& [k, t] : state) {
    ASSERT_TRUE(pickled.count(k)) << k;
    EXPECT_EQ(pickled.at(k).scalar_type(), t.scalar_type()) << k;
    EXPECT_TRUE(torch::equal(pickled.at(k), t)) << k;
  }

  frugal::load_state_dict(*model, dir_ + "/" + name + ".pt");
  for (const auto& [k, t] : frugal::module_state(*model))
    ASSERT_TRUE(torch::equal(t, state.at(k))) << k;

  const auto& x = io.at("x");
  model->eval();
  {
    torch::NoGradGuard g;
    const auto logits = model->forward(x);
    EXPECT_LE(max_abs_diff(logits, io.at("logits")), 1e-5) << name;
  }
  model->train();
  model->zero_grad();
  const auto loss = torch::nn::functional::cross_entropy(model->forward(x), io.at("target"));
  loss.backward();
  EXPECT_LE(std::abs(loss.item<double>() - io.at("loss").item<double>()), 1e-5);
  double worst = 0;
  std::string worst_key;
  for (const auto& p : model->named_parameters()) {
    const auto& ref = io.at("grad." + p.key());
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    const double d = max_abs_diff(p.value().grad(), ref);
    if (d > worst) worst = d, worst_key = p.key();
  }
  EXPECT_LE(worst, 1e-4) << name << ": largest gradient difference at " << worst_key;
  RecordProperty("max_grad_diff", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(Torchvision, ZooOracle, ::testing::ValuesIn(frugal::models::model_names()),
                         [](const auto& info) { return info.param; });

}  // namespace

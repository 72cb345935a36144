// frugal::export_onnx against the real thing: every file passes onnx.checker (full check) and
// onnxruntime's outputs are within 1e-4 of LibTorch's (eval mode) at two batch sizes, for each
// supported layer kind, each small model and every zoo model. The oracle
// (tests/deploy/onnx_oracle.py) runs in .deps/venv; the comparisons skip with a message when
// onnx/onnxruntime are not installed there.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "frugal/deploy/onnx.h"
#include "frugal/error.h"
#include "frugal/models/small.h"
#include "frugal/models/zoo.h"
#include "test_support.h"

namespace nn = torch::nn;
namespace fs = std::filesystem;
using frugal::deploy::OnnxGraph;
using frugal::deploy::OnnxValue;
using ::testing::HasSubstr;

// A build without protobuf / onnx.proto has no ONNX export (docs/deploy.md): nothing to test.
#define SKIP_WITHOUT_ONNX()                                                               \
  if (!frugal::onnx_export_available()) {                                                 \
    GTEST_SKIP() << "this build has no ONNX export (libprotobuf-dev, protobuf-compiler, " \
                    "libonnx-dev missing at configure time)";                             \
  }

namespace {

struct Oracle {
  int status = -1;
  std::string log;
  std::vector<at::Tensor> outputs;
};

void write_raw(const std::string& path, const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

at::Tensor read_raw(const std::string& path, at::IntArrayRef shape) {
  at::Tensor t = torch::empty(shape, torch::kFloat);
  std::ifstream in(path, std::ios::binary);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  EXPECT_EQ(static_cast<size_t>(in.gcount()), t.nbytes()) << path;
  return t;
}

std::string shape_arg(at::IntArrayRef shape) {
  std::string s;
  for (int64_t d : shape) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

/// Runs the oracle on `model_path` for each input; outputs are read with LibTorch's shapes.
Oracle run_oracle(const std::string& model_path, const std::vector<at::Tensor>& inputs,
                  const std::vector<at::Tensor>& expected) {
  Oracle o;
  const std::string dir = fs::path(model_path).parent_path().string();
  std::string cmd =
      std::string("'") + FRUGAL_VENV_PYTHON + "' '" + FRUGAL_ONNX_ORACLE + "' '" + model_path + "'";
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string in = dir + "/in" + std::to_string(i) + ".bin";
    write_raw(in, inputs[i]);
    cmd += " '" + in + "' " + shape_arg(inputs[i].sizes()) + " '" + dir + "/out" +
           std::to_string(i) + ".bin'";
  }
  if (!fs::exists(FRUGAL_VENV_PYTHON)) {
    o.status = 77;
    o.log = std::string("no Python venv at ") + FRUGAL_VENV_PYTHON +
            " (python3 -m venv .deps/venv && .deps/venv/bin/pip install -r "
            "scripts/python-requirements.txt)";
    return o;
  }
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) o.log += buffer;
  const int raw = pclose(pipe);
  o.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  if (o.status == 0) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      o.outputs.push_back(read_raw(dir + "/out" + std::to_string(i) + ".bin", expected[i].sizes()));
    }
  }
  return o;
}

/// Exports `module` for `input_shape` (batch first) and compares onnxruntime with LibTorch at
/// batch sizes 2 and 5 (one file, dynamic batch). Returns the largest absolute difference.
void expect_matches(nn::Module& module, const std::function<at::Tensor(const at::Tensor&)>& fwd,
                    std::vector<int64_t> input_shape, const std::string& name,
                    frugal::OnnxExportOptions options = {}, double tolerance = 1e-4) {
  SCOPED_TRACE(name);
  torch::manual_seed(7);
  const std::string dir = frugal::testing::temp_dir("onnx_" + name);
  const std::string path = dir + "/model.onnx";
  input_shape.insert(input_shape.begin(), 2);
  frugal::export_onnx(module, torch::randn(input_shape), path, options);
  ASSERT_TRUE(fs::exists(path));
  module.eval();
  std::vector<at::Tensor> inputs, expected;
  for (int64_t batch : {2, 5}) {
    input_shape[0] = batch;
    inputs.push_back(torch::randn(input_shape));
    torch::NoGradGuard no_grad;
    expected.push_back(fwd(inputs.back()).contiguous());
  }
  Oracle o = run_oracle(path, inputs, expected);
  if (o.status == 77) GTEST_SKIP() << o.log;
  ASSERT_EQ(o.status, 0) << o.log;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const double diff = (o.outputs[i] - expected[i]).abs().max().item<double>();
    const double scale = expected[i].abs().max().item<double>();
    EXPECT_LE(diff, tolerance) << "batch " << inputs[i].size(0);
    // Relative too, so that a model with small logits (the MobileNets' N(0, 0.01) heads) is
    // checked as strictly as one with large ones.
    EXPECT_LE(diff, tolerance * scale)
        << "batch " << inputs[i].size(0) << ", outputs up to " << scale;
    std::printf("%s batch %lld: max |onnxruntime - LibTorch| = %.3g (outputs up to %.3g)\n",
                name.c_str(), static_cast<long long>(inputs[i].size(0)), diff, scale);
    EXPECT_TRUE(scale > 1e-3) << "degenerate output";
  }
}

void expect_matches(nn::Sequential seq, std::vector<int64_t> input_shape, const std::string& name,
                    frugal::OnnxExportOptions options = {}) {
  expect_matches(
      *seq, [&](const at::Tensor& x) { return seq->forward(x); }, std::move(input_shape), name,
      options);
}

/// How far BatchNorm statistics and affine parameters are moved from their defaults: running
/// mean ~ N(0, mean_std), running variance and weight uniform in their ranges, bias ~ N(0,
/// bias_std).
struct BatchNormSpread {
  double mean_std, var_low, var_high, weight_low, weight_high, bias_std;
};
/// Far from the defaults, so that folding is really tested.
constexpr BatchNormSpread kWide{0.5, 0.5, 2.0, 0.5, 1.5, 0.2};
/// Near what training gives, so that fifty layers of the zoo do not blow the scale up.
constexpr BatchNormSpread kTrainedLike{0.1, 0.8, 1.25, 0.8, 1.2, 0.1};

void randomize_batch_norms(nn::Module& module, const BatchNormSpread& s = kWide) {
  torch::NoGradGuard no_grad;
  for (const auto& m : module.modules()) {
    if (auto* bn = dynamic_cast<nn::BatchNorm2dImpl*>(m.get())) {
      bn->running_mean.normal_(0, s.mean_std);
      bn->running_var.uniform_(s.var_low, s.var_high);
      if (bn->weight.defined()) bn->weight.uniform_(s.weight_low, s.weight_high);
      if (bn->bias.defined()) bn->bias.normal_(0, s.bias_std);
    }
    if (auto* bn = dynamic_cast<nn::BatchNorm1dImpl*>(m.get())) {
      bn->running_mean.normal_(0, s.mean_std);
      bn->running_var.uniform_(s.var_low, s.var_high);
    }
  }
}

/// A block holding a Sequential that the walker exports (gives nested paths like "3.block.1").
struct BlockImpl : nn::Module, frugal::deploy::OnnxExportable {
  explicit BlockImpl(nn::Sequential inner) : block(register_module("block", std::move(inner))) {}
  at::Tensor forward(const at::Tensor& x) { return block->forward(x); }
  OnnxValue export_onnx(OnnxGraph& g, const std::string& path, const OnnxValue& x) override {
    return g.module(*block, path + ".block", x);
  }
  nn::Sequential block;
};
TORCH_MODULE(Block);

}  // namespace

TEST(OnnxExport, ConvolutionsWithStrideDilationGroupsPaddingAndBias) {
  SKIP_WITHOUT_ONNX();
  expect_matches(
      nn::Sequential(nn::Conv2d(nn::Conv2dOptions(4, 6, 3).stride(2).padding(1).groups(2)),
                     nn::Conv2d(nn::Conv2dOptions(6, 8, 3).dilation(2).padding(2).bias(false)),
                     nn::Conv2d(nn::Conv2dOptions(8, 8, {3, 1}).padding({1, 0}).groups(8)),
                     nn::Conv2d(nn::Conv2dOptions(8, 5, 4).padding(torch::kSame)),
                     nn::Conv2d(nn::Conv2dOptions(5, 3, 2).padding(torch::kValid))),
      {4, 11, 13}, "conv");
}

TEST(OnnxExport, BatchNormFoldedIntoConvolutionOrAsAnOperator) {
  SKIP_WITHOUT_ONNX();
  nn::Sequential folded(nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)), nn::BatchNorm2d(8),
                        nn::Conv2d(nn::Conv2dOptions(8, 8, 3).bias(false)),
                        nn::BatchNorm2d(nn::BatchNorm2dOptions(8).affine(false)));
  randomize_batch_norms(*folded);
  expect_matches(folded, {3, 9, 9}, "bn_folded");
  // With folding off, and a BatchNorm that does not follow a convolution.
  frugal::OnnxExportOptions no_fold;
  no_fold.fold_batch_norm = false;
  expect_matches(folded, {3, 9, 9}, "bn_unfolded", no_fold);
  nn::Sequential lone(nn::Conv2d(nn::Conv2dOptions(3, 8, 3)), nn::ReLU(), nn::BatchNorm2d(8),
                      nn::Flatten(), nn::Linear(8 * 7 * 7, 6), nn::BatchNorm1d(6));
  randomize_batch_norms(*lone);
  expect_matches(lone, {3, 9, 9}, "bn_op");

  // The folded file has no BatchNormalization node, the unfolded one has two.
  torch::Tensor x = torch::randn({2, 3, 9, 9});
  const std::string a = frugal::export_onnx_to_string(*folded, x);
  const std::string b = frugal::export_onnx_to_string(*folded, x, no_fold);
  EXPECT_EQ(a.find("BatchNormalization"), std::string::npos);
  EXPECT_NE(b.find("BatchNormalization"), std::string::npos);
}

TEST(OnnxExport, LinearAsGemmAndOnHigherRankInputs) {
  SKIP_WITHOUT_ONNX();
  expect_matches(nn::Sequential(nn::Flatten(), nn::Linear(12, 7), nn::Linear(7, 5)), {3, 4},
                 "gemm");
  expect_matches(nn::Sequential(nn::Linear(4, 6), nn::Linear(nn::LinearOptions(6, 3).bias(false))),
                 {3, 4}, "matmul");
}

TEST(OnnxExport, Activations) {
  SKIP_WITHOUT_ONNX();
  // x spans negative and positive values beyond the clip points of ReLU6 and Hardswish.
  auto scaled = [](auto act) { return nn::Sequential(nn::Linear(5, 8), act); };
  expect_matches(scaled(nn::ReLU()), {5}, "relu");
  {
    nn::Sequential s(nn::Linear(5, 8), nn::ReLU6());
    torch::NoGradGuard g;
    s->ptr<nn::LinearImpl>(0)->weight.mul_(20);
    expect_matches(s, {5}, "relu6");
  }
  expect_matches(scaled(nn::SiLU()), {5}, "silu");
  expect_matches(scaled(nn::Sigmoid()), {5}, "sigmoid");
  expect_matches(scaled(nn::Tanh()), {5}, "tanh");
  expect_matches(scaled(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2))), {5},
                 "leaky_relu");
  expect_matches(scaled(nn::GELU()), {5}, "gelu_erf");
  expect_matches(scaled(nn::GELU(nn::GELUOptions().approximate("tanh"))), {5}, "gelu_tanh");
  expect_matches(scaled(nn::Softmax(1)), {5}, "softmax");
  expect_matches(scaled(nn::LogSoftmax(1)), {5}, "log_softmax");
  {
    nn::Sequential s(nn::Linear(5, 8), frugal::models::Hardswish(), nn::Linear(8, 8),
                     frugal::models::Hardsigmoid());
    torch::NoGradGuard g;
    s->ptr<nn::LinearImpl>(0)->weight.mul_(8);
    expect_matches(s, {5}, "hardswish_hardsigmoid");
  }
}

TEST(OnnxExport, PoolingFlattenDropout) {
  SKIP_WITHOUT_ONNX();
  expect_matches(nn::Sequential(nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1))),
                 {3, 9, 10}, "maxpool");
  expect_matches(nn::Sequential(nn::MaxPool2d(nn::MaxPool2dOptions(2).ceil_mode(true))), {3, 9, 9},
                 "maxpool_ceil");
  expect_matches(nn::Sequential(nn::AvgPool2d(2)), {3, 8, 10}, "avgpool");
  expect_matches(nn::Sequential(nn::AvgPool2d(
                     nn::AvgPool2dOptions(3).stride(1).padding(1).count_include_pad(false))),
                 {3, 7, 7}, "avgpool_pad_excluded");
  expect_matches(nn::Sequential(nn::AvgPool2d(nn::AvgPool2dOptions(3).stride(2).padding(1))),
                 {3, 7, 7}, "avgpool_pad_included");
  expect_matches(nn::Sequential(nn::AdaptiveAvgPool2d(1), nn::Flatten()), {4, 7, 5},
                 "adaptive_avg_1");
  expect_matches(nn::Sequential(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({2, 3}))),
                 {4, 8, 9}, "adaptive_avg_2x3");
  expect_matches(nn::Sequential(nn::AdaptiveMaxPool2d(1)), {4, 6, 6}, "adaptive_max_1");
  expect_matches(nn::Sequential(nn::Flatten(nn::FlattenOptions().start_dim(2)), nn::Dropout(0.5),
                                nn::Dropout2d(0.3), nn::Identity()),
                 {3, 4, 5}, "flatten_reshape_dropout");
}

TEST(OnnxExport, SmallModels) {
  SKIP_WITHOUT_ONNX();
  namespace m = frugal::models;
  expect_matches(m::SmallCnn(), {1, 28, 28}, "small_cnn");
  nn::Sequential bn = m::SmallCnnBn();
  randomize_batch_norms(*bn);
  expect_matches(bn, {1, 28, 28}, "small_cnn_bn");
  expect_matches(m::Mlp(784, 64, 10, 3), {1, 28, 28}, "mlp");
  nn::Sequential resnet = m::SmallResNet(10, 3, 8);
  randomize_batch_norms(*resnet);
  expect_matches(resnet, {3, 16, 16}, "small_resnet");
  frugal::OnnxExportOptions no_fold;
  no_fold.fold_batch_norm = false;
  expect_matches(resnet, {3, 16, 16}, "small_resnet_unfolded", no_fold);
  nn::Sequential deeper = m::ResNet(5, 1, {4, 8}, 2);  // two blocks per stage, 1x1 shortcuts
  randomize_batch_norms(*deeper);
  expect_matches(deeper, {1, 12, 12}, "resnet_4_8");
}

TEST(OnnxExport, ModulesThatEmitTheirOwnNodes) {
  SKIP_WITHOUT_ONNX();
  namespace m = frugal::models;
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)), m::Hardswish(),
                     m::SqueezeExcitation(8, 4, m::Activation::kReLU, m::Activation::kHardsigmoid),
                     m::StochasticDepth(0.5), m::Hardsigmoid(),
                     m::SqueezeExcitation(8, 2, m::Activation::kSiLU, m::Activation::kSigmoid),
                     nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(8, 4));
  expect_matches(net, {3, 10, 10}, "squeeze_excitation");
}

// Every zoo model, exported whole, against onnxruntime: BatchNorm folded and, for two models, not.
TEST(OnnxExport, ZooModels) {
  SKIP_WITHOUT_ONNX();
  namespace m = frugal::models;
  for (const std::string& name : m::model_names()) {
    torch::manual_seed(3);
    std::shared_ptr<m::ZooModel> model = m::create_model(name, 10, 3);
    randomize_batch_norms(*model, kTrainedLike);
    auto forward = [&](const at::Tensor& x) { return model->forward(x); };
    expect_matches(*model, forward, {3, 64, 64}, name);
    if (name == "resnet50" || name == "mobilenet_v3_small") {
      frugal::OnnxExportOptions no_fold;
      no_fold.fold_batch_norm = false;
      expect_matches(*model, forward, {3, 64, 64}, name + "_unfolded", no_fold);
    }
  }
  // Dilated MobileNetV3 (dilation in the last stage's depthwise convolutions).
  auto dilated = m::mobilenet_v3_large(7, 1, 1.0, 0.2, /*reduced_tail=*/true, /*dilated=*/true);
  randomize_batch_norms(*dilated, kTrainedLike);
  expect_matches(
      *dilated, [&](const at::Tensor& x) { return dilated->forward(x); }, {1, 48, 48},
      "mobilenet_v3_large_dilated");
}

TEST(OnnxExport, RefusesAnUnsupportedModuleByPathAndType) {
  SKIP_WITHOUT_ONNX();
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(1, 4, 3)), nn::ReLU(), nn::Identity(),
                     Block(nn::Sequential(nn::Conv2d(nn::Conv2dOptions(4, 4, 1)), nn::ELU())));
  const std::string dir = frugal::testing::temp_dir("onnx_refuse");
  const std::string path = dir + "/model.onnx";
  try {
    frugal::export_onnx(*net, torch::randn({2, 1, 8, 8}), path);
    FAIL() << "exported an ELU";
  } catch (const frugal::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("module '3.block.1'"));
    EXPECT_THAT(e.what(), HasSubstr("ELUImpl"));
    EXPECT_THAT(e.what(), HasSubstr("OnnxExportable"));
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir)) << "no temporary file left behind";
}

TEST(OnnxExport, RefusesBadOptionsAndInputsBeforeWriting) {
  SKIP_WITHOUT_ONNX();
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(1, 4, 3)), nn::AdaptiveAvgPool2d(4));
  const std::string path = frugal::testing::temp_dir("onnx_bad") + "/model.onnx";
  auto message = [&](const at::Tensor& x, frugal::OnnxExportOptions o) {
    try {
      frugal::export_onnx(*net, x, path, o);
    } catch (const frugal::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // 10x10 -> conv 8x8 -> adaptive 4x4: even, exported; 11x11 -> 9x9 -> 4x4 is not.
  EXPECT_EQ(message(torch::randn({1, 1, 10, 10}), {}), "no error");
  EXPECT_THAT(message(torch::randn({1, 1, 11, 11}), {}),
              HasSubstr("module '1' of type torch::nn::AdaptiveAvgPool2dImpl"));
  fs::remove(path);
  frugal::OnnxExportOptions opset13;
  opset13.opset = 13;
  EXPECT_THAT(message(torch::randn({1, 1, 10, 10}), opset13), HasSubstr("opset must be 17"));
  EXPECT_THAT(message(torch::randn({1, 1, 10, 10}, torch::kDouble), {}), HasSubstr("float32"));
  EXPECT_THAT(message(torch::randn({1, 2, 10, 10}), {}), HasSubstr("[1, 2, 10, 10]"));
  EXPECT_FALSE(fs::exists(path));
}

TEST(OnnxExport, KeepsTrainingFlagsAndWritesTheStatedOpsetAndBatchDimension) {
  SKIP_WITHOUT_ONNX();
  nn::Sequential net = frugal::models::SmallCnnBn();
  net->train();
  const std::string bytes = frugal::export_onnx_to_string(*net, torch::randn({3, 1, 28, 28}));
  for (const auto& m : net->modules()) EXPECT_TRUE(m->is_training()) << m->name();
  EXPECT_NE(bytes.find("batch"), std::string::npos);  // the symbolic batch dimension
  frugal::OnnxExportOptions fixed;
  fixed.dynamic_batch = false;
  const std::string fixed_bytes =
      frugal::export_onnx_to_string(*net, torch::randn({3, 1, 28, 28}), fixed);
  EXPECT_EQ(fixed_bytes.find("batch"), std::string::npos);
}

TEST(OnnxExport, WithoutProtobufItSaysWhatIsMissing) {
  if (frugal::onnx_export_available()) GTEST_SKIP() << "this build has ONNX export";
  nn::Sequential net{nn::ReLU()};
  try {
    frugal::export_onnx(*net, torch::randn({1, 3}), "/tmp/never.onnx");
    FAIL() << "exported without ONNX support";
  } catch (const frugal::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("libonnx-dev"));
  }
}

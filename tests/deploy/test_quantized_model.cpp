// frugal::quantize_static / quantize_dynamic_graph / QuantizedModel: int8 inference over the
// exporter's graph, checked against a fake-quantized float reference computed here, against the
// float model, and through a save/load round trip.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "frugal/deploy/quantize.h"
#include "frugal/deploy/quantized_model.h"
#include "frugal/error.h"
#include "frugal/io/weights.h"
#include "frugal/models/small.h"
#include "frugal/models/zoo.h"
#include "test_support.h"

namespace nn = torch::nn;
using frugal::testing::error_message;

namespace {

double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

/// PyTorch's uint8 affine parameters for [lo, hi] (widened to hold 0).
std::pair<double, int64_t> qparams(double lo, double hi, bool reduce_range) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  const double qmax = reduce_range ? 127 : 255;
  const double scale = std::max((hi - lo) / qmax, 1.1920928955078125e-07);
  const int64_t zp = std::clamp<int64_t>(std::llround(-lo / scale), 0, (int64_t)qmax);
  return {scale, zp};
}

at::Tensor fake_quant(const at::Tensor& x, std::pair<double, int64_t> qp, bool reduce_range) {
  const double qmax = reduce_range ? 127 : 255;
  return ((at::round(x / qp.first) + qp.second).clamp(0, qmax) - qp.second) * qp.first;
}

/// BatchNorm running statistics from a few training-mode passes, so that activations of an
/// untrained network stay in a realistic range in eval mode.
void settle_batch_norm(nn::Module& model, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  model.train();
  for (int i = 0; i < 5; ++i) {
    if (auto* zoo = dynamic_cast<frugal::models::ZooModel*>(&model)) zoo->forward(x);
  }
  model.eval();
}

}  // namespace

TEST(QuantizeStatic, OneConvEqualsAFakeQuantizedReferenceOnEveryEngine) {
  torch::manual_seed(0);
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)), nn::ReLU());
  std::vector<at::Tensor> calibration = {torch::randn({4, 3, 10, 10}),
                                         torch::randn({4, 3, 10, 10}) * 2};
  at::Tensor x = torch::randn({5, 3, 10, 10});
  auto* conv = net[0]->as<nn::Conv2d>();
  for (const auto& engine : frugal::quantization_engines()) {
    SCOPED_TRACE(engine);
    frugal::StaticQuantizeOptions options;
    options.engine = engine;
    auto q = frugal::quantize_static(*net, calibration, options);
    EXPECT_EQ(q->mode(), "static");
    EXPECT_EQ(q->engine(), engine);
    EXPECT_EQ(q->int8_ops(), 1) << q->summary();  // the conv, with its ReLU fused
    EXPECT_NE(q->summary().find("(fused Relu)"), std::string::npos) << q->summary();
    const bool reduce = engine == "x86" || engine == "fbgemm";
    const bool per_channel = engine != "qnnpack";
    // The reference: input and output ranges from the calibration batches, symmetric int8
    // weights, float arithmetic in between.
    double in_lo = 1e30, in_hi = -1e30, out_lo = 1e30, out_hi = -1e30;
    for (const auto& c : calibration) {
      in_lo = std::min(in_lo, c.min().item<double>());
      in_hi = std::max(in_hi, c.max().item<double>());
      at::Tensor y = net->forward(c);
      out_lo = std::min(out_lo, y.min().item<double>());
      out_hi = std::max(out_hi, y.max().item<double>());
    }
    const auto in_qp = qparams(in_lo, in_hi, reduce);
    const auto out_qp = qparams(out_lo, out_hi, reduce);
    at::Tensor w = conv->weight.detach();
    at::Tensor max_abs =
        per_channel ? w.abs().amax({1, 2, 3}, true) : w.abs().max().reshape({1, 1, 1, 1});
    at::Tensor w_scale = (max_abs / 127.0).clamp_min(1e-8);
    at::Tensor wq = at::round(w / w_scale).clamp(-127, 127) * w_scale;
    at::Tensor y_ref =
        at::relu(at::conv2d(fake_quant(x, in_qp, reduce), wq, conv->bias.detach(), 1, 1));
    at::Tensor expected = fake_quant(y_ref, out_qp, reduce);
    at::Tensor got = q->forward(x);
    ASSERT_EQ(got.sizes(), expected.sizes());
    const double max_steps = ((got - expected).abs().max() / out_qp.first).item<double>();
    std::cout << engine << ": output scale " << out_qp.first << ", largest difference " << max_steps
              << " steps\n";
    // The kernels round the int32 accumulator once; the reference rounds in float: at most one
    // quantization step apart, and most outputs equal.
    EXPECT_LE(max_steps, 1.001);
    const double equal =
        ((got - expected).abs() < out_qp.first * 0.5).to(at::kFloat).mean().item<double>();
    EXPECT_GE(equal, 0.97);
  }
}

TEST(QuantizeStatic, EveryZooModelRunsInt8CloseToFloat) {
  for (const std::string name : {"resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
                                 "mobilenet_v3_large", "efficientnet_b0"}) {
    SCOPED_TRACE(name);
    torch::manual_seed(1);
    auto model = frugal::models::create_model(name, 10);
    at::Tensor x = torch::rand({4, 3, 64, 64});
    settle_batch_norm(*model, torch::rand({8, 3, 64, 64}));
    std::vector<at::Tensor> calibration = {torch::rand({8, 3, 64, 64}),
                                           torch::rand({8, 3, 64, 64})};
    auto q = frugal::quantize_static(*model, calibration);
    at::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = model->forward(x);
    }
    at::Tensor yq = q->forward(x);
    const double err = relative_error(yq, y);
    std::cout << name << ": " << q->int8_ops() << " int8 ops, " << q->float_ops()
              << " float ops, relative error " << err << "\n";
    EXPECT_LT(err, 0.15);
    EXPECT_GT(q->int8_ops(), 10);
    EXPECT_TRUE(model->is_training() == false);
  }
}

TEST(QuantizeStatic, SmallCnnsAgreeWithFloatAndShrinkFourfold) {
  torch::manual_seed(2);
  for (bool bn : {false, true}) {
    SCOPED_TRACE(bn ? "SmallCnnBn" : "SmallCnn");
    nn::Sequential net = bn ? frugal::models::SmallCnnBn() : frugal::models::SmallCnn();
    net->eval();
    std::vector<at::Tensor> calibration;
    for (int i = 0; i < 4; ++i) calibration.push_back(torch::rand({16, 1, 28, 28}));
    auto q = frugal::quantize_static(*net, calibration);
    at::Tensor x = torch::rand({64, 1, 28, 28});
    at::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = net->forward(x);
    }
    at::Tensor yq = q->forward(x);
    EXPECT_LT(relative_error(yq, y), 0.05);
    // conv, conv, pools, flatten, linear, linear: all int8 (the ReLUs fused)
    EXPECT_EQ(q->float_ops(), 0) << q->summary();
    int64_t float_bytes = 0;
    for (const auto& p : net->parameters()) float_bytes += p.nbytes();
    std::cout << (bn ? "SmallCnnBn" : "SmallCnn") << ": float " << float_bytes << " bytes, int8 "
              << q->weight_bytes() << " bytes\n";
    EXPECT_LT(q->weight_bytes(), float_bytes / 3.5);
  }
}

TEST(QuantizeStatic, OperatorsWithoutInt8KernelsRunInFloatBetweenThem) {
  torch::manual_seed(3);
  nn::Sequential net(nn::Linear(16, 32), nn::GELU(), nn::Linear(32, 32), nn::Tanh(),
                     nn::Linear(32, 4));
  std::vector<at::Tensor> calibration = {torch::randn({64, 16})};
  auto q = frugal::quantize_static(*net, calibration);
  // The three Gemms and GELU's x * (1 + erf(x / sqrt 2)); its Div, Erf, Add and * 0.5 by
  // constants and the Tanh run in float.
  EXPECT_EQ(q->int8_ops(), 4) << q->summary();
  EXPECT_EQ(q->float_ops(), 5) << q->summary();
  at::Tensor x = torch::randn({32, 16});
  at::Tensor y = net->forward(x).detach();
  EXPECT_LT(relative_error(q->forward(x), y), 0.05);
}

TEST(QuantizeStatic, SaveAndLoadComputeBitForBitTheSame) {
  torch::manual_seed(4);
  const std::string dir = frugal::testing::temp_dir("quantized_model_save");
  auto model = frugal::models::mobilenet_v3_small(10);
  settle_batch_norm(*model, torch::rand({8, 3, 32, 32}));
  std::vector<at::Tensor> calibration = {torch::rand({8, 3, 32, 32})};
  at::Tensor x = torch::rand({3, 3, 32, 32});
  for (bool dynamic : {false, true}) {
    SCOPED_TRACE(dynamic ? "dynamic" : "static");
    auto q = dynamic ? frugal::quantize_dynamic_graph(*model, calibration[0])
                     : frugal::quantize_static(*model, calibration);
    const std::string path = dir + (dynamic ? "/dyn.safetensors" : "/static.safetensors");
    q->save(path);
    auto loaded = frugal::load_quantized_model(path);
    EXPECT_EQ(loaded->mode(), q->mode());
    EXPECT_EQ(loaded->int8_ops(), q->int8_ops());
    EXPECT_EQ(loaded->summary(), q->summary());
    EXPECT_TRUE(at::equal(loaded->forward(x), q->forward(x)));
    // What the file holds is what weight_bytes counts, plus the header.
    const auto file_bytes = static_cast<int64_t>(std::filesystem::file_size(path));
    EXPECT_GE(file_bytes, q->weight_bytes());
    EXPECT_LT(file_bytes, q->weight_bytes() + 200000);
  }
}

TEST(QuantizeDynamicGraph, EveryLinearOfAZooModelIsInt8TheRestFloat) {
  torch::manual_seed(5);
  auto model = frugal::models::mobilenet_v3_small(10);
  settle_batch_norm(*model, torch::rand({8, 3, 32, 32}));
  at::Tensor x = torch::rand({4, 3, 32, 32});
  auto q = frugal::quantize_dynamic_graph(*model, x);
  EXPECT_EQ(q->mode(), "dynamic");
  EXPECT_EQ(q->int8_ops(), 2) << q->summary();  // classifier.0 and classifier.3
  at::Tensor y;
  {
    torch::NoGradGuard no_grad;
    y = model->forward(x);
  }
  // The reference: the model's own features, then its head with each Linear replaced by
  // frugal::DynamicQuantizedLinear (tested against float in test_quantize) on the same engine.
  at::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    at::Tensor f = model->features->forward(x).mean({2, 3});
    frugal::DynamicQuantizeOptions d;
    d.engine = q->engine();
    d.per_channel = q->engine() != "qnnpack";
    frugal::DynamicQuantizedLinear fc0(*model->classifier[0]->as<nn::Linear>(), d);
    frugal::DynamicQuantizedLinear fc3(*model->classifier[3]->as<nn::Linear>(), d);
    expected = fc3->forward(torch::hardswish(fc0->forward(f)));
  }
  at::Tensor got = q->forward(x);
  const double err = relative_error(got, expected);
  std::cout << "mobilenet_v3_small dynamic int8 against DynamicQuantizedLinear: relative error "
            << err << ", against float " << relative_error(got, y) << "\n";
  EXPECT_LT(err, 1e-5);
  int64_t float_bytes = 0;
  for (const auto& p : model->parameters()) float_bytes += p.nbytes();
  EXPECT_LT(q->weight_bytes(), float_bytes);  // the head's 1024x576 weight is int8 now
}

TEST(QuantizeStatic, BadInputsAreNamedBeforeAnythingIsBuilt) {
  nn::Sequential net(nn::Linear(4, 2));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "calibration is empty",
                      error_message([&] { frugal::quantize_static(*net, {}); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "calibration batch 1 has shape [3, 5]",
                      error_message([&] {
                        frugal::quantize_static(*net, {torch::randn({3, 4}), torch::randn({3, 5})});
                      }));
  frugal::StaticQuantizeOptions options;
  options.engine = "tpu";
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "engine 'tpu' is not supported", error_message([&] {
                        frugal::quantize_static(*net, {torch::randn({3, 4})}, options);
                      }));
  nn::Sequential lstm_net(nn::Linear(4, 4), nn::Embedding(4, 2));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "module '1' of type torch::nn::EmbeddingImpl",
                      error_message([&] {
                        frugal::quantize_static(*lstm_net, {torch::randn({3, 4})});
                      }));
  auto q = frugal::quantize_static(*net, {torch::randn({3, 4})});
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "expected an input of shape [N, 4]",
                      error_message([&] {
                        q->forward(torch::randn({3, 5}));
                      }));
  const std::string dir = frugal::testing::temp_dir("quantized_model_errors");
  frugal::save_safetensors(*net, dir + "/plain.safetensors");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not a frugal int8 model", error_message([&] {
                        frugal::load_quantized_model(dir + "/plain.safetensors");
                      }));
}

// frugal::Predictor: batched inference from a module, a frugal checkpoint, a torch::save archive
// or a TorchScript file (written by Python's torch.jit.script), over tensors or a BatchSource.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "frugal/classifier.h"
#include "frugal/deploy/predictor.h"
#include "frugal/error.h"
#include "frugal/models/small.h"
#include "frugal/optim/optimizers.h"
#include "frugal/trainer.h"
#include "test_support.h"

namespace nn = torch::nn;
namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

nn::Sequential small_net(uint64_t seed) {
  torch::manual_seed(seed);
  return nn::Sequential(nn::Linear(8, 16), nn::ReLU(), nn::Dropout(0.5), nn::Linear(16, 3));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const frugal::Error& e) {
    return e.what();
  }
  return "no error";
}

at::Tensor read_raw(const std::string& path, at::IntArrayRef shape) {
  at::Tensor t = torch::empty(shape);
  std::ifstream in(path, std::ios::binary);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  return t;
}

}  // namespace

TEST(Predictor, BatchedProbabilitiesAndTopKEqualTheModelInEvalMode) {
  nn::Sequential net = small_net(1);
  net->train();  // the predictor switches to eval: Dropout must be off
  torch::manual_seed(2);
  at::Tensor x = torch::randn({23, 8});
  frugal::Predictor predictor(net, frugal::PredictorOptions().batch_size(5));
  frugal::Predictions p = predictor.predict(x, 2);
  net->eval();
  at::Tensor expected = torch::softmax(net->forward(x), 1).detach();
  EXPECT_TRUE(torch::allclose(p.probabilities, expected, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(predictor.logits(x), net->forward(x).detach(), 1e-6, 1e-6));
  auto top = expected.topk(2, 1);
  EXPECT_TRUE(torch::equal(p.top_indices, std::get<1>(top)));
  EXPECT_TRUE(torch::allclose(p.top_probabilities, std::get<0>(top)));
  EXPECT_EQ(p.top_indices.sizes(), (std::vector<int64_t>{23, 2}));
  EXPECT_FALSE(p.targets.defined());
  EXPECT_FALSE(torch::GradMode::is_enabled() && p.probabilities.requires_grad());
}

TEST(Predictor, OverABatchSourceKeepsTargetsAndCountsAccuracy) {
  nn::Sequential net = small_net(3);
  torch::manual_seed(4);
  at::Tensor x = torch::randn({30, 8});
  at::Tensor y = torch::randint(0, 3, {30});
  frugal::TensorLoader source(x, y, frugal::TensorLoaderOptions(7));
  frugal::Predictor predictor(net);
  frugal::Predictions p = predictor.predict(source, 3);
  EXPECT_TRUE(torch::equal(p.targets, y));
  net->eval();
  at::Tensor pred = net->forward(x).argmax(1);
  EXPECT_DOUBLE_EQ(p.accuracy(), pred.eq(y).to(at::kDouble).mean().item<double>());
  EXPECT_TRUE(torch::equal(p.top_indices.select(1, 0), pred));
}

TEST(Predictor, LoadsAFrugalCheckpointAndATorchSaveArchive) {
  const std::string dir = frugal::testing::temp_dir("predictor_load");
  // A real frugal checkpoint, written by the Trainer after a short fit.
  nn::Sequential trained = small_net(5);
  frugal::Classifier task(trained, frugal::AdamW(1e-2));
  struct Save : frugal::Callback {
    std::string path;
    void on_train_end(frugal::Trainer& t, frugal::Task&) override { t.save_checkpoint(path); }
  };
  auto save = std::make_shared<Save>();
  save->path = dir + "/run.ckpt";
  auto data = frugal::testing::make_toy_data(40);
  frugal::Trainer trainer(frugal::testing::quiet_options().max_epochs(1), {save});
  trainer.fit(
      task, std::make_shared<frugal::TensorLoader>(data.x, data.y, frugal::TensorLoaderOptions(8)));
  trained->eval();
  at::Tensor x = torch::randn({9, 8});
  at::Tensor expected = trained->forward(x).detach();

  nn::Sequential fresh = small_net(6);
  ASSERT_FALSE(torch::allclose(fresh->forward(x), expected));
  auto from_ckpt = frugal::Predictor::load(fresh, save->path);
  EXPECT_TRUE(torch::allclose(from_ckpt.logits(x), expected, 1e-6, 1e-6));

  torch::save(trained, dir + "/weights.pt");
  auto from_archive = frugal::Predictor::load(small_net(7), dir + "/weights.pt");
  EXPECT_TRUE(torch::allclose(from_archive.logits(x), expected, 1e-6, 1e-6));

  // A module that does not fit: refused naming the file, the module untouched.
  nn::Sequential other(nn::Linear(8, 4), nn::ReLU(), nn::Dropout(0.5), nn::Linear(4, 3));
  at::Tensor before = other->ptr<nn::LinearImpl>(0)->weight.clone();
  EXPECT_THAT(error_of([&] { frugal::Predictor::load(other, save->path); }), HasSubstr(save->path));
  EXPECT_TRUE(torch::equal(other->ptr<nn::LinearImpl>(0)->weight, before));
  EXPECT_THAT(error_of([&] { frugal::Predictor::load(other, dir + "/weights.pt"); }),
              HasSubstr("weights.pt"));
  EXPECT_TRUE(torch::equal(other->ptr<nn::LinearImpl>(0)->weight, before));
  EXPECT_THAT(error_of([&] { frugal::Predictor::load(other, dir + "/none.pt"); }),
              HasSubstr("no file"));
}

TEST(Predictor, RunsATorchScriptFileWrittenByPython) {
  const std::string dir = frugal::testing::temp_dir("predictor_script");
  const std::string cmd =
      std::string("/usr/bin/python3 '") + FRUGAL_TORCHSCRIPT_WRITER + "' '" + dir + "' 2>&1";
  const int raw = std::system(cmd.c_str());
  const int status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  if (status == 77 || !fs::exists("/usr/bin/python3")) {
    GTEST_SKIP() << "Python's torch is not installed (python3-torch)";
  }
  ASSERT_EQ(status, 0) << cmd;
  at::Tensor x = read_raw(dir + "/input.bin", {4, 1, 8, 8});
  at::Tensor expected = read_raw(dir + "/output.bin", {4, 5});
  auto predictor = frugal::Predictor::load_torchscript(dir + "/model.pt");
  EXPECT_TRUE(torch::allclose(predictor.logits(x), expected, 1e-5, 1e-6));
  auto channels_last = frugal::Predictor::load_torchscript(
      dir + "/model.pt", frugal::PredictorOptions().channels_last(true).batch_size(3));
  EXPECT_TRUE(torch::allclose(channels_last.logits(x), expected, 1e-5, 1e-5));
  EXPECT_THAT(error_of([&] { frugal::Predictor::load_torchscript(dir + "/input.bin"); }),
              HasSubstr("as TorchScript"));
}

TEST(Predictor, ChannelsLastAndBf16AutocastKeepTheResults) {
  nn::Sequential cnn = frugal::models::SmallCnnBn();
  torch::manual_seed(8);
  at::Tensor x = torch::randn({6, 1, 28, 28});
  cnn->eval();
  at::Tensor expected = cnn->forward(x).detach();
  frugal::Predictor cl(cnn, frugal::PredictorOptions().channels_last(true));
  EXPECT_TRUE(torch::allclose(cl.logits(x), expected, 1e-4, 1e-5));
  EXPECT_TRUE(cnn->ptr<nn::Conv2dImpl>(0)->weight.is_contiguous(at::MemoryFormat::ChannelsLast));
  nn::Sequential cnn2 = frugal::models::SmallCnnBn();
  cnn2->eval();
  at::Tensor expected2 = cnn2->forward(x).detach();
  frugal::Predictor bf16(cnn2, frugal::PredictorOptions().precision(frugal::Precision::kBf16Mixed));
  at::Tensor out = bf16.logits(x);
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  const double rel = ((out - expected2).norm() / expected2.norm()).item<double>();
  EXPECT_LT(rel, 0.05);
  EXPECT_GT(rel, 0.0) << "bf16 autocast changed nothing: not applied";
}

TEST(Predictor, RefusesBadOptionsAndInputs) {
  EXPECT_THAT(
      error_of([] { frugal::Predictor p(small_net(1), frugal::PredictorOptions().batch_size(0)); }),
      HasSubstr("batch_size"));
  frugal::Predictor p(small_net(1));
  EXPECT_THAT(error_of([&] { p.predict(torch::randn({2, 8}), 4); }), HasSubstr("k must be"));
  EXPECT_THAT(error_of([&] { p.logits(at::Tensor()); }), HasSubstr("inputs"));
}

TEST(Predictor, PredictImagesRefusesBadInput) {
  nn::Sequential net = small_net(1);
  frugal::Predictor predictor(net);
  EXPECT_THAT(error_of([&] {
                predictor.predict_images(std::vector<std::string>{}, frugal::ImageInputOptions());
              }),
              HasSubstr("no images"));
  EXPECT_THAT(error_of([&] {
                predictor.predict_images(std::vector<std::string>{"x.png"},
                                         frugal::ImageInputOptions().mean({0.5}).std({0.5, 0.5}));
              }),
              HasSubstr("mean and std need the same number of values"));
  const std::string dir = frugal::testing::temp_dir("predict_images_bad");
  EXPECT_THAT(error_of([&] {
                predictor.predict_images(std::vector<std::string>{dir + "/missing.png"},
                                         frugal::ImageInputOptions(8, 8));
              }),
              HasSubstr(dir + "/missing.png"));
}

// TrainerOptions::channels_last: the model's 4-D parameters and buffers and every 4-D input batch
// in the NHWC layout, in training and in evaluation, with the same results as the default layout
// (within float tolerance: the convolution kernels differ, not the arithmetic; SGD, whose steps
// do not magnify rounding differences in near-zero gradients as Adam's normalisation does).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "frugal/classifier.h"
#include "frugal/data/batch_source.h"
#include "frugal/models/small.h"
#include "frugal/trainer.h"
#include "test_support.h"

namespace {

struct LayoutRun {
  std::vector<at::Tensor> params;
  std::vector<bool> params_nhwc;
  bool train_inputs_nhwc = true;
  bool val_inputs_nhwc = true;
  double val_loss = 0;
};

LayoutRun fit(bool channels_last) {
  torch::manual_seed(3);
  const at::Tensor x = torch::rand({48, 2, 12, 12});
  const at::Tensor y = torch::randint(0, 4, {48});
  torch::nn::Sequential net;
  LayoutRun run;
  // Records the layout of what reaches the model (a raw pointer: the net owns this function).
  net->push_back(torch::nn::Functional([&run, raw = net.get()](const at::Tensor& in) {
    const bool nhwc = in.is_contiguous(at::MemoryFormat::ChannelsLast) && !in.is_contiguous();
    if (raw->is_training()) {
      run.train_inputs_nhwc = run.train_inputs_nhwc && nhwc;
    } else {
      run.val_inputs_nhwc = run.val_inputs_nhwc && nhwc;
    }
    return in;
  }));
  net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 8, 3).padding(1)));
  net->push_back(torch::nn::BatchNorm2d(8));
  net->push_back(torch::nn::ReLU());
  net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).stride(2)));
  net->push_back(torch::nn::Flatten());
  net->push_back(torch::nn::Linear(8 * 5 * 5, 4));
  frugal::Classifier task(net, frugal::SGD(0.05));
  frugal::Trainer trainer(frugal::testing::quiet_options()
                              .max_epochs(2)
                              .num_sanity_val_steps(0)
                              .channels_last(channels_last)
                              .num_threads(1));
  trainer.fit(task, std::make_shared<frugal::TensorLoader>(x, y, frugal::TensorLoaderOptions(8)),
              std::make_shared<frugal::TensorLoader>(x, y, frugal::TensorLoaderOptions(16)));
  for (const auto& p : net->parameters()) {
    run.params.push_back(p.detach().clone().contiguous());
    run.params_nhwc.push_back(p.dim() == 4 && p.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                              !p.is_contiguous());
  }
  run.val_loss = trainer.metrics().get("val/loss").value_or(-1);
  return run;
}

}  // namespace

TEST(ChannelsLast, TrainsInNhwcToTheSameParameters) {
  const LayoutRun nchw = fit(false);
  const LayoutRun nhwc = fit(true);
  ASSERT_EQ(nchw.params.size(), nhwc.params.size());
  int64_t four_d = 0;
  for (size_t k = 0; k < nchw.params.size(); ++k) {
    EXPECT_TRUE(nchw.params[k].allclose(nhwc.params[k], 1e-4, 1e-5)) << "parameter " << k;
    EXPECT_FALSE(nchw.params_nhwc[k]) << "parameter " << k;
    if (nchw.params[k].dim() == 4) {
      ++four_d;
      EXPECT_TRUE(nhwc.params_nhwc[k]) << "parameter " << k << " is not channels_last";
    }
  }
  EXPECT_EQ(four_d, 2);
  EXPECT_FALSE(nchw.train_inputs_nhwc);
  EXPECT_TRUE(nhwc.train_inputs_nhwc);
  EXPECT_TRUE(nhwc.val_inputs_nhwc);
  EXPECT_NEAR(nchw.val_loss, nhwc.val_loss, 1e-4);
  EXPECT_GT(nchw.val_loss, 0);
}

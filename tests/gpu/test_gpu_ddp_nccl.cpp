// The NCCL path of data-parallel training, on one GPU: world size 1 over NCCL (two ranks cannot
// share one GPU under NCCL). The process group, the bucketed all-reduce from the autograd hooks,
// the buffer broadcast and the metric reduction all run; the result must equal single-device
// training. Two GPUs: see docs/distributed.md.
#include <cstdlib>

#include "gpu_support.h"

namespace {

class LauncherEnv {  // what torchrun would set for a one-process job
 public:
  LauncherEnv() {
    const std::string port = std::to_string(frugal::testing::free_port());
    for (const auto& [k, v] : {std::pair<const char*, std::string>{"RANK", "0"},
                               {"WORLD_SIZE", "1"},
                               {"LOCAL_RANK", "0"},
                               {"LOCAL_WORLD_SIZE", "1"},
                               {"MASTER_ADDR", "127.0.0.1"},
                               {"MASTER_PORT", port}}) {
      ::setenv(k, v.c_str(), 1);
    }
  }
  ~LauncherEnv() {
    for (const char* k :
         {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
      ::unsetenv(k);
    }
  }
};

std::vector<at::Tensor> train(const std::string& strategy, int64_t* world_size = nullptr,
                              double* val_acc = nullptr) {
  static auto d = frugal::testing::make_toy_data(256, 8, 3, 9);
  frugal::testing::RecordingTask task(/*seed=*/4);
  torch::nn::Sequential net = task.net;
  frugal::Trainer trainer(frugal::testing::gpu_options()
                              .strategy(strategy)
                              .max_epochs(2)
                              .accumulate_grad_batches(2)
                              .ddp_bucket_cap_mb(0.001));  // several buckets
  if (world_size != nullptr) *world_size = trainer.world_size();
  auto source = [&] {
    return std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(16));
  };
  frugal::Classifier eval(net);
  trainer.fit(task, source());
  if (val_acc != nullptr) *val_acc = trainer.validate(eval, source()).at("val/acc");
  std::vector<at::Tensor> out;
  for (auto& p : net->parameters()) out.push_back(p.detach().to(at::kCPU));
  return out;
}

TEST(GpuDdpNccl, WorldSizeOneOverNcclEqualsSingleDevice) {
  FRUGAL_REQUIRE_CUDA();
  double single_acc = 0;
  const auto single = train("single_device", nullptr, &single_acc);
  std::vector<at::Tensor> ddp;
  int64_t world = 0;
  double ddp_acc = 0;
  {
    LauncherEnv env;
    ddp = train("ddp", &world, &ddp_acc);
  }
  EXPECT_EQ(world, 1);
  ASSERT_EQ(ddp.size(), single.size());
  for (size_t i = 0; i < ddp.size(); ++i) {
    const double scale = std::max(1.0, single[i].abs().max().item<double>());
    EXPECT_LE((ddp[i] - single[i]).abs().max().item<double>() / scale, 1e-6) << "parameter " << i;
  }
  EXPECT_DOUBLE_EQ(ddp_acc, single_acc);
}

}  // namespace

// Out-of-memory recovery and the batch-size finder against real CUDA out-of-memory errors: the
// caching allocator is capped at 512 MiB, and a wide MLP needs ~192 KiB of activations and their
// gradients per sample, so batches of 4096 and more cannot fit while 1024 can.
#include "gpu_memory_cap.h"
#include "gpu_support.h"

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

torch::nn::Sequential wide_mlp() {
  torch::manual_seed(3);
  return torch::nn::Sequential(torch::nn::Linear(256, 16384), torch::nn::ReLU(),
                               torch::nn::Linear(16384, 10));
}

struct Data {
  at::Tensor x;
  at::Tensor y;
};
const Data& data() {
  static const Data d = [] {
    torch::manual_seed(0);
    return Data{torch::randn({16384, 256}), torch::randint(0, 10, {16384})};
  }();
  return d;
}

struct Trained {
  std::vector<at::Tensor> params;
  int64_t recoveries = 0;
  int64_t split = 1;
};

// Two epochs of batches of 8192 (two optimizer steps per epoch), optionally under a memory cap.
Trained train(bool capped) {
  auto net = wide_mlp();
  frugal::Classifier task(net, frugal::SGD(0.05));
  frugal::Trainer trainer(frugal::testing::gpu_options().max_epochs(2).seed(1).oom_recovery(true));
  auto source =
      std::make_shared<frugal::TensorLoader>(data().x, data().y, frugal::TensorLoaderOptions(8192));
  {
    std::optional<frugal::testing::CudaMemoryCap> cap;
    if (capped) cap.emplace(512 * kMiB);
    trainer.fit(task, source);
  }
  Trained out;
  for (auto& p : net->parameters()) out.params.push_back(p.detach().to(at::kCPU));
  out.recoveries = trainer.state().oom_recoveries;
  out.split = trainer.state().micro_batch_split;
  return out;
}

TEST(GpuOomRecovery, RealOutOfMemoryIsRecoveredWithTheSameUpdate) {
  FRUGAL_REQUIRE_CUDA();
  const Trained reference = train(/*capped=*/false);
  EXPECT_EQ(reference.recoveries, 0);
  const Trained run = train(/*capped=*/true);
  EXPECT_GE(run.recoveries, 2);  // 8192 and 4096 cannot fit in 512 MiB
  EXPECT_GE(run.split, 4);
  ASSERT_EQ(run.params.size(), reference.params.size());
  for (size_t i = 0; i < run.params.size(); ++i) {
    const double scale = std::max(1.0, reference.params[i].abs().max().item<double>());
    EXPECT_LT((run.params[i] - reference.params[i]).abs().max().item<double>() / scale, 1e-5)
        << "parameter " << i;
  }
}

TEST(GpuBatchSizeFinder, StopsAtTheRealOutOfMemoryAndRestoresTheState) {
  FRUGAL_REQUIRE_CUDA();
  auto net = wide_mlp();
  frugal::Classifier task(net, frugal::SGD(0.05));
  net->to(torch::kCUDA);
  std::vector<at::Tensor> before;
  for (auto& p : net->parameters()) before.push_back(p.detach().to(at::kCPU));
  frugal::BatchSizeResult found;
  {
    frugal::testing::CudaMemoryCap cap(512 * kMiB);
    found = frugal::find_batch_size(
        task, data().x, data().y,
        frugal::BatchSizeFinderOptions().device(torch::kCUDA).max_size(16384).out(&std::cout));
  }
  std::cout << found.describe() << "\n";
  EXPECT_GE(found.batch_size, 512);
  EXPECT_LT(found.batch_size, 4096);
  bool saw_oom = false;
  for (const auto& trial : found.trials) {
    if (trial.outcome == frugal::BatchSizeTrial::Outcome::kOutOfMemory) {
      saw_oom = true;
      EXPECT_GT(trial.batch_size, found.batch_size);
    } else {
      EXPECT_LE(trial.batch_size, found.batch_size);
    }
  }
  EXPECT_TRUE(saw_oom);
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(net->parameters()[i].detach().to(at::kCPU).equal(before[i])) << "parameter " << i;
  }
}

TEST(GpuBatchSizeFinder, ByteBudgetOnCudaIsRespected) {
  FRUGAL_REQUIRE_CUDA();
  auto net = wide_mlp();
  frugal::Classifier task(net, frugal::SGD(0.05));
  const double budget = 128 * kMiB;
  const auto found = frugal::find_batch_size(
      task, data().x, data().y,
      frugal::BatchSizeFinderOptions().device(torch::kCUDA).max_size(16384).budget_bytes(budget));
  std::cout << found.describe() << "\n";
  EXPECT_GT(found.batch_size, 0);
  EXPECT_LE(static_cast<double>(found.bytes_used), budget);
  const auto next = frugal::measure_batch_size(
      task, data().x, data().y, found.batch_size * 2,
      frugal::BatchSizeFinderOptions().device(torch::kCUDA).budget_bytes(budget));
  EXPECT_FALSE(next.fits()) << "twice the chosen size used " << next.bytes / kMiB << " MiB";
}

}  // namespace

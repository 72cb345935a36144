// TensorLoader, FunctionSource and the torch::data adapter.
#include <frugal/data/batch_source.h>
#include <frugal/data/torch_data.h>
#include <frugal/error.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "test_support.h"

// The statement throws a frugal::Error whose message contains `substring`.
#define EXPECT_ERROR(statement, substring)               \
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, substring, \
                      frugal::testing::error_message([&] { statement; }))

namespace {

// Sample i has data row [i, 1000 + i] and target i, so a batch shows which samples it holds.
struct Numbered {
  at::Tensor data;
  at::Tensor targets;
};
Numbered numbered(int64_t n) {
  at::Tensor ids = torch::arange(n, torch::kLong);
  return {torch::stack({ids, ids + 1000}, 1).to(torch::kFloat), ids};
}

std::vector<frugal::Batch> run_epoch(frugal::BatchSource& source, int64_t epoch, int64_t skip = 0) {
  source.start_epoch(epoch, skip);
  std::vector<frugal::Batch> batches;
  while (auto batch = source.next()) batches.push_back(std::move(*batch));
  return batches;
}

at::Tensor all_targets(const std::vector<frugal::Batch>& batches) {
  std::vector<at::Tensor> parts;
  for (const auto& b : batches) parts.push_back(b.target);
  return parts.empty() ? torch::empty({0}, torch::kLong) : torch::cat(parts);
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

void expect_same_batches(const std::vector<frugal::Batch>& a, const std::vector<frugal::Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].data, b[i].data)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].target, b[i].target)) << "batch " << i;
  }
}

// Every batch's data rows belong to its targets (one index_select for each, same indices).
void expect_rows_match(const std::vector<frugal::Batch>& batches) {
  for (const auto& b : batches) {
    EXPECT_TRUE(torch::equal(b.data.select(1, 0).to(torch::kLong), b.target));
    EXPECT_TRUE(torch::equal(b.data.select(1, 1).to(torch::kLong), b.target + 1000));
  }
}

TEST(TensorLoader, EverySampleOncePerEpochWithShortLastBatch) {
  auto d = numbered(10);
  for (bool prefetch : {true, false}) {
    frugal::TensorLoader loader(d.data, d.targets,
                                frugal::TensorLoaderOptions(3).shuffle(true).prefetch(prefetch));
    EXPECT_EQ(loader.num_batches(), 4);
    EXPECT_EQ(loader.num_samples(), 10);
    for (int64_t epoch : {0, 1}) {
      auto batches = run_epoch(loader, epoch);
      ASSERT_EQ(batches.size(), 4u);
      EXPECT_EQ(batches[0].size(), 3);
      EXPECT_EQ(batches[1].size(), 3);
      EXPECT_EQ(batches[2].size(), 3);
      EXPECT_EQ(batches[3].size(), 1);
      EXPECT_EQ(batches[0].data.sizes(), (std::vector<int64_t>{3, 2}));
      expect_rows_match(batches);
      at::Tensor seen = all_targets(batches);
      EXPECT_TRUE(torch::equal(std::get<0>(seen.sort()), torch::arange(10, torch::kLong)));
      EXPECT_TRUE(torch::equal(seen, loader.epoch_indices(epoch)));
      EXPECT_FALSE(loader.next().has_value());  // stays at the end
    }
  }
}

TEST(TensorLoader, SequentialWithoutShuffle) {
  auto d = numbered(7);
  frugal::TensorLoader loader(d.data, d.targets, frugal::TensorLoaderOptions(2));
  auto batches = run_epoch(loader, 5);
  EXPECT_EQ(to_vector(all_targets(batches)), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(batches.back().size(), 1);
}

TEST(TensorLoader, DropLast) {
  auto d = numbered(10);
  frugal::TensorLoader loader(d.data, d.targets,
                              frugal::TensorLoaderOptions(3).shuffle(true).drop_last(true));
  EXPECT_EQ(loader.num_batches(), 3);
  EXPECT_EQ(loader.num_samples(), 9);
  auto batches = run_epoch(loader, 0);
  ASSERT_EQ(batches.size(), 3u);
  for (const auto& b : batches) EXPECT_EQ(b.size(), 3);
  at::Tensor seen = all_targets(batches);
  EXPECT_EQ(std::get<0>(at::_unique(seen)).numel(), 9);
  EXPECT_TRUE(torch::equal(seen, loader.epoch_indices(0)));

  // Exact multiples drop nothing.
  frugal::TensorLoader exact(d.data, d.targets, frugal::TensorLoaderOptions(5).drop_last(true));
  EXPECT_EQ(exact.num_batches(), 2);
  EXPECT_EQ(exact.num_samples(), 10);
}

TEST(TensorLoader, OrderIsAPureFunctionOfSeedAndEpoch) {
  auto d = numbered(50);
  auto options = frugal::TensorLoaderOptions(8).shuffle(true).seed(7);
  frugal::TensorLoader a(d.data, d.targets, options);
  frugal::TensorLoader b(d.data, d.targets, options);
  // The documented construction: randperm with a generator seeded by seed_mix(seed, epoch).
  for (int64_t epoch : {0, 3}) {
    at::Tensor expected = torch::randperm(
        50, at::detail::createCPUGenerator(frugal::detail::seed_mix(7, epoch)), torch::kLong);
    EXPECT_TRUE(torch::equal(a.epoch_indices(epoch), expected));
  }
  // Same seed and epoch: same batches, whatever happened before.
  run_epoch(b, 1);
  expect_same_batches(run_epoch(a, 3), run_epoch(b, 3));
  // Another epoch or another seed: another order.
  EXPECT_FALSE(torch::equal(a.epoch_indices(0), a.epoch_indices(1)));
  frugal::TensorLoader c(d.data, d.targets, frugal::TensorLoaderOptions(8).shuffle(true).seed(8));
  EXPECT_FALSE(torch::equal(a.epoch_indices(0), c.epoch_indices(0)));
  EXPECT_FALSE(torch::equal(a.epoch_indices(0), torch::arange(50, torch::kLong)));
}

TEST(TensorLoader, SeedMixSeparatesNeighbours) {
  using frugal::detail::seed_mix;
  EXPECT_EQ(seed_mix(1, 2), seed_mix(1, 2));
  EXPECT_NE(seed_mix(0, 0), seed_mix(0, 1));
  EXPECT_NE(seed_mix(0, 1), seed_mix(1, 0));
  EXPECT_NE(seed_mix(1, 0), seed_mix(0, 0));
}

TEST(TensorLoader, LeavesTheGlobalGeneratorAlone) {
  auto d = numbered(100);
  torch::manual_seed(123);
  at::Tensor expected = torch::rand({5});
  for (bool prefetch : {true, false}) {
    torch::manual_seed(123);
    frugal::TensorLoader loader(d.data, d.targets,
                                frugal::TensorLoaderOptions(16).shuffle(true).prefetch(prefetch));
    run_epoch(loader, 0);
    run_epoch(loader, 1, 2);
    loader.epoch_indices(4);
    EXPECT_TRUE(torch::equal(torch::rand({5}), expected)) << "prefetch " << prefetch;
  }
}

TEST(TensorLoader, EvaluationShardsAreDisjointAndComplete) {
  auto d = numbered(10);
  auto options = frugal::TensorLoaderOptions(2).shuffle(true).seed(3).pad_shards(false);
  frugal::TensorLoader whole(d.data, d.targets, options);
  at::Tensor order = whole.epoch_indices(2);
  std::vector<at::Tensor> shards;
  const std::vector<int64_t> expected_sizes = {4, 3, 3};
  for (int64_t rank = 0; rank < 3; ++rank) {
    frugal::TensorLoader loader(d.data, d.targets, options);
    loader.set_shard(rank, 3);
    EXPECT_EQ(loader.rank(), rank);
    EXPECT_EQ(loader.world_size(), 3);
    EXPECT_EQ(loader.num_samples(), expected_sizes[rank]);
    EXPECT_EQ(loader.num_batches(), 2);
    at::Tensor seen = all_targets(run_epoch(loader, 2));
    // Rank r takes positions r, r + W, ... of the epoch's common order.
    EXPECT_TRUE(torch::equal(seen, order.slice(0, rank, 10, 3)));
    shards.push_back(seen);
  }
  at::Tensor all = torch::cat(shards);
  EXPECT_EQ(all.numel(), 10);
  EXPECT_TRUE(torch::equal(std::get<0>(all.sort()), torch::arange(10, torch::kLong)));

  // More ranks than samples: the extra ranks get nothing.
  auto tiny = numbered(2);
  frugal::TensorLoader last(tiny.data, tiny.targets,
                            frugal::TensorLoaderOptions(4).pad_shards(false));
  last.set_shard(3, 4);
  EXPECT_EQ(last.num_samples(), 0);
  EXPECT_EQ(last.num_batches(), 0);
  EXPECT_TRUE(run_epoch(last, 0).empty());
}

TEST(TensorLoader, TrainingShardsArePaddedToEqualLength) {
  auto d = numbered(10);
  auto options = frugal::TensorLoaderOptions(2).shuffle(true).seed(5);
  frugal::TensorLoader whole(d.data, d.targets, options);
  at::Tensor order = whole.epoch_indices(1);
  // As DistributedSampler: padded by repeating from the start to 12 = 3 * 4.
  at::Tensor padded = torch::cat({order, order.slice(0, 0, 2)});
  std::vector<at::Tensor> shards;
  for (int64_t rank = 0; rank < 4; ++rank) {
    frugal::TensorLoader loader(d.data, d.targets, options);
    loader.set_shard(rank, 4);
    EXPECT_EQ(loader.num_samples(), 3);
    EXPECT_EQ(loader.num_batches(), 2);
    auto batches = run_epoch(loader, 1);
    expect_rows_match(batches);
    at::Tensor seen = all_targets(batches);
    EXPECT_TRUE(torch::equal(seen, padded.slice(0, rank, 12, 4)));
    EXPECT_TRUE(torch::equal(seen, loader.epoch_indices(1)));
    shards.push_back(seen);
  }
  // Every sample is covered; exactly two are seen twice.
  at::Tensor counts = torch::bincount(torch::cat(shards), {}, 10);
  EXPECT_EQ(counts.min().item<int64_t>(), 1);
  EXPECT_EQ(counts.sum().item<int64_t>(), 12);

  // Far more ranks than samples still pads every rank to one sample.
  auto tiny = numbered(3);
  frugal::TensorLoader wide(tiny.data, tiny.targets, frugal::TensorLoaderOptions(2));
  wide.set_shard(7, 8);
  EXPECT_EQ(to_vector(wide.epoch_indices(0)), (std::vector<int64_t>{1}));  // [0 1 2 0 1 2 0 1][7]
}

TEST(TensorLoader, ShardedDropLastCountsPerRank) {
  auto d = numbered(23);
  frugal::TensorLoader loader(d.data, d.targets,
                              frugal::TensorLoaderOptions(4).drop_last(true).shuffle(true));
  loader.set_shard(1, 2);  // 12 samples on this rank -> 3 full batches
  EXPECT_EQ(loader.num_batches(), 3);
  EXPECT_EQ(loader.num_samples(), 12);
  auto batches = run_epoch(loader, 0);
  EXPECT_EQ(batches.size(), 3u);
  EXPECT_EQ(loader.epoch_indices(0).numel(), 12);
}

TEST(TensorLoader, SkipBatchesResumesAtTheSameBatch) {
  auto d = numbered(20);
  for (bool prefetch : {true, false}) {
    auto options = frugal::TensorLoaderOptions(3).shuffle(true).seed(11).prefetch(prefetch);
    frugal::TensorLoader loader(d.data, d.targets, options);
    auto full = run_epoch(loader, 2);
    ASSERT_EQ(full.size(), 7u);
    for (int64_t skip : {1, 4, 6}) {
      frugal::TensorLoader resumed(d.data, d.targets, options);
      auto rest = run_epoch(resumed, 2, skip);
      expect_same_batches(rest, std::vector<frugal::Batch>(full.begin() + skip, full.end()));
    }
    // Resuming after the last batch yields nothing; past it is an error.
    EXPECT_TRUE(run_epoch(loader, 2, 7).empty());
    EXPECT_ERROR(loader.start_epoch(2, 8), "skip_batches must be in [0, 7]");
  }
}

TEST(TensorLoader, PrefetchGivesTheSameBatchesAsInline) {
  auto d = numbered(37);
  auto options = frugal::TensorLoaderOptions(5).shuffle(true).seed(2);
  frugal::TensorLoader on(d.data, d.targets, options.prefetch(true));
  frugal::TensorLoader off(d.data, d.targets, options.prefetch(false));
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    auto a = run_epoch(on, epoch);
    auto b = run_epoch(off, epoch);
    expect_same_batches(a, b);
    EXPECT_EQ(a.size(), 8u);
  }
}

TEST(TensorLoader, StartEpochAndDestructionMidEpochAreClean) {
  auto d = numbered(64);
  auto options = frugal::TensorLoaderOptions(4).shuffle(true);
  frugal::TensorLoader reference(d.data, d.targets, options.prefetch(false));
  auto epoch1 = run_epoch(reference, 1);
  for (int trial = 0; trial < 50; ++trial) {
    frugal::TensorLoader loader(d.data, d.targets, options);
    loader.start_epoch(0);
    for (int i = 0; i < trial % 5; ++i) ASSERT_TRUE(loader.next().has_value());
    // Abandon epoch 0 mid-way: epoch 1 must not see a batch prepared for epoch 0.
    expect_same_batches(run_epoch(loader, 1), epoch1);
    loader.start_epoch(2);
    loader.next();
    // ... and destruction with a batch in flight must not hang or crash.
  }
}

TEST(TensorLoader, WorkerErrorIsRethrownFromNextAndTheBatchRetried) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "needs a build without CUDA";
  auto d = numbered(9);
  for (bool prefetch : {true, false}) {
    frugal::TensorLoader loader(d.data, d.targets,
                                frugal::TensorLoaderOptions(4).prefetch(prefetch));
    // Without CUDA, preparing a batch for a CUDA device fails (pinned memory is unavailable).
    loader.set_device(c10::Device(c10::kCUDA, 0));
    loader.start_epoch(0);
    EXPECT_ANY_THROW(loader.next());
    loader.set_device(c10::kCPU);
    auto batch = loader.next();
    ASSERT_TRUE(batch.has_value());
    EXPECT_EQ(to_vector(batch->target), (std::vector<int64_t>{0, 1, 2, 3}));
    EXPECT_EQ(batch->data.device(), c10::Device(c10::kCPU));
  }
}

TEST(TensorLoader, DeliversTheSameBatchesOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto d = numbered(10);
  const c10::Device cuda(c10::kCUDA, 0);
  for (bool prefetch : {true, false}) {
    auto options = frugal::TensorLoaderOptions(3).shuffle(true).prefetch(prefetch);
    frugal::TensorLoader on_cpu(d.data, d.targets, options);
    frugal::TensorLoader on_gpu(d.data, d.targets, options);
    on_gpu.set_device(cuda);
    auto expected = run_epoch(on_cpu, 1);
    auto got = run_epoch(on_gpu, 1);
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].data.device(), cuda);
      EXPECT_EQ(got[i].target.device(), cuda);
      EXPECT_TRUE(torch::equal(got[i].data.cpu(), expected[i].data));
      EXPECT_TRUE(torch::equal(got[i].target.cpu(), expected[i].target));
    }
    // Data already on the device is indexed there.
    frugal::TensorLoader resident(d.data.to(cuda), d.targets.to(cuda), options);
    resident.set_device(cuda);
    auto same = run_epoch(resident, 1);
    ASSERT_EQ(same.size(), expected.size());
    EXPECT_TRUE(torch::equal(same[1].data.cpu(), expected[1].data));
  }
}

TEST(TensorLoader, DescribeNamesSizeBatchOrderAndShard) {
  auto d = numbered(10);
  frugal::TensorLoader loader(d.data, d.targets, frugal::TensorLoaderOptions(3).shuffle(true));
  EXPECT_EQ(loader.describe(), "TensorLoader(10 samples, batch 3, shuffle, shard 0/1)");
  loader.set_shard(1, 2);
  EXPECT_EQ(loader.describe(), "TensorLoader(10 samples, batch 3, shuffle, shard 1/2)");
  frugal::TensorLoader ordered(d.data, d.targets, frugal::TensorLoaderOptions(4).drop_last(true));
  EXPECT_EQ(ordered.describe(),
            "TensorLoader(10 samples, batch 4, sequential, drop_last, shard 0/1)");
  EXPECT_EQ(ordered.dataset_size(), 10);
}

TEST(TensorLoader, RefusesBadArguments) {
  auto d = numbered(10);
  const std::string mismatch = frugal::testing::error_message(
      [&] { frugal::TensorLoader(d.data, d.targets.slice(0, 0, 9)); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "same number of samples", mismatch);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "data [10, 2] and targets [9]", mismatch);
  EXPECT_ERROR(frugal::TensorLoader(d.data, d.targets, frugal::TensorLoaderOptions(0)),
               "batch_size must be >= 1, got 0");
  EXPECT_ERROR(frugal::TensorLoader(d.data.slice(0, 0, 0), d.targets.slice(0, 0, 0)),
               "the data set is empty");
  EXPECT_ERROR(frugal::TensorLoader(at::Tensor(), d.targets), "must be defined");
  frugal::TensorLoader loader(d.data, d.targets);
  EXPECT_ERROR(loader.next(), "next() called before start_epoch()");
  EXPECT_ERROR(loader.set_shard(2, 2),
               "rank must be in [0, world_size), got rank 2 with world_size 2");
  EXPECT_ERROR(loader.set_shard(-1, 2), "got rank -1");
  EXPECT_ERROR(loader.set_shard(0, 0), "world_size must be >= 1, got 0");
  EXPECT_ERROR(loader.start_epoch(0, -1), "skip_batches must be in [0, 1]");
  // A new shard invalidates a running epoch; the same shard again does not.
  loader.start_epoch(0);
  loader.set_shard(0, 1);
  EXPECT_TRUE(loader.next().has_value());
  loader.start_epoch(0);
  loader.set_shard(1, 2);
  EXPECT_ERROR(loader.next(), "next() called before start_epoch()");
}

// ---- FunctionSource ----

TEST(FunctionSource, StartsEpochsThroughTheFactoryAndSkips) {
  std::vector<int64_t> epochs;
  int64_t produced = 0;
  frugal::FunctionSource source(
      [&](int64_t epoch) {
        epochs.push_back(epoch);
        auto count = std::make_shared<int64_t>(0);
        return [&produced, count, epoch]() -> std::optional<frugal::Batch> {
          if (*count == 3) return std::nullopt;
          ++produced;
          const int64_t i = (*count)++;
          return frugal::Batch{torch::full({2, 1}, static_cast<double>(epoch * 10 + i)),
                               torch::full({2}, i, torch::kLong)};
        };
      },
      3, 6, "counter");
  EXPECT_EQ(source.num_batches(), 3);
  EXPECT_EQ(source.num_samples(), 6);
  EXPECT_EQ(source.describe(), "counter");
  EXPECT_ERROR(source.next(), "next() called before start_epoch()");

  auto batches = run_epoch(source, 4, /*skip=*/1);
  EXPECT_EQ(epochs, (std::vector<int64_t>{4}));
  EXPECT_EQ(produced, 3);  // the skipped batch was drawn, then the two delivered
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].data[0][0].item<float>(), 41.0f);
  EXPECT_EQ(batches[1].data[0][0].item<float>(), 42.0f);
  EXPECT_EQ(batches[1].target[0].item<int64_t>(), 2);

  EXPECT_EQ(run_epoch(source, 5).size(), 3u);
  EXPECT_EQ(epochs, (std::vector<int64_t>{4, 5}));
  EXPECT_ERROR(source.start_epoch(6, 4), "cannot skip 4 batches of epoch 6, it ended after 3");
}

TEST(FunctionSource, RefusesToBeShardedByFrugal) {
  auto empty_epoch = [](int64_t) { return [] { return std::optional<frugal::Batch>(); }; };
  frugal::FunctionSource source(empty_epoch, 0, 0, "mine");
  source.set_shard(0, 1);  // a single process is fine
  const std::string message = frugal::testing::error_message([&] { source.set_shard(1, 2); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "FunctionSource 'mine'", message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "must shard itself", message);
  EXPECT_ERROR(frugal::FunctionSource(nullptr, 1, 1), "the epoch factory is empty");
  EXPECT_ERROR(frugal::FunctionSource(empty_epoch, -1, 1), "num_batches must be >= 0, got -1");
  EXPECT_ERROR(frugal::FunctionSource(empty_epoch, 1, -2), "num_samples must be >= 0, got -2");
}

// ---- torch::data adapter ----

// A torch::data dataset with targets: sample i is ([i, 1000 + i], i).
struct PairDataset : torch::data::datasets::Dataset<PairDataset> {
  explicit PairDataset(int64_t n) : d(numbered(n)) {}
  torch::data::Example<> get(size_t index) override {
    return {d.data[static_cast<int64_t>(index)], d.targets[static_cast<int64_t>(index)]};
  }
  torch::optional<size_t> size() const override { return d.data.size(0); }
  Numbered d;
};

TEST(TorchData, AdaptsAStackedLoaderAndRemakesItEveryEpoch) {
  std::vector<int64_t> epochs;
  auto source = frugal::from_torch_data(
      [&epochs](int64_t epoch) {
        epochs.push_back(epoch);
        return torch::data::make_data_loader(
            PairDataset(10).map(torch::data::transforms::Stack<>()),
            torch::data::samplers::SequentialSampler(10), torch::data::DataLoaderOptions(4));
      },
      3, 10);
  EXPECT_EQ(source->num_batches(), 3);
  EXPECT_EQ(source->num_samples(), 10);
  EXPECT_EQ(source->describe(), "torch::data loader");
  source->set_device(c10::kCPU);
  for (int64_t epoch : {0, 1}) {
    auto batches = run_epoch(*source, epoch);
    ASSERT_EQ(batches.size(), 3u);
    EXPECT_EQ(batches[2].size(), 2);
    expect_rows_match(batches);
    EXPECT_EQ(to_vector(all_targets(batches)), to_vector(torch::arange(10)));
  }
  EXPECT_EQ(epochs, (std::vector<int64_t>{0, 1}));
  // A resumed epoch continues at the same batch.
  auto rest = run_epoch(*source, 2, 2);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(to_vector(rest[0].target), (std::vector<int64_t>{8, 9}));
  EXPECT_THROW(source->set_shard(0, 2), frugal::Error);
}

TEST(TorchData, AdaptsATensorDatasetWithoutTargets) {
  at::Tensor x = torch::arange(12, torch::kFloat).reshape({6, 2});
  auto source = frugal::from_torch_data(
      [x](int64_t) {
        return torch::data::make_data_loader(
            torch::data::datasets::TensorDataset(x).map(
                torch::data::transforms::Stack<torch::data::TensorExample>()),
            torch::data::samplers::SequentialSampler(6), torch::data::DataLoaderOptions(4));
      },
      2, 6, "tensors");
  auto batches = run_epoch(*source, 0);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_TRUE(torch::equal(batches[0].data, x.slice(0, 0, 4)));
  EXPECT_TRUE(torch::equal(batches[1].data, x.slice(0, 4, 6)));
  EXPECT_FALSE(batches[0].target.defined());
}

TEST(TorchData, StacksUncollatedBatches) {
  auto source = frugal::from_torch_data(
      [](int64_t) {
        return torch::data::make_data_loader(PairDataset(5),
                                             torch::data::samplers::SequentialSampler(5),
                                             torch::data::DataLoaderOptions(2));
      },
      3, 5);
  auto batches = run_epoch(*source, 0);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].data.sizes(), (std::vector<int64_t>{2, 2}));
  expect_rows_match(batches);
  EXPECT_EQ(to_vector(all_targets(batches)), (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

}  // namespace

// Shards: training shards are disjoint apart from the padding, cover the data set and are equally
// long (every rank steps equally often); evaluation shards are disjoint and complete (each
// sample is counted exactly once).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "test_support.h"

namespace {

std::vector<std::vector<int64_t>> shards(int64_t n, int64_t world, frugal::TensorLoaderOptions o,
                                         int64_t epoch) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t r = 0; r < world; ++r) {
    frugal::TensorLoader loader(torch::arange(n).to(torch::kFloat).unsqueeze(1), torch::zeros({n}),
                                o);
    loader.set_shard(r, world);
    at::Tensor idx = loader.epoch_indices(epoch);
    out.emplace_back(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel());
  }
  return out;
}

}  // namespace

TEST(DdpSampler, EvaluationShardsAreDisjointAndComplete) {
  for (int64_t n : {1, 7, 100, 203}) {
    for (int64_t world : {2, 3, 4}) {
      for (bool shuffle : {false, true}) {
        auto s =
            shards(n, world,
                   frugal::TensorLoaderOptions(16).pad_shards(false).shuffle(shuffle).seed(5), 1);
        std::multiset<int64_t> all;
        for (const auto& shard : s) all.insert(shard.begin(), shard.end());
        ASSERT_EQ(static_cast<int64_t>(all.size()), n) << n << " " << world;
        for (int64_t i = 0; i < n; ++i) EXPECT_EQ(all.count(i), 1u) << i;
      }
    }
  }
}

TEST(DdpSampler, TrainingShardsAreEqualCompleteAndDisjointButForPadding) {
  for (int64_t n : {7, 100, 203}) {
    for (int64_t world : {2, 3}) {
      auto s = shards(n, world, frugal::TensorLoaderOptions(16).shuffle(true).seed(9), 3);
      const int64_t per_rank = (n + world - 1) / world;
      std::multiset<int64_t> all;
      for (const auto& shard : s) {
        EXPECT_EQ(static_cast<int64_t>(shard.size()), per_rank);
        all.insert(shard.begin(), shard.end());
      }
      std::set<int64_t> distinct(all.begin(), all.end());
      EXPECT_EQ(static_cast<int64_t>(distinct.size()), n);                    // complete
      EXPECT_EQ(static_cast<int64_t>(all.size()) - n, per_rank * world - n);  // padding only
    }
  }
}

TEST(DdpSampler, TwoRanksSplitEachGlobalBatch) {
  // Rank r's step-t batch of size b and the other rank's make up the one-process batch of 2b:
  // what makes 2 ranks x b equal 1 process x 2b.
  const int64_t n = 96, b = 8;
  auto two = shards(n, 2, frugal::TensorLoaderOptions(b).shuffle(true).seed(11), 2);
  auto one = shards(n, 1, frugal::TensorLoaderOptions(2 * b).shuffle(true).seed(11), 2);
  for (int64_t t = 0; t < n / (2 * b); ++t) {
    std::multiset<int64_t> joined(two[0].begin() + t * b, two[0].begin() + (t + 1) * b);
    joined.insert(two[1].begin() + t * b, two[1].begin() + (t + 1) * b);
    std::multiset<int64_t> single(one[0].begin() + t * 2 * b, one[0].begin() + (t + 1) * 2 * b);
    EXPECT_EQ(joined, single) << "step " << t;
  }
}

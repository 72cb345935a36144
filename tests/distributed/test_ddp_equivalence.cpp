// Data-parallel training over real processes (Gloo on 127.0.0.1) against one process: 2 ranks
// with batch b give the parameters of 1 process with batch 2b (to 1e-6 relative), with and
// without gradient accumulation, several gradient buckets, frozen parameters, BatchNorm; unused
// parameters are a clear error; checkpoints move between 2 ranks and 1.
#include "ddp_test_support.h"

namespace ft = frugal::testing;

namespace {

struct Dirs {
  std::string dir;
  explicit Dirs(const std::string& name) : dir(ft::temp_dir(name)) {}
  std::string operator()(const std::string& file) const { return dir + "/" + file; }
};

std::vector<std::string> with(std::vector<std::string> base, const std::vector<std::string>& more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

/// Trains `model` on 2 ranks with batch b and on 1 process with 2b; expects equal parameters.
void expect_two_ranks_equal_one(const std::string& name, const std::vector<std::string>& common,
                                int64_t b, const std::string& env = "") {
  Dirs d(name);
  auto two = ft::run_worker(
      2, with(common, {"--batch-size", std::to_string(b), "--out", d("two"), "--root", d.dir}),
      d("two.log"), env);
  ASSERT_EQ(two.exit_code, 0) << two.log;
  // Ranks on one machine sum through shared memory unless FRUGAL_DDP_SHM=0 asks for Gloo.
  const bool gloo = env.find("FRUGAL_DDP_SHM=0") != std::string::npos;
  EXPECT_NE(two.log.find(gloo ? "gradients over Gloo" : "gradients through shared memory"),
            std::string::npos)
      << two.log;
  auto one = ft::run_worker(
      0, with(common, {"--batch-size", std::to_string(2 * b), "--out", d("one"), "--root", d.dir}),
      d("one.log"), env);
  ASSERT_EQ(one.exit_code, 0) << one.log;
  auto ref = ft::load_state(d("one.rank0"));
  auto r0 = ft::load_state(d("two.rank0"));
  auto r1 = ft::load_state(d("two.rank1"));
  EXPECT_EQ(ft::max_relative_difference(r0, r1), 0.0) << "ranks disagree";
  const double diff = ft::max_relative_difference(r0, ref);
  EXPECT_LE(diff, 1e-6) << "2 ranks x " << b << " vs 1 x " << 2 * b;
  // The run really trained (it is not equal to the start).
  EXPECT_EQ(ft::load_metrics(d("two.rank0.metrics"))["global_step"],
            ft::load_metrics(d("one.rank0.metrics"))["global_step"]);
  std::cout << name << ": max relative difference " << diff << "\n";
}

}  // namespace

TEST(DdpEquivalence, TwoRanksEqualOneProcessWithDoubleBatch) {
  expect_two_ranks_equal_one("ddp_plain", {"--model", "mlp", "--max-steps", "10"}, 8);
}

TEST(DdpEquivalence, TwoRanksEqualOneProcessOverGloo) {
  expect_two_ranks_equal_one("ddp_plain_gloo", {"--model", "mlp", "--max-steps", "10"}, 8,
                             "FRUGAL_DDP_SHM=0");
}

TEST(DdpEquivalence, ThreeRanksEqualOneProcessWithTripleBatch) {
  // Three ranks on two cores: the shared-memory sum splits each bucket three ways.
  Dirs d("ddp_three");
  auto three = ft::run_worker(3,
                              {"--model", "mlp", "--max-steps", "8", "--batch-size", "4", "--out",
                               d("three"), "--root", d.dir},
                              d("three.log"));
  ASSERT_EQ(three.exit_code, 0) << three.log;
  EXPECT_NE(three.log.find("gradients through shared memory"), std::string::npos) << three.log;
  auto one = ft::run_worker(0,
                            {"--model", "mlp", "--max-steps", "8", "--batch-size", "12", "--out",
                             d("one"), "--root", d.dir},
                            d("one.log"));
  ASSERT_EQ(one.exit_code, 0) << one.log;
  auto r0 = ft::load_state(d("three.rank0"));
  for (const char* other : {"three.rank1", "three.rank2"}) {
    EXPECT_EQ(ft::max_relative_difference(r0, ft::load_state(d(other))), 0.0) << other;
  }
  EXPECT_LE(ft::max_relative_difference(r0, ft::load_state(d("one.rank0"))), 1e-6);
}

TEST(DdpEquivalence, RanksThatDisagreeOnSharedMemoryAllUseGloo) {
  // Rank 1 turns shared memory off, rank 0 does not: both must pick Gloo (not wait for each
  // other), and train as one process would.
  Dirs d("ddp_mixed_transport");
  auto two =
      ft::run_two_ranks_by_hand(d.dir, 60,
                                {"--model", "mlp", "--max-steps", "10", "--batch-size", "8",
                                 "--out", d("two"), "--root", d.dir},
                                "wait $p; exit $rc", {"FRUGAL_DDP_SHM=1", "FRUGAL_DDP_SHM=0"});
  ASSERT_EQ(two.exit_code, 0) << two.log;
  EXPECT_NE(two.log.find("gradients over Gloo"), std::string::npos) << two.log;
  auto one = ft::run_worker(0,
                            {"--model", "mlp", "--max-steps", "10", "--batch-size", "16", "--out",
                             d("one"), "--root", d.dir},
                            d("one.log"));
  ASSERT_EQ(one.exit_code, 0) << one.log;
  auto r0 = ft::load_state(d("two.rank0"));
  EXPECT_EQ(ft::max_relative_difference(r0, ft::load_state(d("two.rank1"))), 0.0);
  EXPECT_LE(ft::max_relative_difference(r0, ft::load_state(d("one.rank0"))), 1e-6);
}

TEST(DdpEquivalence, WithGradientAccumulationAndSmallBuckets) {
  // ~1 KB buckets: the MLP's gradients travel in several all-reduces.
  expect_two_ranks_equal_one("ddp_accum",
                             {"--model", "mlp", "--max-steps", "6", "--accumulate", "3"}, 4,
                             "FRUGAL_DDP_BUCKET_MB=0.001");
}

TEST(DdpEquivalence, WithGradientAccumulationAndSmallBucketsOverGloo) {
  // Over Gloo the buckets are launched from the autograd hooks, during backward.
  expect_two_ranks_equal_one("ddp_accum_gloo",
                             {"--model", "mlp", "--max-steps", "6", "--accumulate", "3"}, 4,
                             "FRUGAL_DDP_BUCKET_MB=0.001 FRUGAL_DDP_SHM=0");
}

TEST(DdpEquivalence, FrozenParametersAreSkipped) {
  expect_two_ranks_equal_one("ddp_frozen", {"--model", "frozen", "--max-steps", "6"}, 8,
                             "FRUGAL_DDP_BUCKET_MB=0.001");
}

TEST(DdpEquivalence, BatchNormInEvalConsistentForm) {
  expect_two_ranks_equal_one("ddp_bn_eval", {"--model", "bn-eval", "--max-steps", "8"}, 8);
}

TEST(DdpEquivalence, BatchNormBuffersStayConsistentAcrossRanks) {
  // Training-mode BatchNorm normalises by per-rank batch statistics (as DDP), so only the ranks'
  // agreement is expected: rank 0's running statistics are broadcast every step (through shared
  // memory, and over Gloo).
  for (const std::string env : {"", "FRUGAL_DDP_SHM=0"}) {
    Dirs d(env.empty() ? "ddp_bn" : "ddp_bn_gloo");
    auto two = ft::run_worker(2,
                              {"--model", "bn", "--max-steps", "7", "--batch-size", "8", "--out",
                               d("two"), "--root", d.dir},
                              d("two.log"), env);
    ASSERT_EQ(two.exit_code, 0) << two.log;
    EXPECT_EQ(
        ft::max_relative_difference(ft::load_state(d("two.rank0")), ft::load_state(d("two.rank1"))),
        0.0)
        << env;
  }
}

TEST(DdpEquivalence, UnusedParameterIsAClearErrorOnEveryRank) {
  Dirs d("ddp_unused");
  auto r = ft::run_worker(2, {"--model", "unused", "--max-steps", "3", "--root", d.dir},
                          d("unused.log"));
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_NE(r.log.find("unused.weight"), std::string::npos) << r.log;
  EXPECT_NE(r.log.find("FRUGAL_DDP_FIND_UNUSED_PARAMETERS"), std::string::npos) << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;

  auto ok = ft::run_worker(
      2, {"--model", "unused", "--max-steps", "3", "--out", d("found"), "--root", d.dir},
      d("found.log"), "FRUGAL_DDP_FIND_UNUSED_PARAMETERS=1");
  ASSERT_EQ(ok.exit_code, 0) << ok.log;
  EXPECT_EQ(ft::max_relative_difference(ft::load_state(d("found.rank0")),
                                        ft::load_state(d("found.rank1"))),
            0.0);
}

TEST(DdpEquivalence, EvaluationCountsEverySampleExactlyOnce) {
  // 203 samples, batches of 16: uneven shards (102 + 101) and short last batches. Each rank
  // builds other weights (seeded by rank), so validate() outside fit must broadcast rank 0's.
  Dirs d("ddp_eval");
  const std::vector<std::string> args = {"--mode",       "eval", "--samples", "203",
                                         "--batch-size", "16",   "--root",    d.dir};
  auto two = ft::run_worker(2, with(args, {"--out", d("two")}), d("two.log"));
  ASSERT_EQ(two.exit_code, 0) << two.log;
  auto one = ft::run_worker(0, with(args, {"--out", d("one")}), d("one.log"));
  ASSERT_EQ(one.exit_code, 0) << one.log;
  auto ref = ft::load_metrics(d("one.rank0.metrics"));
  for (const char* rank : {"two.rank0.metrics", "two.rank1.metrics"}) {
    auto m = ft::load_metrics(d(rank));
    EXPECT_EQ(m["val/count"], 203) << rank;
    EXPECT_EQ(m["val/correct"], ref["val/correct"]) << rank;
    EXPECT_NEAR(m["val/acc"], ref["val/acc"], 1e-6) << rank;
    EXPECT_NEAR(m["val/acc"], ref["val/correct"] / 203.0, 1e-6) << rank;
    EXPECT_NEAR(m["val/loss"], ref["val/loss"], 1e-6 * std::abs(ref["val/loss"])) << rank;
  }
}

TEST(DdpEquivalence, CheckpointFromTwoRanksResumesOnOneAndBack) {
  Dirs d("ddp_resume");
  const std::vector<std::string> base = {"--model", "mlp", "--root", d.dir};
  // Reference: one process, batch 16, 10 steps (6 batches per epoch: the save is mid-epoch).
  auto ref = ft::run_worker(
      0, with(base, {"--batch-size", "16", "--max-steps", "10", "--out", d("ref")}), d("ref.log"));
  ASSERT_EQ(ref.exit_code, 0) << ref.log;
  const auto expected = ft::load_state(d("ref.rank0"));

  // Trains 4 steps on `first` ranks, saves, resumes on `then` ranks to step 10 (same global batch
  // 16) and compares every rank's state with the reference.
  auto resume_across = [&](int first, int then, const std::string& tag) {
    auto batch = [](int ranks) { return std::to_string(ranks == 2 ? 8 : 16); };
    const std::string ckpt = d(tag + ".ckpt");
    auto a = ft::run_worker(
        first, with(base, {"--batch-size", batch(first), "--max-steps", "4", "--save", ckpt}),
        d(tag + "_a.log"));
    ASSERT_EQ(a.exit_code, 0) << a.log;
    auto b = ft::run_worker(then,
                            with(base, {"--batch-size", batch(then), "--max-steps", "10",
                                        "--resume", ckpt, "--out", d(tag)}),
                            d(tag + "_b.log"));
    ASSERT_EQ(b.exit_code, 0) << b.log;
    for (int r = 0; r < std::max(then, 1); ++r) {
      EXPECT_LE(ft::max_relative_difference(ft::load_state(d(tag + ".rank" + std::to_string(r))),
                                            expected),
                1e-6)
          << tag << " rank " << r;
    }
  };
  resume_across(2, 0, "two_to_one");  // 2 ranks x 8, then 1 process x 16
  resume_across(0, 2, "one_to_two");  // 1 process x 16, then 2 ranks x 8
}

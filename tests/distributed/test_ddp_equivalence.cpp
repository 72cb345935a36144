// Data-parallel training over real processes (127.0.0.1) against one process: N ranks with batch
// b give the parameters of 1 process with batch N·b (to 1e-6 relative), through shared memory and
// over Gloo, with and without gradient accumulation, several gradient buckets, frozen parameters,
// BatchNorm, 3 ranks; unused parameters are a clear error; checkpoints move between 2 ranks and 1.
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

/// After `nproc` ranks with batch b wrote d("multi.rank<r>") (their log in `log`): trains one
/// process with batch nproc x b on the same arguments, and expects every rank to hold rank 0's
/// parameters exactly, and rank 0 those of the one process (to 1e-6 relative), after as many steps.
void expect_ranks_equal_one(const Dirs& d, int nproc, const std::vector<std::string>& common,
                            int64_t b, const std::string& env, const std::string& transport,
                            const std::string& log) {
  EXPECT_NE(log.find("gradients " + transport), std::string::npos) << log;
  auto one = ft::run_worker(
      0,
      with(common, {"--batch-size", std::to_string(nproc * b), "--out", d("one"), "--root", d.dir}),
      d("one.log"), env);
  ASSERT_EQ(one.exit_code, 0) << one.log;
  auto r0 = ft::load_state(d("multi.rank0"));
  for (int r = 1; r < nproc; ++r) {
    EXPECT_EQ(ft::max_relative_difference(r0, ft::load_state(d("multi.rank" + std::to_string(r)))),
              0.0)
        << "rank " << r << " disagrees with rank 0";
  }
  const double diff = ft::max_relative_difference(r0, ft::load_state(d("one.rank0")));
  EXPECT_LE(diff, 1e-6) << nproc << " ranks x " << b << " vs 1 x " << nproc * b;
  // As many steps (the parameters moved: the runs are not compared at their start).
  EXPECT_EQ(ft::load_metrics(d("multi.rank0.metrics"))["global_step"],
            ft::load_metrics(d("one.rank0.metrics"))["global_step"]);
  std::cout << d.dir << ": max relative difference " << diff << "\n";
}

/// Trains on `nproc` ranks (frugal-launch) with batch b and on 1 process with nproc x b. Ranks on
/// one machine sum through shared memory unless the environment says FRUGAL_DDP_SHM=0.
void expect_ranks_equal_one(const std::string& name, const std::vector<std::string>& common,
                            int64_t b, const std::string& env = "", int nproc = 2) {
  Dirs d(name);
  auto multi = ft::run_worker(
      nproc,
      with(common, {"--batch-size", std::to_string(b), "--out", d("multi"), "--root", d.dir}),
      d("multi.log"), env);
  ASSERT_EQ(multi.exit_code, 0) << multi.log;
  const bool gloo = env.find("FRUGAL_DDP_SHM=0") != std::string::npos;
  expect_ranks_equal_one(d, nproc, common, b, env, gloo ? "over Gloo" : "through shared memory",
                         multi.log);
}

}  // namespace

TEST(DdpEquivalence, TwoRanksEqualOneProcessWithDoubleBatch) {
  expect_ranks_equal_one("ddp_plain", {"--model", "mlp", "--max-steps", "10"}, 8);
}

TEST(DdpEquivalence, TwoRanksEqualOneProcessOverGloo) {
  expect_ranks_equal_one("ddp_plain_gloo", {"--model", "mlp", "--max-steps", "10"}, 8,
                         "FRUGAL_DDP_SHM=0");
}

TEST(DdpEquivalence, ThreeRanksEqualOneProcessWithTripleBatch) {
  // Three ranks on two cores: the shared-memory sum splits each bucket three ways.
  expect_ranks_equal_one("ddp_three", {"--model", "mlp", "--max-steps", "8"}, 4, "", 3);
}

TEST(DdpEquivalence, RanksThatDisagreeOnSharedMemoryAllUseGloo) {
  // Rank 1 turns shared memory off, rank 0 does not: both must pick Gloo (not wait for each
  // other), and train as one process would.
  Dirs d("ddp_mixed_transport");
  const std::vector<std::string> common = {"--model", "mlp", "--max-steps", "10"};
  auto two = ft::run_two_ranks_by_hand(
      d.dir, 60, with(common, {"--batch-size", "8", "--out", d("multi"), "--root", d.dir}),
      "wait $p; exit $rc", {"FRUGAL_DDP_SHM=1", "FRUGAL_DDP_SHM=0"});
  ASSERT_EQ(two.exit_code, 0) << two.log;
  expect_ranks_equal_one(d, 2, common, 8, "", "over Gloo", two.log);
}

TEST(DdpEquivalence, WithGradientAccumulationAndSmallBuckets) {
  // ~1 KB buckets: the MLP's gradients travel in several all-reduces.
  expect_ranks_equal_one("ddp_accum", {"--model", "mlp", "--max-steps", "6", "--accumulate", "3"},
                         4, "FRUGAL_DDP_BUCKET_MB=0.001");
}

TEST(DdpEquivalence, WithGradientAccumulationAndSmallBucketsOverGloo) {
  // Over Gloo the buckets are launched from the autograd hooks, during backward.
  expect_ranks_equal_one("ddp_accum_gloo",
                         {"--model", "mlp", "--max-steps", "6", "--accumulate", "3"}, 4,
                         "FRUGAL_DDP_BUCKET_MB=0.001 FRUGAL_DDP_SHM=0");
}

TEST(DdpEquivalence, FrozenParametersAreSkipped) {
  expect_ranks_equal_one("ddp_frozen", {"--model", "frozen", "--max-steps", "6"}, 8,
                         "FRUGAL_DDP_BUCKET_MB=0.001");
}

TEST(DdpEquivalence, BatchNormInEvalConsistentForm) {
  expect_ranks_equal_one("ddp_bn_eval", {"--model", "bn-eval", "--max-steps", "8"}, 8);
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

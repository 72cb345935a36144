// Decisions every rank must take together, asked for on one rank only: a stop request (in a
// training step's hooks or in a validation), a signal (checkpoint and stop), a non-finite loss
// under NanLossPolicy::kSkip. They travel with the
// step's gradients (Note [Step decisions travel with the gradients] in src/trainer.cpp): no rank
// waits for another, and the ranks end with equal parameters at the same step.
#include <filesystem>

#include "ddp_test_support.h"

namespace ft = frugal::testing;

namespace {

struct TwoRanks {
  std::map<std::string, double> m0, m1;
  double rank_difference = -1;  // max relative difference of the ranks' parameters
};

TwoRanks run_two(const std::string& dir, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--max-steps", "10", "--out", dir + "/p", "--root", dir};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = ft::run_worker(2, args, dir + "/run.log");
  EXPECT_EQ(r.exit_code, 0) << r.log;
  TwoRanks run;
  if (r.exit_code != 0) return run;
  run.m0 = ft::load_metrics(dir + "/p.rank0.metrics");
  run.m1 = ft::load_metrics(dir + "/p.rank1.metrics");
  run.rank_difference = ft::max_relative_difference(ft::load_state(dir + "/p.rank0"),
                                                    ft::load_state(dir + "/p.rank1"));
  return run;
}

}  // namespace

TEST(DdpDecisions, StopOnOneRankStopsEveryRankOneStepLater) {
  // Rank 1 asks to stop in on_train_batch_end of step 3: the request rides with step 4's
  // gradients, so both ranks stop after step 4 (one process stops after step 3).
  const std::string dir = ft::temp_dir("ddp_stop_one_rank");
  TwoRanks two = run_two(dir, {"--stop-rank", "1", "--stop-step", "3"});
  EXPECT_EQ(two.m0["global_step"], 4);
  EXPECT_EQ(two.m1["global_step"], 4);
  EXPECT_EQ(two.rank_difference, 0.0);

  auto one = ft::run_worker(0,
                            {"--max-steps", "10", "--stop-rank", "0", "--stop-step", "3", "--out",
                             dir + "/single", "--root", dir},
                            dir + "/single.log");
  ASSERT_EQ(one.exit_code, 0) << one.log;
  EXPECT_EQ(ft::load_metrics(dir + "/single.rank0.metrics")["global_step"], 3);
}

TEST(DdpDecisions, StopAskedByOneRanksValidationStopsEveryRankRightAway) {
  // Validation every 2 batches; rank 1's validation at step 4 asks to stop (as an EarlyStopping
  // deciding on unsynced metrics might): every rank stops right there, as one process does.
  const std::string dir = ft::temp_dir("ddp_val_stop_one_rank");
  TwoRanks two = run_two(dir, {"--val-every", "2", "--val-stop-rank", "1", "--val-stop-step", "4"});
  EXPECT_EQ(two.m0["global_step"], 4);
  EXPECT_EQ(two.m1["global_step"], 4);
  EXPECT_EQ(two.rank_difference, 0.0);

  auto one = ft::run_worker(0,
                            {"--max-steps", "10", "--val-every", "2", "--val-stop-rank", "0",
                             "--val-stop-step", "4", "--out", dir + "/single", "--root", dir},
                            dir + "/single.log");
  ASSERT_EQ(one.exit_code, 0) << one.log;
  EXPECT_EQ(ft::load_metrics(dir + "/single.rank0.metrics")["global_step"], 4);
}

TEST(DdpDecisions, SignalOnOneRankCheckpointsAndStopsEveryRank) {
  // SIGTERM reaches rank 1 only (at the end of step 3): every rank stops after step 4, rank 0
  // saves last.ckpt, and both report the preemption (rank 0: "another rank received a signal").
  const std::string dir = ft::temp_dir("ddp_signal_one_rank");
  TwoRanks two = run_two(dir, {"--signal-rank", "1", "--signal-step", "3"});
  EXPECT_EQ(two.m0["global_step"], 4);
  EXPECT_EQ(two.m1["global_step"], 4);
  EXPECT_EQ(two.m0["preempted"], 1);
  EXPECT_EQ(two.m1["preempted"], 1);
  EXPECT_EQ(two.rank_difference, 0.0);
  EXPECT_TRUE(std::filesystem::exists(dir + "/checkpoints/last.ckpt"));
}

TEST(DdpDecisions, NonFiniteLossOnOneRankSkipsTheStepOnEveryRank) {
  // kSkip: rank 1's loss is NaN in step 2; both ranks skip that step (the skip vote is current:
  // it rides with the same step's gradients) and keep finite, equal parameters.
  const std::string dir = ft::temp_dir("ddp_nan_one_rank");
  TwoRanks two = run_two(dir, {"--nan-loss", "skip", "--nan-rank", "1", "--nan-step", "2"});
  EXPECT_EQ(two.m0["skipped_steps"], 1);
  EXPECT_EQ(two.m1["skipped_steps"], 1);
  EXPECT_EQ(two.m0["global_step"], 10);
  EXPECT_EQ(two.rank_difference, 0.0);
  for (const auto& t : ft::load_state(dir + "/p.rank0")) {
    EXPECT_TRUE(t.isfinite().all().item<bool>());
  }
}

// A rank that dies or hangs ends the run with an error in bounded time, never a hang; the
// launcher returns non-zero.
#include "ddp_test_support.h"

namespace ft = frugal::testing;

TEST(DdpFailure, KilledRankStopsTheRunAndTheLauncherFails) {
  const std::string dir = ft::temp_dir("ddp_killed");
  auto r = ft::run_worker(2,
                          {"--samples", "4096", "--max-steps", "100000", "--kill-rank", "1",
                           "--kill-step", "3", "--root", dir},
                          dir + "/run.log", "FRUGAL_DDP_TIMEOUT_SECONDS=20");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
  EXPECT_NE(r.log.find("rank 1"), std::string::npos) << r.log;
}

/// Two ranks started by hand, without a launcher: rank 1 in the background (its pid in $p), rank 0
/// in the foreground with `sabotage` arguments for both; `after_rank0` runs when rank 0 ends and
/// must exit with rank 0's code ($rc). Rank 0 has to notice the sabotaged rank by itself.
ft::RunResult run_two_ranks_by_hand(const std::string& dir, int timeout_seconds,
                                    const std::vector<std::string>& sabotage,
                                    const std::string& after_rank0) {
  const std::string common = "env FRUGAL_DDP_TIMEOUT_SECONDS=" + std::to_string(timeout_seconds) +
                             " WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                             std::to_string(ft::free_port()) + " ";
  std::vector<std::string> args = {"--samples", "4096", "--max-steps", "100000", "--root", dir};
  args.insert(args.end(), sabotage.begin(), sabotage.end());
  const std::string worker = ft::shell_quote(FRUGAL_DDP_WORKER) + ft::join_args(args);
  return ft::run_shell(
      "timeout 120 sh -c " +
          ft::shell_quote(common + "RANK=1 LOCAL_RANK=1 " + worker + " & p=$!; " + common +
                          "RANK=0 LOCAL_RANK=0 " + worker + "; rc=$?; " + after_rank0),
      dir + "/run.log");
}

TEST(DdpFailure, SurvivorOfAKilledRankFailsWithAClearError) {
  // Rank 1 dies by SIGKILL at step 3.
  const std::string dir = ft::temp_dir("ddp_killed_nolauncher");
  auto r =
      run_two_ranks_by_hand(dir, 20, {"--kill-rank", "1", "--kill-step", "3"}, "wait; exit $rc");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
  EXPECT_NE(r.log.find("data parallel"), std::string::npos) << r.log;
}

TEST(DdpFailure, HungRankMakesTheOthersFailWithinTheTimeout) {
  // Rank 1 hangs forever at step 3; rank 0 must fail on its own, then the script kills rank 1.
  const std::string dir = ft::temp_dir("ddp_hung");
  auto r = run_two_ranks_by_hand(dir, 10, {"--hang-rank", "1", "--hang-step", "3"},
                                 "kill -9 $p; exit $rc");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
  EXPECT_NE(r.log.find("data parallel"), std::string::npos) << r.log;
}

TEST(DdpFailure, LauncherForwardsSigtermAndReturnsNonZero) {
  const std::string dir = ft::temp_dir("ddp_sigterm");
  const std::string cmd =
      "env FRUGAL_DDP_TIMEOUT_SECONDS=20 " + ft::shell_quote(FRUGAL_LAUNCH) +
      " --master-port 0 --nproc-per-node 2 -- " + ft::shell_quote(FRUGAL_DDP_WORKER) +
      ft::join_args({"--samples", "4096", "--max-steps", "100000", "--root", dir});
  auto r = ft::run_shell(
      "timeout 120 sh -c " + ft::shell_quote(cmd + " & p=$!; sleep 6; kill -TERM $p; wait $p"),
      dir + "/run.log");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
}

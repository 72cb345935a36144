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

/// A long run's arguments with `sabotage` for both ranks.
std::vector<std::string> sabotaged(const std::string& dir,
                                   const std::vector<std::string>& sabotage) {
  std::vector<std::string> args = {"--samples", "4096", "--max-steps", "100000", "--root", dir};
  args.insert(args.end(), sabotage.begin(), sabotage.end());
  return args;
}

TEST(DdpFailure, SurvivorOfAKilledRankFailsWithAClearError) {
  // Rank 1 dies by SIGKILL at step 3.
  const std::string dir = ft::temp_dir("ddp_killed_nolauncher");
  auto r = ft::run_two_ranks_by_hand(
      dir, 20, sabotaged(dir, {"--kill-rank", "1", "--kill-step", "3"}), "wait; exit $rc");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
  EXPECT_NE(r.log.find("data parallel"), std::string::npos) << r.log;
}

TEST(DdpFailure, HungRankMakesTheOthersFailWithinTheTimeout) {
  // Rank 1 hangs forever at step 3; rank 0 must fail on its own, then the script kills rank 1.
  const std::string dir = ft::temp_dir("ddp_hung");
  auto r = ft::run_two_ranks_by_hand(
      dir, 10, sabotaged(dir, {"--hang-rank", "1", "--hang-step", "3"}), "kill -9 $p; exit $rc");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
  EXPECT_NE(r.log.find("data parallel"), std::string::npos) << r.log;
}

TEST(DdpFailure, LauncherForwardsSigtermAndReturnsNonZero) {
  const std::string dir = ft::temp_dir("ddp_sigterm");
  const std::string cmd =
      ft::worker_command(2, {"--samples", "4096", "--max-steps", "100000", "--root", dir},
                         "FRUGAL_DDP_TIMEOUT_SECONDS=20");
  auto r = ft::run_shell(
      "timeout 120 sh -c " + ft::shell_quote(cmd + " & p=$!; sleep 6; kill -TERM $p; wait $p"),
      dir + "/run.log");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
}

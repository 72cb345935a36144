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

TEST(DdpFailure, SurvivorOfAKilledRankFailsWithAClearError) {
  // Without the launcher: rank 1 dies by SIGKILL, rank 0 must notice by itself.
  const std::string dir = ft::temp_dir("ddp_killed_nolauncher");
  const int port = ft::free_port();
  const std::string common =
      "env FRUGAL_DDP_TIMEOUT_SECONDS=20 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 "
      "MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
      std::to_string(port) + " ";
  const std::string args = ft::join_args({"--samples", "4096", "--max-steps", "100000",
                                          "--kill-rank", "1", "--kill-step", "3", "--root", dir});
  const std::string worker = ft::shell_quote(FRUGAL_DDP_WORKER);
  auto r = ft::run_shell(
      "timeout 120 sh -c " +
          ft::shell_quote(common + "RANK=1 LOCAL_RANK=1 " + worker + args + " & " + common +
                          "RANK=0 LOCAL_RANK=0 " + worker + args + "; rc=$?; wait; exit $rc"),
      dir + "/run.log");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
  EXPECT_NE(r.log.find("data parallel"), std::string::npos) << r.log;
}

TEST(DdpFailure, HungRankMakesTheOthersFailWithinTheTimeout) {
  const std::string dir = ft::temp_dir("ddp_hung");
  const int port = ft::free_port();
  const std::string common =
      "env FRUGAL_DDP_TIMEOUT_SECONDS=10 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 "
      "MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
      std::to_string(port) + " ";
  const std::string args = ft::join_args({"--samples", "4096", "--max-steps", "100000",
                                          "--hang-rank", "1", "--hang-step", "3", "--root", dir});
  const std::string worker = ft::shell_quote(FRUGAL_DDP_WORKER);
  // Rank 1 hangs forever; rank 0 must fail on its own, then the script kills rank 1.
  auto r = ft::run_shell(
      "timeout 120 sh -c " +
          ft::shell_quote(common + "RANK=1 LOCAL_RANK=1 " + worker + args + " & p=$!; " + common +
                          "RANK=0 LOCAL_RANK=0 " + worker + args + "; rc=$?; kill -9 $p; exit $rc"),
      dir + "/run.log");
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

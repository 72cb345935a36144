// Faults that must lose nothing, with real processes on 127.0.0.1 (docs/reliability.md): a rank
// SIGKILLed inside the backward pass while the gradient all-reduce runs (shared memory and Gloo)
// and while a checkpoint is written; then the run resumed from its last checkpoint on fewer
// ranks. SIGTERM to frugal-launch and to torchrun: every rank saves last.ckpt at the same step
// and exits 0; a second SIGTERM during that save never leaves a damaged last.ckpt.
#include <filesystem>
#include <regex>

#include "ddp_test_support.h"
#include "io/checkpoint_io.h"

namespace fs = std::filesystem;
namespace ft = frugal::testing;

namespace {

std::string pid_of(const std::string& dir, int rank) {
  std::ifstream in(dir + "/pid.rank" + std::to_string(rank));
  std::string pid;
  in >> pid;
  return pid;
}

/// /dev/shm entries of the job whose rank 0 had `pid0` (ShmAllReduce: /frugal-<pid>-<random>).
std::vector<std::string> shm_segments(const std::string& pid0) {
  std::vector<std::string> found;
  if (pid0.empty() || !fs::exists("/dev/shm")) return found;
  for (const auto& e : fs::directory_iterator("/dev/shm")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("frugal-" + pid0 + "-", 0) == 0) found.push_back(name);
  }
  return found;
}

/// Whether the checkpoint at `path` passes its checksum and opens (LibTorch's archive).
std::string checkpoint_problem(const std::string& path) {
  return ft::error_message(
      [&] { frugal::detail::open_checkpoint(path, c10::Device(c10::kCPU), /*verify=*/true); });
}

std::vector<std::string> long_run(const std::string& dir, std::vector<std::string> extra) {
  std::vector<std::string> args = {"--samples", "4096", "--max-steps", "100000", "--root", dir};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

void killed_in_backward(bool shared_memory) {
  const std::string dir =
      ft::temp_dir(shared_memory ? "ddp_fault_backward_shm" : "ddp_fault_backward_gloo");
  const std::string env =
      std::string("FRUGAL_DDP_TIMEOUT_SECONDS=20 FRUGAL_DDP_SHM=") + (shared_memory ? "1" : "0");
  auto r =
      ft::run_worker(2, long_run(dir, {"--backward-kill-rank", "1", "--backward-kill-step", "3"}),
                     dir + "/run.log", env);
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
  const std::string pid0 = pid_of(dir, 0), pid1 = pid_of(dir, 1);
  ASSERT_FALSE(pid1.empty()) << r.log;
  EXPECT_NE(r.log.find("frugal-launch: rank 1 (pid " + pid1 + ") was killed by signal 9"),
            std::string::npos)
      << r.log;
  // The survivor's own error names the dead rank and its pid.
  const std::regex survivor(
      "frugal: rank 0: fit failed: data parallel: the gradient all-reduce "
      "failed on rank 0 of 2.*rank 1 \\(pid " +
      pid1 + "\\) has exited");
  EXPECT_TRUE(std::regex_search(r.log, survivor)) << r.log;
  EXPECT_TRUE(shm_segments(pid0).empty());
}

}  // namespace

TEST(DdpFaults, RankKilledDuringSharedMemoryAllReduce) { killed_in_backward(true); }

TEST(DdpFaults, RankKilledDuringGlooAllReduce) { killed_in_backward(false); }

TEST(DdpFaults, RankKilledWhileSavingThenResumedOnFewerRanks) {
  // Checkpoints every 2 steps; rank 0 dies while writing the one of step 6. What is on disk is
  // the checkpoints of steps 2 and 4, whole, and nothing half-written under a final name.
  const std::string dir = ft::temp_dir("ddp_fault_save");
  auto r = ft::run_worker(
      2, long_run(dir, {"--ckpt-every", "2", "--save-kill-rank", "0", "--save-kill-step", "6"}),
      dir + "/run.log", "FRUGAL_DDP_TIMEOUT_SECONDS=20");
  EXPECT_NE(r.exit_code, 0) << r.log;
  EXPECT_LT(r.seconds, 60) << r.log;
  const std::string pid0 = pid_of(dir, 0);
  EXPECT_NE(r.log.find("frugal-launch: rank 0 (pid " + pid0 + ") was killed by signal 9"),
            std::string::npos)
      << r.log;
  // The survivor, waiting for rank 0 at the save's barrier, names it.
  EXPECT_TRUE(std::regex_search(
      r.log, std::regex("frugal: rank 1: fit failed: data parallel: .*rank 0 \\(pid " + pid0 +
                        "\\) has exited")))
      << r.log;
  std::vector<std::string> finals;
  for (const auto& e : fs::directory_iterator(dir + "/ckpts")) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() != ".ckpt") continue;  // temporary files of the interrupted save
    finals.push_back(name);
    EXPECT_EQ(checkpoint_problem(e.path().string()), "no error") << name;
  }
  std::sort(finals.begin(), finals.end());
  ASSERT_EQ(finals.size(), 3u) << r.log;  // step 2, step 4, last.ckpt (= step 4)
  EXPECT_EQ(finals.back(), "last.ckpt");
  EXPECT_TRUE(shm_segments(pid0).empty());

  // Resumed from last.ckpt as one process: continues at step 4 and ends at max_steps.
  const std::string again = ft::temp_dir("ddp_fault_save_resume");
  auto one = ft::run_worker(0,
                            {"--samples", "4096", "--max-steps", "10", "--root", again, "--resume",
                             dir + "/ckpts/last.ckpt", "--out", again + "/p"},
                            again + "/run.log");
  ASSERT_EQ(one.exit_code, 0) << one.log;
  EXPECT_EQ(ft::load_metrics(again + "/p.rank0.metrics")["global_step"], 10) << one.log;
}

namespace {

/// Starts `command` in the background, sends SIGTERM to it after `seconds` (and again
/// `second_after` seconds later when >= 0), and waits for it.
ft::RunResult terminate_after(const std::string& command, double seconds, double second_after,
                              const std::string& log) {
  std::string script = command + " & p=$!; sleep " + std::to_string(seconds) + "; kill -TERM $p; ";
  if (second_after >= 0) script += "sleep " + std::to_string(second_after) + "; kill -TERM $p; ";
  script += "wait $p";
  return ft::run_shell("timeout 120 sh -c " + ft::shell_quote(script), log);
}

std::string launcher(const std::string& dir, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = long_run(dir, extra);
  args.insert(args.end(), {"--out", dir + "/p"});
  return ft::worker_command(2, args, "FRUGAL_DDP_TIMEOUT_SECONDS=20");
}

/// Both ranks stopped by the signal at the same step, said why, and rank 0 wrote a whole
/// last.ckpt of that step.
void expect_clean_preemption(const std::string& dir, const ft::RunResult& r) {
  const auto m0 = ft::load_metrics(dir + "/p.rank0.metrics");
  const auto m1 = ft::load_metrics(dir + "/p.rank1.metrics");
  ASSERT_EQ(m0.count("preempted"), 1u) << r.log;
  ASSERT_EQ(m1.count("preempted"), 1u) << r.log;
  EXPECT_EQ(m0.at("preempted"), 1) << r.log;
  EXPECT_EQ(m1.at("preempted"), 1) << r.log;
  EXPECT_EQ(m0.at("global_step"), m1.at("global_step"));
  EXPECT_GT(m0.at("global_step"), 0);
  const std::string last = dir + "/checkpoints/last.ckpt";
  EXPECT_EQ(checkpoint_problem(last), "no error");
  EXPECT_NE(
      r.log.find("received SIGTERM at global step " +
                 std::to_string(static_cast<int64_t>(m0.at("global_step"))) + "; saved checkpoint"),
      std::string::npos)
      << r.log;
}

}  // namespace

TEST(DdpFaults, SigtermToTheLauncherSavesLastAndEveryRankExitsZero) {
  const std::string dir = ft::temp_dir("ddp_fault_sigterm_launcher");
  auto r = terminate_after(launcher(dir), 6, -1, dir + "/run.log");
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.log;  // the launcher: stopped by a signal
  for (int rank : {0, 1}) {
    EXPECT_NE(r.log.find("frugal-launch: rank " + std::to_string(rank) + " (pid " +
                         pid_of(dir, rank) + ") exited with code 0 after the forwarded signal"),
              std::string::npos)
        << r.log;
  }
  expect_clean_preemption(dir, r);
}

TEST(DdpFaults, SigtermToTorchrunSavesLastAndEveryRankExitsZero) {
  const char* torchrun = "/usr/bin/torchrun";
  if (!fs::exists(torchrun)) GTEST_SKIP() << "no " << torchrun << " (Debian's python3-torch)";
  const std::string dir = ft::temp_dir("ddp_fault_sigterm_torchrun");
  const std::string cmd = ft::torchrun_command(torchrun, 20) + ft::shell_quote(FRUGAL_DDP_WORKER) +
                          ft::join_args(long_run(dir, {"--out", dir + "/p"}));
  auto r = terminate_after(cmd, 10, -1, dir + "/run.log");
  EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
  expect_clean_preemption(dir, r);
}

TEST(DdpFaults, SecondSigtermDuringTheSaveLeavesNoDamagedCheckpoint) {
  // The launcher turns a second SIGTERM into SIGKILL: whatever moment it lands, last.ckpt is the
  // earlier one or the new one, whole (the file is renamed into place only once written).
  for (double gap : {0.0, 0.05, 0.2}) {
    const std::string dir = ft::temp_dir("ddp_fault_sigterm_twice");
    auto r = terminate_after(launcher(dir, {"--ckpt-every", "2"}), 6, gap, dir + "/run.log");
    EXPECT_NE(r.exit_code, 124) << "timed out: " << r.log;
    for (const std::string& name :
         {std::string("/ckpts/last.ckpt"), std::string("/checkpoints/last.ckpt")}) {
      if (fs::exists(dir + name)) EXPECT_EQ(checkpoint_problem(dir + name), "no error") << gap;
    }
    EXPECT_TRUE(fs::exists(dir + "/ckpts/last.ckpt")) << r.log;
  }
}

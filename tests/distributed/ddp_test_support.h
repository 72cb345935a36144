// Helpers for the data-parallel tests: run the test worker (tools/ddp_worker.cpp) as one process
// or as two ranks under frugal-launch on 127.0.0.1, and compare what the runs wrote.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"

namespace frugal::testing {

struct RunResult {
  int exit_code = -1;
  double seconds = 0;
  std::string log;
};

/// Runs a shell command line, output to `log`; exit code and wall time.
inline RunResult run_shell(const std::string& command, const std::string& log) {
  const auto start = std::chrono::steady_clock::now();
  const int status = std::system((command + " > " + shell_quote(log) + " 2>&1").c_str());
  RunResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.log = read_text(log);
  return r;
}

inline std::string join_args(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += " " + shell_quote(a);
  return s;
}

/// The command line of the worker on `nproc` ranks (frugal-launch, a free port) or as one plain
/// process (nproc 0); `env` (assignments) after the defaults, so it overrides them.
inline std::string worker_command(int nproc, const std::vector<std::string>& args,
                                  const std::string& env = "") {
  std::string cmd =
      "env -u RANK -u WORLD_SIZE -u LOCAL_RANK -u LOCAL_WORLD_SIZE -u SLURM_NTASKS "
      "FRUGAL_DDP_TIMEOUT_SECONDS=60 " +
      env + " ";
  if (nproc > 0) {
    cmd += shell_quote(FRUGAL_LAUNCH) + " --grace-seconds 3 --master-port 0 --nproc-per-node " +
           std::to_string(nproc) + " -- ";
  }
  return cmd + shell_quote(FRUGAL_DDP_WORKER) + join_args(args);
}

/// Debian's torchrun on two CPU ranks, ready for `--no_python PROGRAM ARGS`. Not `--standalone`:
/// torchrun 1.13 then always listens on port 29400, so two such runs at once (both builds'
/// suites, or two tests) meet at one rendezvous and one of them fails. The rendezvous here is a
/// free port on 127.0.0.1. `-r 1 -t 1` is what torchrun 1.13 on Python 3.11 needs to start
/// (docs/distributed.md).
inline std::string torchrun_command(const std::string& torchrun, int timeout_seconds) {
  const std::string port = std::to_string(free_port());
  return "env -u RANK -u WORLD_SIZE -u MASTER_PORT FRUGAL_DDP_TIMEOUT_SECONDS=" +
         std::to_string(timeout_seconds) + " " + shell_quote(torchrun) +
         " --nnodes 1 --rdzv_backend c10d --rdzv_endpoint 127.0.0.1:" + port +
         " --rdzv_id frugal-" + port + " --nproc_per_node 2 -r 1 -t 1 --no_python ";
}

/// The worker run by worker_command, within 300 s.
inline RunResult run_worker(int nproc, const std::vector<std::string>& args, const std::string& log,
                            const std::string& env = "") {
  return run_shell("timeout 300 " + worker_command(nproc, args, env), log);
}

/// Two ranks started by hand, without a launcher: rank 1 in the background (its pid in $p), rank 0
/// in the foreground, both with `args` and each with its `rank_env` ("VAR=value ...");
/// `after_rank0` runs when rank 0 ends and must exit with rank 0's code ($rc). With no launcher to
/// stop the others, rank 0 has to notice a failed rank by itself.
inline RunResult run_two_ranks_by_hand(const std::string& dir, int timeout_seconds,
                                       const std::vector<std::string>& args,
                                       const std::string& after_rank0,
                                       const std::array<std::string, 2>& rank_env = {}) {
  const std::string common = "env FRUGAL_DDP_TIMEOUT_SECONDS=" + std::to_string(timeout_seconds) +
                             " WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                             std::to_string(free_port()) + " ";
  const std::string worker = shell_quote(FRUGAL_DDP_WORKER) + join_args(args);
  return run_shell("timeout 120 sh -c " +
                       shell_quote(common + rank_env[1] + " RANK=1 LOCAL_RANK=1 " + worker +
                                   " & p=$!; " + common + rank_env[0] + " RANK=0 LOCAL_RANK=0 " +
                                   worker + "; rc=$?; " + after_rank0),
                   dir + "/run.log");
}

inline std::vector<at::Tensor> load_state(const std::string& path) {
  std::vector<at::Tensor> state;
  torch::load(state, path);
  return state;
}

inline std::map<std::string, double> load_metrics(const std::string& path) {
  std::map<std::string, double> m;
  std::ifstream in(path);
  std::string k;
  double v;
  while (in >> k >> v) m[k] = v;
  return m;
}

/// Largest |a - b| over largest |b|, over all tensors (0 when equal).
inline double max_relative_difference(const std::vector<at::Tensor>& a,
                                      const std::vector<at::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    EXPECT_EQ(a[i].sizes(), b[i].sizes()) << "tensor " << i;
    if (a[i].sizes() != b[i].sizes()) return 1e9;
    const double diff = (a[i].to(at::kDouble) - b[i].to(at::kDouble)).abs().max().item<double>();
    const double scale = std::max(b[i].to(at::kDouble).abs().max().item<double>(), 1e-12);
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

}  // namespace frugal::testing

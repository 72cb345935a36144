// frugal-launch: starts one process per device with torchrun's environment contract, for
// machines without Python.
//
//   frugal-launch --nproc-per-node 2 -- ./train --max-epochs 5
//   frugal-launch --nnodes 2 --node-rank 0 --master-addr node0 --master-port 29500 \
//       --nproc-per-node 4 -- ./train
//
// Each process gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR,
// MASTER_PORT. Unlike torchrun it does not set OMP_NUM_THREADS=1: frugal's ranks divide the CPUs
// they may run on among themselves (LOCAL_WORLD_SIZE; docs/guide.md, CPU threads). SIGTERM, SIGINT
// and SIGHUP are forwarded to every process (a second one kills them); frugal's ranks then save
// last.ckpt and exit 0, each exit is reported, and the launcher returns 128 + the signal, as a
// shell does for a job it stopped. When a process fails (non-zero exit or killed by a signal),
// the others get SIGTERM and, after --grace-seconds, SIGKILL; the launcher then exits with the
// failed process's code (128 + signal for a signal), so it never returns 0 unless every process
// did.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "free_port.h"

namespace {

std::atomic<int> g_signal{0};
std::atomic<int> g_signal_count{0};
extern "C" void on_signal(int signo) {
  g_signal.store(signo);
  g_signal_count.fetch_add(1);
}

using frugal::tools::free_port;

struct Rank {
  pid_t pid = -1;
  int global_rank = 0;
  bool running = false;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"frugal-launch: start one training process per device (torchrun's environment)"};
  int nproc = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  double grace = 10.0;
  std::vector<std::string> command;
  app.add_option("--nproc-per-node,--nproc_per_node", nproc, "processes on this node")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--nnodes", nnodes, "machines in the job")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--node-rank,--node_rank", node_rank, "this machine's index, 0..nnodes-1")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--master-addr,--master_addr", master_addr, "address of node 0")
      ->capture_default_str();
  app.add_option("--master-port,--master_port", master_port,
                 "port of the rendezvous store on node 0 (0: a free port, single node only)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--grace-seconds", grace,
                 "after a failure, seconds between SIGTERM and SIGKILL to the other processes")
      ->capture_default_str();
  app.add_option("command", command, "the program and its arguments (after --)")->required();
  app.positionals_at_end();
  CLI11_PARSE(app, argc, argv);

  if (node_rank >= nnodes) {
    std::fprintf(stderr, "frugal-launch: --node-rank (%d) must be < --nnodes (%d)\n", node_rank,
                 nnodes);
    return 2;
  }
  if (master_port == 0) {
    if (nnodes > 1) {
      std::fprintf(stderr, "frugal-launch: --master-port 0 works on a single node only\n");
      return 2;
    }
    master_port = free_port();
    if (master_port <= 0) {
      std::fprintf(stderr, "frugal-launch: could not find a free port\n");
      return 2;
    }
  }

  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaction(s, &action, nullptr);

  const int world = nproc * nnodes;
  std::vector<Rank> ranks(static_cast<size_t>(nproc));
  std::vector<char*> args;
  for (auto& a : command) args.push_back(a.data());
  args.push_back(nullptr);
  for (int local = 0; local < nproc; ++local) {
    Rank& r = ranks[static_cast<size_t>(local)];
    r.global_rank = node_rank * nproc + local;
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("frugal-launch: fork");
      for (auto& other : ranks) {
        if (other.running) ::kill(-other.pid, SIGKILL);
      }
      return 1;
    }
    if (pid == 0) {
      ::setpgid(0, 0);  // its own group: signals reach it (and its children) only through us
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaction(s, &dfl, nullptr);
      ::setenv("RANK", std::to_string(r.global_rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("GROUP_RANK", std::to_string(node_rank).c_str(), 1);
      ::setenv("MASTER_ADDR", master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(master_port).c_str(), 1);
      ::setenv("TORCHELASTIC_USE_AGENT_STORE", "False", 1);
      ::setenv("TORCHELASTIC_RESTART_COUNT", "0", 1);
      ::execvp(args[0], args.data());
      std::fprintf(stderr, "frugal-launch: cannot run %s: %s\n", args[0], std::strerror(errno));
      ::_exit(127);
    }
    ::setpgid(pid, pid);
    r.pid = pid;
    r.running = true;
  }

  int exit_code = 0;
  bool stopping = false;  // a failure happened: the others are being stopped
  std::chrono::steady_clock::time_point kill_at{};
  int forwarded = 0;
  auto signal_all = [&](int signo) {
    for (auto& r : ranks) {
      if (r.running) ::kill(-r.pid, signo);
    }
  };
  for (;;) {
    // Forward signals we received (a second one escalates to SIGKILL).
    const int count = g_signal_count.load();
    if (count > forwarded) {
      const int signo = g_signal.load();
      signal_all(count >= 2 ? SIGKILL : signo);
      if (exit_code == 0) exit_code = 128 + signo;
      forwarded = count;
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (auto& r : ranks) {
        if (r.pid != pid) continue;
        r.running = false;
        int code = 0;
        if (WIFEXITED(status)) code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) code = 128 + WTERMSIG(status);
        // "rank 1 (pid 42) exited with code 0" / "... was killed by signal 9"
        auto report = [&](const char* then) {
          std::fprintf(stderr, "frugal-launch: rank %d (pid %d) %s %d%s\n", r.global_rank,
                       static_cast<int>(pid),
                       WIFSIGNALED(status) ? "was killed by signal" : "exited with code",
                       WIFSIGNALED(status) ? WTERMSIG(status) : code, then);
        };
        // After a forwarded SIGTERM each rank saves and stops: say how each ended.
        if (forwarded > 0 && !stopping) report(" after the forwarded signal");
        if (code != 0 && !stopping) {
          report("; stopping the other ranks");
          if (exit_code == 0) exit_code = code;
          stopping = true;
          signal_all(SIGTERM);
          kill_at = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(grace * 1000));
        }
      }
      continue;
    }
    bool any_running = false;
    for (const auto& r : ranks) any_running = any_running || r.running;
    if (!any_running) break;
    if (stopping && std::chrono::steady_clock::now() >= kill_at) {
      signal_all(SIGKILL);
      kill_at = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_code;
}

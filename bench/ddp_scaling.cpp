// Data-parallel scaling on CPU: the example CNN (models::SmallCnn) trained by frugal's Trainer,
// same global batch, measured in one run:
//   single   1 process x 1 thread, batch B
//   ddp      2 ranks x 1 thread (Gloo on 127.0.0.1), batch B/2 each, overlapped bucketed all-reduce
//   no-comm  2 independent processes x 1 thread, batch B/2 each (compute under the same
//            contention, no communication)
//   serial   as ddp, but every bucket sent after backward (FRUGAL_DDP_OVERLAP=0)
// Prints the scaling ratio ddp/single (target >= 1.8 on 2 cores) and the share of communication
// hidden behind backward: 1 - (t_ddp - t_nocomm) / (t_serial - t_nocomm).
//
//   build/bench/bench_ddp_scaling [--global-batch 64] [--steps 120] [--warmup 10] [--repeats 3]
#include <frugal/frugal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "free_port.h"

namespace {

using frugal::tools::free_port;

/// Wall time of the optimizer steps after the warm-up, and each step's duration (their spread is
/// what lockstep training pays for: every step waits for the slower rank).
struct StepTimer : frugal::Callback {
  int64_t warmup = 0;
  std::chrono::steady_clock::time_point start{};
  std::chrono::steady_clock::time_point last{};
  double seconds = 0;
  int64_t timed_steps = 0;
  std::vector<double> step_seconds;
  void on_train_batch_end(frugal::Trainer& trainer, frugal::Task&, const at::Tensor&,
                          const frugal::Batch&, int64_t) override {
    const int64_t step = trainer.state().global_step;
    const auto now = std::chrono::steady_clock::now();
    if (step == warmup) start = now;
    if (step > warmup) {
      seconds = std::chrono::duration<double>(now - start).count();
      timed_steps = step - warmup;
      step_seconds.push_back(std::chrono::duration<double>(now - last).count());
    }
    last = now;
  }
  /// The q-quantile of the step durations (q in [0, 1]).
  double quantile(double q) const {
    if (step_seconds.empty()) return 0;
    std::vector<double> sorted = step_seconds;
    std::sort(sorted.begin(), sorted.end());
    return sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1))];
  }
};

/// One training process; writes "<mean seconds per step> <median> <90th percentile>" to `out`.
int worker(int64_t batch, int64_t steps, int64_t warmup, const std::string& out) {
  torch::set_num_threads(1);
  torch::manual_seed(0);
  const int64_t n = 4096;
  at::Tensor x = torch::randn({n, 1, 28, 28});
  at::Tensor y = torch::randint(0, 10, {n});
  torch::nn::Sequential net = frugal::models::SmallCnn();
  frugal::Classifier task(net, frugal::AdamW(1e-3));
  auto timer = std::make_shared<StepTimer>();
  timer->warmup = warmup;
  frugal::Trainer trainer(frugal::TrainerOptions()
                              .max_steps(warmup + steps)
                              .max_epochs(1000)
                              .enable_progress_bar(false)
                              .logger(false)
                              .accelerator("cpu")
                              .num_sanity_val_steps(0),
                          {timer});
  trainer.fit(task, std::make_shared<frugal::TensorLoader>(
                        x, y, frugal::TensorLoaderOptions(batch).shuffle(true).seed(1)));
  std::ofstream(out) << timer->seconds / static_cast<double>(timer->timed_steps) << " "
                     << timer->quantile(0.5) << " " << timer->quantile(0.9) << "\n";
  return 0;
}

/// Seconds per step of one configuration, averaged over its processes.
struct Timing {
  double mean = 1e300;
  double p50 = 0;
  double p90 = 0;
};

/// Starts `env.size()` copies of this program as workers, each with its extra environment;
/// returns their step times, averaged over them.
Timing run(const std::string& self, const std::vector<std::vector<std::string>>& envs,
           int64_t batch, int64_t steps, int64_t warmup, const std::string& tag) {
  std::vector<pid_t> pids;
  std::vector<std::string> outs;
  for (size_t i = 0; i < envs.size(); ++i) {
    const std::string out =
        "/tmp/frugal_bench_ddp_" + std::to_string(::getpid()) + "_" + tag + "_" + std::to_string(i);
    outs.push_back(out);
    const pid_t pid = ::fork();
    if (pid == 0) {
      for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT",
                            "SLURM_NTASKS", "FRUGAL_DDP_OVERLAP"}) {
        ::unsetenv(v);
      }
      for (const auto& kv : envs[i]) ::putenv(const_cast<char*>(kv.c_str()));
      const std::vector<std::string> args = {self,       "--worker",
                                             "--batch",  std::to_string(batch),
                                             "--steps",  std::to_string(steps),
                                             "--warmup", std::to_string(warmup),
                                             "--out",    out};
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(self.c_str(), argv.data());
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  bool ok = true;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  if (!ok) throw frugal::Error("bench: a worker of \"" + tag + "\" failed");
  Timing t{0, 0, 0};
  for (const auto& out : outs) {
    double mean = 0, p50 = 0, p90 = 0;
    std::ifstream(out) >> mean >> p50 >> p90;
    std::remove(out.c_str());
    t.mean += mean / static_cast<double>(outs.size());
    t.p50 += p50 / static_cast<double>(outs.size());
    t.p90 += p90 / static_cast<double>(outs.size());
  }
  return t;
}

/// The faster of two timings (by mean).
Timing best(const Timing& a, const Timing& b) { return b.mean < a.mean ? b : a; }

std::vector<std::vector<std::string>> ddp_env(bool overlap) {
  const std::string port = "MASTER_PORT=" + std::to_string(free_port());
  std::vector<std::vector<std::string>> envs;
  for (int r = 0; r < 2; ++r) {
    envs.push_back({"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r), "WORLD_SIZE=2",
                    "LOCAL_WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", port,
                    std::string("FRUGAL_DDP_OVERLAP=") + (overlap ? "1" : "0")});
  }
  return envs;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"frugal data-parallel scaling on CPU (2 ranks x 1 thread vs 1 process x 1 thread)"};
  bool is_worker = false;
  int64_t global_batch = 64, steps = 120, warmup = 10, batch = 0, repeats = 3;
  std::string out;
  app.add_flag("--worker", is_worker)->group("");
  app.add_option("--batch", batch)->group("");
  app.add_option("--out", out)->group("");
  app.add_option("--global-batch", global_batch)->capture_default_str();
  app.add_option("--steps", steps, "timed optimizer steps")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  app.add_option("--repeats", repeats, "interleaved rounds (the best of each is kept)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (is_worker) return worker(batch, steps, warmup, out);
    const std::string self = "/proc/self/exe";
    char path[4096];
    const ssize_t len = ::readlink(self.c_str(), path, sizeof(path) - 1);
    FRUGAL_CHECK(len > 0, "bench: cannot find this program's path");
    path[len] = '\0';
    const int64_t half = global_batch / 2;
    // Interleaved rounds, the best of each configuration: robust against other load.
    Timing t_single, t_ddp, t_nocomm, t_serial;
    for (int64_t round = 0; round < repeats; ++round) {
      t_single = best(t_single, run(path, {{}}, global_batch, steps, warmup, "single"));
      t_ddp = best(t_ddp, run(path, ddp_env(true), half, steps, warmup, "ddp"));
      t_nocomm = best(t_nocomm, run(path, {{}, {}}, half, steps, warmup, "nocomm"));
      t_serial = best(t_serial, run(path, ddp_env(false), half, steps, warmup, "serial"));
    }
    const double single = t_single.mean, ddp = t_ddp.mean, nocomm = t_nocomm.mean,
                 serial = t_serial.mean;
    auto rate = [&](double s) { return static_cast<double>(global_batch) / s; };
    std::printf("global batch %lld, %lld timed steps, SmallCnn, 1 intra-op thread per process\n",
                static_cast<long long>(global_batch), static_cast<long long>(steps));
    std::printf("  single   1 x %3lld : %8.1f samples/s  (%.2f ms/step)\n",
                static_cast<long long>(global_batch), rate(single), single * 1e3);
    std::printf("  ddp      2 x %3lld : %8.1f samples/s  (%.2f ms/step)\n",
                static_cast<long long>(half), rate(ddp), ddp * 1e3);
    std::printf("  no-comm  2 x %3lld : %8.1f samples/s  (%.2f ms/step, no gradient sync)\n",
                static_cast<long long>(half), rate(nocomm), nocomm * 1e3);
    std::printf(
        "  serial   2 x %3lld : %8.1f samples/s  (%.2f ms/step, all-reduce after backward)\n",
        static_cast<long long>(half), rate(serial), serial * 1e3);
    std::printf(
        "step time p50 / p90 (ms): single %.2f / %.2f, ddp %.2f / %.2f, no-comm %.2f / %.2f, "
        "serial %.2f / %.2f\n",
        t_single.p50 * 1e3, t_single.p90 * 1e3, t_ddp.p50 * 1e3, t_ddp.p90 * 1e3,
        t_nocomm.p50 * 1e3, t_nocomm.p90 * 1e3, t_serial.p50 * 1e3, t_serial.p90 * 1e3);
    const double exposed = ddp - nocomm, full = serial - nocomm;
    std::printf("scaling ratio ddp/single: %.2f (target >= 1.8)\n", single / ddp);
    if (full > 0) {
      std::printf(
          "communication: %.2f ms/step when serial, %.2f ms/step exposed with overlap: "
          "%.0f%% hidden behind backward\n",
          full * 1e3, exposed * 1e3, 100.0 * std::clamp(1.0 - exposed / full, 0.0, 1.0));
    } else {
      std::printf("communication: not measurable at this size (serial <= no-comm)\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

// Data-parallel scaling on CPU: the example CNN (models::SmallCnn) trained by frugal's Trainer,
// same global batch, measured in one run:
//   single   1 process x 1 thread, batch B
//   ddp      2 ranks x 1 thread, batch B/2 each, as frugal runs them by default: gradients summed
//            through shared memory after backward (Note [Shared-memory all-reduce])
//   gloo     as ddp over Gloo on 127.0.0.1 (FRUGAL_DDP_SHM=0): bucketed all-reduce launched from
//            the autograd hooks, overlapping backward (the path for ranks on several machines)
//   serial   as gloo, but every bucket sent after backward (FRUGAL_DDP_OVERLAP=0)
//   no-comm  2 independent processes x 1 thread, batch B/2 each (compute under the same
//            contention, no communication)
// Prints the scaling ratio ddp/single (target >= 1.8 on 2 cores), the same for Gloo, and the share
// of Gloo's communication hidden behind backward: 1 - (t_gloo - t_nocomm) / (t_serial - t_nocomm).
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

using Clock = std::chrono::steady_clock;

/// Wall time of the optimizer steps after the warm-up, each step's duration (their spread is
/// what lockstep training pays for: every step waits for the slower rank), and where a step's
/// time goes: forward (batch start to before backward), backward (with the gradient
/// synchronisation), the optimizer step and hooks (to batch end), and the rest (the loader, the
/// loop: batch end to the next batch start).
struct StepTimer : frugal::Callback {
  int64_t warmup = 0;
  Clock::time_point start{}, last{}, phase{};
  double seconds = 0;
  int64_t timed_steps = 0;
  std::vector<double> step_seconds;
  double forward = 0, backward = 0, optimizer = 0, rest = 0;  // summed over the timed steps

  static double since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }
  bool timing(const frugal::Trainer& trainer) const {
    return trainer.state().global_step >= warmup;
  }
  void on_train_batch_start(frugal::Trainer& trainer, frugal::Task&, const frugal::Batch&,
                            int64_t) override {
    if (timing(trainer) && trainer.state().global_step > warmup) rest += since(phase);
    phase = Clock::now();
  }
  void on_before_backward(frugal::Trainer& trainer, frugal::Task&, const at::Tensor&) override {
    if (timing(trainer)) forward += since(phase);
    phase = Clock::now();
  }
  void on_after_backward(frugal::Trainer& trainer, frugal::Task&) override {
    if (timing(trainer)) backward += since(phase);
    phase = Clock::now();
  }
  void on_train_batch_end(frugal::Trainer& trainer, frugal::Task&, const at::Tensor&,
                          const frugal::Batch&, int64_t) override {
    const int64_t step = trainer.state().global_step;  // already counts this batch's step
    if (step > warmup) optimizer += since(phase);
    const auto now = Clock::now();
    phase = now;
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

/// One training process; writes "<mean seconds per step> <median> <90th percentile> <forward>
/// <backward> <optimizer> <rest>" (the last four: mean seconds per step) to `out`.
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
                              .num_threads(1)  // as set above
                              .max_steps(warmup + steps)
                              .max_epochs(1000)
                              .enable_progress_bar(false)
                              .logger(false)
                              .accelerator("cpu")
                              .num_sanity_val_steps(0),
                          {timer});
  trainer.fit(task, std::make_shared<frugal::TensorLoader>(
                        x, y, frugal::TensorLoaderOptions(batch).shuffle(true).seed(1)));
  const auto steps_done = static_cast<double>(timer->timed_steps);
  std::ofstream(out) << timer->seconds / steps_done << " " << timer->quantile(0.5) << " "
                     << timer->quantile(0.9) << " " << timer->forward / steps_done << " "
                     << timer->backward / steps_done << " " << timer->optimizer / steps_done << " "
                     << timer->rest / steps_done << "\n";
  return 0;
}

/// Seconds per step of one configuration, averaged over its processes.
struct Timing {
  double mean = 1e300;
  double p50 = 0;
  double p90 = 0;
  double forward = 0, backward = 0, optimizer = 0, rest = 0;
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
                            "SLURM_NTASKS", "FRUGAL_DDP_OVERLAP", "FRUGAL_DDP_SHM"}) {
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
  const auto n = static_cast<double>(outs.size());
  for (const auto& out : outs) {
    Timing one;
    std::ifstream(out) >> one.mean >> one.p50 >> one.p90 >> one.forward >> one.backward >>
        one.optimizer >> one.rest;
    std::remove(out.c_str());
    t.mean += one.mean / n;
    t.p50 += one.p50 / n;
    t.p90 += one.p90 / n;
    t.forward += one.forward / n;
    t.backward += one.backward / n;
    t.optimizer += one.optimizer / n;
    t.rest += one.rest / n;
  }
  return t;
}

/// The faster of two timings (by mean).
Timing best(const Timing& a, const Timing& b) { return b.mean < a.mean ? b : a; }

enum class Transport { kSharedMemory, kGloo, kGlooSerial };

std::vector<std::vector<std::string>> ddp_env(Transport transport) {
  const std::string port = "MASTER_PORT=" + std::to_string(free_port());
  std::vector<std::vector<std::string>> envs;
  for (int r = 0; r < 2; ++r) {
    envs.push_back(
        {"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r), "WORLD_SIZE=2",
         "LOCAL_WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", port,
         std::string("FRUGAL_DDP_SHM=") + (transport == Transport::kSharedMemory ? "1" : "0"),
         std::string("FRUGAL_DDP_OVERLAP=") + (transport == Transport::kGlooSerial ? "0" : "1")});
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
    Timing t_single, t_ddp, t_gloo, t_nocomm, t_serial;
    for (int64_t round = 0; round < repeats; ++round) {
      t_single = best(t_single, run(path, {{}}, global_batch, steps, warmup, "single"));
      t_ddp = best(t_ddp, run(path, ddp_env(Transport::kSharedMemory), half, steps, warmup, "ddp"));
      t_gloo = best(t_gloo, run(path, ddp_env(Transport::kGloo), half, steps, warmup, "gloo"));
      t_nocomm = best(t_nocomm, run(path, {{}, {}}, half, steps, warmup, "nocomm"));
      t_serial =
          best(t_serial, run(path, ddp_env(Transport::kGlooSerial), half, steps, warmup, "serial"));
    }
    const double single = t_single.mean, ddp = t_ddp.mean, gloo = t_gloo.mean,
                 nocomm = t_nocomm.mean, serial = t_serial.mean;
    auto rate = [&](double s) { return static_cast<double>(global_batch) / s; };
    std::printf("global batch %lld, %lld timed steps, SmallCnn, 1 intra-op thread per process\n",
                static_cast<long long>(global_batch), static_cast<long long>(steps));
    std::printf("  single   1 x %3lld : %8.1f samples/s  (%.2f ms/step)\n",
                static_cast<long long>(global_batch), rate(single), single * 1e3);
    std::printf("  ddp      2 x %3lld : %8.1f samples/s  (%.2f ms/step, shared memory)\n",
                static_cast<long long>(half), rate(ddp), ddp * 1e3);
    std::printf("  gloo     2 x %3lld : %8.1f samples/s  (%.2f ms/step, Gloo, overlapped)\n",
                static_cast<long long>(half), rate(gloo), gloo * 1e3);
    std::printf("  no-comm  2 x %3lld : %8.1f samples/s  (%.2f ms/step, no gradient sync)\n",
                static_cast<long long>(half), rate(nocomm), nocomm * 1e3);
    std::printf("  serial   2 x %3lld : %8.1f samples/s  (%.2f ms/step, Gloo after backward)\n",
                static_cast<long long>(half), rate(serial), serial * 1e3);
    std::printf(
        "step time p50 / p90 (ms): single %.2f / %.2f, ddp %.2f / %.2f, gloo %.2f / %.2f, "
        "no-comm %.2f / %.2f, serial %.2f / %.2f\n",
        t_single.p50 * 1e3, t_single.p90 * 1e3, t_ddp.p50 * 1e3, t_ddp.p90 * 1e3, t_gloo.p50 * 1e3,
        t_gloo.p90 * 1e3, t_nocomm.p50 * 1e3, t_nocomm.p90 * 1e3, t_serial.p50 * 1e3,
        t_serial.p90 * 1e3);
    std::printf("per step (ms): forward / backward+sync / optimizer+hooks / loader+loop\n");
    for (const auto& [name, t] : {std::pair<const char*, const Timing&>{"single", t_single},
                                  {"ddp", t_ddp},
                                  {"gloo", t_gloo},
                                  {"no-comm", t_nocomm},
                                  {"serial", t_serial}}) {
      std::printf("  %-8s %.2f / %.2f / %.2f / %.2f\n", name, t.forward * 1e3, t.backward * 1e3,
                  t.optimizer * 1e3, t.rest * 1e3);
    }
    std::printf("scaling ratio ddp/single: %.2f (target >= 1.8); Gloo %.2f; no-comm ceiling %.2f\n",
                single / ddp, single / gloo, single / nocomm);
    std::printf("shared memory: %.2f ms/step of communication (ddp - no-comm)\n",
                (ddp - nocomm) * 1e3);
    const double exposed = gloo - nocomm, full = serial - nocomm;
    if (full > 0) {
      std::printf(
          "Gloo: %.2f ms/step when serial, %.2f ms/step exposed with overlap: "
          "%.0f%% hidden behind backward\n",
          full * 1e3, exposed * 1e3, 100.0 * std::clamp(1.0 - exposed / full, 0.0, 1.0));
    } else {
      std::printf("Gloo: communication not measurable at this size (serial <= no-comm)\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

// keep_freed_cpu_memory and TrainerOptions::cpu_malloc_tuning: a CPU fit with the tuning takes
// far fewer page faults per step than without (measured in fresh child processes, since malloc's
// settings are process-wide), the environment's malloc settings and memory measurements win, and
// fit gives the memory back at its end.
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>

#include "test_support.h"
#include "under_asan.h"

namespace {

int64_t minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_minflt);
}

/// Minor page faults from step `from` to step `to`, RSS at the end of training and after fit.
struct Counter : frugal::Callback {
  int64_t from = 5, to = 25;
  int64_t faults_at_from = 0, faults = 0, rss_at_train_end = 0;
  void on_train_batch_end(frugal::Trainer& trainer, frugal::Task&, const at::Tensor&,
                          const frugal::Batch&, int64_t) override {
    const int64_t step = trainer.state().global_step;
    if (step == from) faults_at_from = minor_faults();
    if (step == to) faults = minor_faults() - faults_at_from;
  }
  void on_train_end(frugal::Trainer&, frugal::Task&) override {
    rss_at_train_end = frugal::read_memory_stats().rss;
  }
};

/// Page faults of touching a 30 MiB malloc block that the same size was freed just before. With
/// the tuning (which outlives fit) the block is the freed one: no faults. With glibc's defaults
/// it is mostly a fresh mapping (30 MiB is above any dynamic threshold this test's work can
/// reach): 5000-7680 faults. Unlike the faults of a training step, this does not depend on what
/// the process allocated before.
int64_t reuse_probe_faults() {
  const size_t n = 30u << 20;
  auto touch = [n] {
    char* p = static_cast<char*>(std::malloc(n));
    std::memset(p, 1, n);
    asm volatile("" : : "r"(p) : "memory");  // keep the compiler from eliding the block
    std::free(p);
  };
  touch();
  const int64_t before = minor_faults();
  touch();
  return minor_faults() - before;
}

struct ChildResult {
  double faults_per_step = -1;
  double rss_at_train_end_mib = -1;
  double rss_after_fit_mib = -1;
  int64_t probe_faults = -1;  // reuse_probe_faults() after fit
};

/// Runs `fit` of the example CNN (batch 64, 25 steps) in a fresh child process.
ChildResult fit_in_child(bool tuning, const char* env = nullptr, bool with_finder = false) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    ChildResult r;
    try {
      for (char** e = environ; *e != nullptr;) {  // a clean malloc environment, then `env`
        if (std::strncmp(*e, "MALLOC_", 7) == 0) {
          const std::string name(*e, std::strchr(*e, '=') - *e);
          unsetenv(name.c_str());
        } else {
          ++e;
        }
      }
      if (env != nullptr) putenv(const_cast<char*>(env));
      torch::set_num_threads(1);
      torch::manual_seed(0);
      at::Tensor x = torch::randn({25 * 64, 1, 28, 28});
      at::Tensor y = torch::randint(0, 10, {25 * 64});
      frugal::Classifier task(frugal::models::SmallCnn(), frugal::AdamW(1e-3));
      auto counter = std::make_shared<Counter>();
      std::vector<std::shared_ptr<frugal::Callback>> callbacks = {counter};
      if (with_finder) {  // measures memory at fit start: the Trainer must leave malloc alone
        callbacks.push_back(std::make_shared<frugal::BatchSizeFinder>(
            x, y, frugal::BatchSizeFinderOptions().start_size(32).max_size(64).budget_bytes(1e9)));
      }
      frugal::Trainer trainer(
          frugal::testing::quiet_options("").num_threads(1).max_steps(25).cpu_malloc_tuning(tuning),
          callbacks);
      trainer.fit(task,
                  std::make_shared<frugal::TensorLoader>(x, y, frugal::TensorLoaderOptions(64)));
      r.faults_per_step =
          static_cast<double>(counter->faults) / static_cast<double>(counter->to - counter->from);
      r.rss_at_train_end_mib = static_cast<double>(counter->rss_at_train_end) / (1 << 20);
      r.rss_after_fit_mib = static_cast<double>(frugal::read_memory_stats().rss) / (1 << 20);
      r.probe_faults = reuse_probe_faults();
    } catch (...) {
    }
    (void)!write(fds[1], &r, sizeof(r));
    _exit(0);
  }
  close(fds[1]);
  ChildResult r;
  EXPECT_EQ(read(fds[0], &r, sizeof(r)), static_cast<ssize_t>(sizeof(r)));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return r;
}

}  // namespace

TEST(CpuMemory, TuningRemovesMostPageFaultsOfATrainingStep) {
  FRUGAL_SKIP_UNDER_ASAN();
  const ChildResult off = fit_in_child(false);
  const ChildResult on = fit_in_child(true);
  std::cout << "page faults per step: " << off.faults_per_step << " without tuning, "
            << on.faults_per_step << " with; reusing a freed 30 MiB block: " << off.probe_faults
            << " / " << on.probe_faults << "\n";
  ASSERT_GT(off.faults_per_step, 0);
  EXPECT_LT(on.faults_per_step, off.faults_per_step / 10);
  EXPECT_GT(off.probe_faults, 1000);
  EXPECT_LT(on.probe_faults, 100);
}

TEST(CpuMemory, TheEnvironmentsMallocSettingsAndMemoryMeasurementsWin) {
  FRUGAL_SKIP_UNDER_ASAN();
  // (How many faults a step takes without the tuning depends on what the process allocated
  // before, e.g. a finder's trials; the 30 MiB probe does not.)
  // glibc's default threshold, but set by the user: the Trainer leaves malloc alone.
  const ChildResult env = fit_in_child(true, "MALLOC_MMAP_THRESHOLD_=131072");
  std::cout << "reusing a freed 30 MiB block with MALLOC_MMAP_THRESHOLD_ set: " << env.probe_faults
            << " faults\n";
  EXPECT_GT(env.probe_faults, 1000);

  // Nor while a BatchSizeFinder callback measures memory.
  const ChildResult finder = fit_in_child(true, nullptr, /*with_finder=*/true);
  std::cout << "reusing a freed 30 MiB block after a fit with a BatchSizeFinder: "
            << finder.probe_faults << " faults\n";
  EXPECT_GT(finder.probe_faults, 1000);

  // keep_freed_cpu_memory itself, in a child (it changes malloc for the whole process).
  auto applied_in_child = [](const char* name, const char* value) {
    const pid_t pid = fork();
    if (pid == 0) {
      for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                            "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES"}) {
        unsetenv(v);
      }
      if (name != nullptr) setenv(name, value, 1);
      _exit(frugal::keep_freed_cpu_memory() ? 1 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 1;
  };
  EXPECT_TRUE(applied_in_child(nullptr, nullptr));
  EXPECT_FALSE(applied_in_child("MALLOC_TOP_PAD_", "0"));
  EXPECT_FALSE(applied_in_child("MALLOC_TRIM_THRESHOLD_", "131072"));
  EXPECT_FALSE(applied_in_child("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"));
  EXPECT_TRUE(applied_in_child("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0"));
}

TEST(CpuMemory, FitGivesTheMemoryBackAtItsEnd) {
  FRUGAL_SKIP_UNDER_ASAN();
  const ChildResult on = fit_in_child(true);
  std::cout << "RSS " << on.rss_at_train_end_mib << " MiB at train end, " << on.rss_after_fit_mib
            << " MiB after fit\n";
  EXPECT_LT(on.rss_after_fit_mib, on.rss_at_train_end_mib - 4);
}

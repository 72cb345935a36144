// CPU threads by default (frugal/hardware/cpu_threads.h): the pure rule over a table of inputs,
// the cgroup parsers on sample files, and the Trainer applying it.
#include <ATen/Parallel.h>
#include <frugal/hardware/cpu_threads.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <torch/version.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "frugal/classifier.h"
#include "frugal/data/batch_source.h"
#include "frugal/trainer.h"
#include "test_support.h"

namespace {

using frugal::CpuThreadInputs;
using frugal::testing::error_message;
using ::testing::HasSubstr;

struct Row {
  const char* what;
  int affinity;
  std::optional<double> quota;
  int local_world_size;
  std::optional<std::string> omp;
  int user;
  int expected;
  const char* reason_has;
};

TEST(CpuThreads, DecisionTable) {
  const std::vector<Row> rows = {
      {"affinity only", 2, std::nullopt, 1, std::nullopt, 0, 2, "2 CPUs in the affinity mask"},
      {"one CPU", 1, std::nullopt, 1, std::nullopt, 0, 1, "1 CPU in the affinity mask"},
      {"quota below affinity", 16, 4.0, 1, std::nullopt, 0, 4, "cgroup quota 4 CPUs -> 4"},
      {"fractional quota rounds up", 16, 1.5, 1, std::nullopt, 0, 2, "cgroup quota 1.5 CPUs -> 2"},
      {"tiny quota gives 1", 16, 0.2, 1, std::nullopt, 0, 1, "cgroup quota 0.2 CPUs -> 1"},
      {"quota above affinity", 2, 8.0, 1, std::nullopt, 0, 2, "cgroup quota 8 CPUs"},
      {"two local ranks", 16, std::nullopt, 2, std::nullopt, 0, 8, "2 local ranks"},
      {"ranks and quota", 16, 6.0, 4, std::nullopt, 0, 1, "-> 1 each"},
      {"three ranks, 8 CPUs", 8, std::nullopt, 3, std::nullopt, 0, 2, "-> 2 each"},
      {"more ranks than CPUs", 2, std::nullopt, 4, std::nullopt, 0, 1, "-> 1 each"},
      {"affinity unknown", 0, std::nullopt, 1, std::nullopt, 0, 1, "affinity mask unknown"},
      {"OMP_NUM_THREADS wins", 16, 2.0, 2, std::string("3"), 0, 3, "OMP_NUM_THREADS=3"},
      {"OMP list: first level", 16, std::nullopt, 1, std::string("4,2"), 0, 4,
       "OMP_NUM_THREADS=4,2"},
      {"OMP with blanks", 16, std::nullopt, 1, std::string(" 5 "), 0, 5, "OMP_NUM_THREADS"},
      {"user wins over all", 16, 2.0, 2, std::string("3"), 7, 7, "set by the user"},
      {"user on a 1-CPU box", 1, std::nullopt, 1, std::nullopt, 2, 2, "set by the user"},
  };
  for (const Row& r : rows) {
    CpuThreadInputs in;
    in.affinity_cpus = r.affinity;
    in.quota_cpus = r.quota;
    in.local_world_size = r.local_world_size;
    in.omp_num_threads = r.omp;
    in.user_threads = r.user;
    const frugal::ThreadDecision d = frugal::decide_cpu_threads(in);
    EXPECT_EQ(d.threads, r.expected) << r.what << ": " << d.reason;
    EXPECT_THAT(d.reason, HasSubstr(r.reason_has)) << r.what;
  }
}

TEST(CpuThreads, BadEnvironmentIsAClearError) {
  for (const char* bad : {"", "zero", "0", "-2", "2.5", "4x"}) {
    CpuThreadInputs in;
    in.affinity_cpus = 4;
    in.omp_num_threads = std::string(bad);
    EXPECT_THAT(error_message([&] { frugal::decide_cpu_threads(in); }),
                HasSubstr("OMP_NUM_THREADS must be a positive integer, got \"" + std::string(bad)))
        << bad;
  }
  CpuThreadInputs in;
  in.affinity_cpus = 4;
  in.local_world_size = 0;
  EXPECT_THAT(error_message([&] { frugal::decide_cpu_threads(in); }),
              HasSubstr("LOCAL_WORLD_SIZE must be >= 1, got 0"));
}

TEST(CpuThreads, CgroupFileParsers) {
  EXPECT_EQ(frugal::parse_cgroup_v2_cpu_max("max 100000\n"), std::nullopt);
  EXPECT_EQ(frugal::parse_cgroup_v2_cpu_max("150000 100000\n"), 1.5);
  EXPECT_EQ(frugal::parse_cgroup_v2_cpu_max("200000 50000"), 4.0);
  EXPECT_EQ(frugal::parse_cgroup_v2_cpu_max("50000"), 0.5);  // period defaults to 100000
  EXPECT_THAT(error_message([] { frugal::parse_cgroup_v2_cpu_max("lots 100000"); }),
              HasSubstr("cgroup cpu.max: expected \"<quota|max> <period>\""));
  EXPECT_THAT(error_message([] { frugal::parse_cgroup_v2_cpu_max(""); }), HasSubstr("cpu.max"));
  EXPECT_THAT(error_message([] { frugal::parse_cgroup_v2_cpu_max("1 2 3"); }),
              HasSubstr("got \"1 2 3\""));
  EXPECT_EQ(frugal::parse_cgroup_v1_cpu_quota("-1\n", "100000\n"), std::nullopt);
  EXPECT_EQ(frugal::parse_cgroup_v1_cpu_quota("250000\n", "100000\n"), 2.5);
  EXPECT_THAT(error_message([] { frugal::parse_cgroup_v1_cpu_quota("abc", "100000"); }),
              HasSubstr("cpu.cfs_quota_us: expected a number, got \"abc\""));
  EXPECT_THAT(error_message([] { frugal::parse_cgroup_v1_cpu_quota("1000", "0"); }),
              HasSubstr("cpu.cfs_period_us"));
}

void write(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

TEST(CpuThreads, CgroupV2HierarchyTakesTheTightestQuota) {
  const std::filesystem::path root = frugal::testing::temp_dir("cgroup_v2");
  write(root / "cpu.max", "max 100000\n");
  write(root / "system.slice/cpu.max", "300000 100000\n");  // 3 CPUs for the slice
  write(root / "system.slice/job.scope/cpu.max", "max 100000\n");
  write(root / "system.slice/job.scope/cgroup.procs", "1\n");
  EXPECT_EQ(frugal::read_cgroup_cpu_quota("0::/system.slice/job.scope\n", root.string()), 3.0);
  write(root / "system.slice/job.scope/cpu.max", "150000 100000\n");
  EXPECT_EQ(frugal::read_cgroup_cpu_quota("0::/system.slice/job.scope\n", root.string()), 1.5);
  // A container whose namespace hides the host path: the mounted root's own file counts.
  EXPECT_EQ(frugal::read_cgroup_cpu_quota("0::/docker/abc123\n", root.string()), std::nullopt);
  write(root / "cpu.max", "200000 100000\n");
  EXPECT_EQ(frugal::read_cgroup_cpu_quota("0::/\n", root.string()), 2.0);
  // Unreadable or malformed: no limit, not an error.
  write(root / "cpu.max", "garbage\n");
  EXPECT_EQ(frugal::read_cgroup_cpu_quota("0::/\n", root.string()), std::nullopt);
  EXPECT_EQ(frugal::read_cgroup_cpu_quota("0::/\n", (root / "missing").string()), std::nullopt);
}

TEST(CpuThreads, CgroupV1UsesTheCpuController) {
  const std::filesystem::path root = frugal::testing::temp_dir("cgroup_v1");
  const std::string cgroup =
      "12:memory:/user.slice\n"
      "4:cpu,cpuacct:/user.slice/session-7.scope\n"
      "1:name=systemd:/user.slice/session-7.scope\n";
  write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(frugal::read_cgroup_cpu_quota(cgroup, root.string()), std::nullopt);
  write(root / "cpu,cpuacct/user.slice/cpu.cfs_quota_us", "50000\n");
  write(root / "cpu,cpuacct/user.slice/cpu.cfs_period_us", "100000\n");
  write(root / "cpu,cpuacct/user.slice/session-7.scope/cpu.cfs_quota_us", "-1\n");
  write(root / "cpu,cpuacct/user.slice/session-7.scope/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(frugal::read_cgroup_cpu_quota(cgroup, root.string()), 0.5);
  // The memory controller's files are never read for CPUs.
  EXPECT_EQ(frugal::read_cgroup_cpu_quota("12:memory:/user.slice\n", root.string()), std::nullopt);
}

TEST(CpuThreads, ProbeSeesThisProcess) {
  const CpuThreadInputs in = frugal::probe_cpu_thread_inputs(0);
  EXPECT_GE(in.affinity_cpus, 1);
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  EXPECT_EQ(in.affinity_cpus, CPU_COUNT(&set));
}

/// Sets (or unsets) an environment variable while alive.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(const char* n, const char* value) : name(n) {
    if (const char* v = std::getenv(n)) old = v;
    if (value) {
      setenv(n, value, 1);
    } else {
      unsetenv(n);
    }
  }
  ~ScopedEnv() {
    if (old) {
      setenv(name.c_str(), old->c_str(), 1);
    } else {
      unsetenv(name.c_str());
    }
  }
};

TEST(CpuThreads, TrainerAppliesTheDecision) {
  ScopedEnv omp("OMP_NUM_THREADS", nullptr);
  ScopedEnv local("LOCAL_WORLD_SIZE", nullptr);
  const int before = at::get_num_threads();
  {
    frugal::Trainer trainer(frugal::testing::quiet_options().num_threads(3));
    EXPECT_EQ(at::get_num_threads(), 3);
  }
  {
    at::set_num_threads(1);
    frugal::Trainer trainer(frugal::testing::quiet_options().num_threads(-1));
    EXPECT_EQ(at::get_num_threads(), 1);  // left alone
  }
  {
    frugal::Trainer trainer(frugal::testing::quiet_options());
    EXPECT_EQ(at::get_num_threads(),
              frugal::decide_cpu_threads(frugal::probe_cpu_thread_inputs(0)).threads);
  }
  {
    ScopedEnv omp2("OMP_NUM_THREADS", "2");
    frugal::Trainer trainer(frugal::testing::quiet_options());
    EXPECT_EQ(at::get_num_threads(), 2);
  }
  EXPECT_THAT(error_message([] { frugal::TrainerOptions().num_threads(-2).validate(); }),
              HasSubstr("num_threads must be >= 1 (0: decided from the CPUs"));
  at::set_num_threads(before);
}

TEST(CpuThreads, DataLoadingThreadsGetTheirCores) {
  // The automatic count leaves the data source's threads their cores; a user's or
  // OMP_NUM_THREADS's count is taken as it is.
  CpuThreadInputs in;
  in.affinity_cpus = 2;
  in.data_threads = 1;
  frugal::ThreadDecision d = frugal::decide_cpu_threads(in);
  EXPECT_EQ(d.threads, 1);
  EXPECT_THAT(d.reason, HasSubstr("2 CPUs in the affinity mask, less 1 data-loading thread -> 1"));
  in.affinity_cpus = 16;
  in.local_world_size = 2;
  in.data_threads = 3;
  d = frugal::decide_cpu_threads(in);
  EXPECT_EQ(d.threads, 5);
  EXPECT_THAT(d.reason, HasSubstr("-> 8 each, less 3 data-loading threads -> 5"));
  in.data_threads = 20;
  EXPECT_EQ(frugal::decide_cpu_threads(in).threads, 1);
  in.omp_num_threads = "3";
  EXPECT_EQ(frugal::decide_cpu_threads(in).threads, 3);
  in.user_threads = 4;
  EXPECT_EQ(frugal::decide_cpu_threads(in).threads, 4);
}

namespace {
// A TensorLoader that says it keeps `threads` threads busy, as an ImageLoader does.
class ThreadedSource : public frugal::TensorLoader {
 public:
  ThreadedSource(at::Tensor x, at::Tensor y, int64_t threads)
      : frugal::TensorLoader(std::move(x), std::move(y), frugal::TensorLoaderOptions(8)),
        threads_(threads) {}
  int64_t worker_threads() const override { return threads_; }

 private:
  int64_t threads_;
};
}  // namespace

TEST(CpuThreads, FitLeavesTheDataSourcesThreadsTheirCores) {
  ScopedEnv omp("OMP_NUM_THREADS", nullptr);
  ScopedEnv local("LOCAL_WORLD_SIZE", nullptr);
  const int before = at::get_num_threads();
  const auto data = frugal::testing::make_toy_data(32);
  auto fit = [&](frugal::TrainerOptions options) {
    torch::nn::Sequential net(torch::nn::Linear(8, 3));
    frugal::Classifier task(net);
    frugal::Trainer trainer(options.max_epochs(1));
    trainer.fit(task, std::make_shared<ThreadedSource>(data.x, data.y, 1));
    return at::get_num_threads();
  };
  frugal::CpuThreadInputs in = frugal::probe_cpu_thread_inputs(0);
  in.data_threads = 1;
  EXPECT_EQ(fit(frugal::testing::quiet_options()), frugal::decide_cpu_threads(in).threads);
  EXPECT_EQ(fit(frugal::testing::quiet_options().num_threads(2)), 2);
  at::set_num_threads(before);
}

TEST(CpuThreads, DescribesBlasAndLibTorch) {
  const std::string blas = frugal::blas_description();
  EXPECT_NE(blas, "unknown");
  std::cout << "BLAS: " << blas << "\n" << frugal::libtorch_description() << "\n";
  EXPECT_THAT(frugal::libtorch_description(), HasSubstr(std::string("LibTorch ") + TORCH_VERSION));
#if !defined(FRUGAL_WITH_CUDA)
  EXPECT_THAT(frugal::libtorch_description(), HasSubstr("(CPU)"));
#endif
}

}  // namespace

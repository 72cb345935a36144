#include "frugal/hardware/cpu_threads.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#include <sys/stat.h>
#include <torch/version.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "frugal/error.h"

namespace frugal {

namespace {

/// A positive int from the whole of `text` (leading/trailing blanks allowed), else none.
std::optional<int> positive_int(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\n");
  if (first == std::string::npos) return std::nullopt;
  const auto last = text.find_last_not_of(" \t\n");
  const std::string t = text.substr(first, last - first + 1);
  if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos || t.size() > 9) {
    return std::nullopt;
  }
  const int value = std::stoi(t);
  if (value <= 0) return std::nullopt;
  return value;
}

std::string format_cpus(double cpus) {
  std::ostringstream out;
  out << cpus;
  return out.str();
}

std::optional<std::string> read_small_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

std::optional<double> tighter(std::optional<double> a, std::optional<double> b) {
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

/// The folders from `root + path` up to `root` (both included), deepest first; only `root`
/// itself when `root + path` does not exist (a cgroup namespace hides the host's path).
std::vector<std::string> folders_up(const std::string& root, std::string path) {
  std::vector<std::string> out;
  while (!path.empty() && path.back() == '/') path.pop_back();
  struct stat info {};
  if (path.empty() || ::stat((root + path).c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    out.push_back(root);
    return out;
  }
  while (!path.empty()) {
    out.push_back(root + path);
    path = path.substr(0, path.rfind('/'));
  }
  out.push_back(root);
  return out;
}

}  // namespace

std::optional<double> parse_cgroup_v2_cpu_max(const std::string& contents) {
  std::istringstream in(contents);
  std::string quota, period, rest;
  in >> quota >> period;
  FRUGAL_CHECK(!quota.empty(), "cgroup cpu.max: expected \"<quota|max> <period>\", got \"",
               contents, "\"");
  in >> rest;
  FRUGAL_CHECK(rest.empty(), "cgroup cpu.max: expected \"<quota|max> <period>\", got \"", contents,
               "\"");
  if (quota == "max") return std::nullopt;
  const auto q = positive_int(quota);
  // The period may be missing (the kernel then keeps 100000 us).
  const auto p = period.empty() ? std::optional<int>(100000) : positive_int(period);
  FRUGAL_CHECK(q && p, "cgroup cpu.max: expected \"<quota|max> <period>\" in microseconds, got \"",
               contents, "\"");
  return static_cast<double>(*q) / *p;
}

std::optional<double> parse_cgroup_v1_cpu_quota(const std::string& quota_us,
                                                const std::string& period_us) {
  std::istringstream in(quota_us);
  long long quota = 0;
  FRUGAL_CHECK(static_cast<bool>(in >> quota), "cgroup cpu.cfs_quota_us: expected a number, got \"",
               quota_us, "\"");
  if (quota < 0) return std::nullopt;  // -1: no limit
  const auto period = positive_int(period_us);
  FRUGAL_CHECK(quota > 0 && period, "cgroup cpu.cfs_quota_us / cpu.cfs_period_us: expected -1 or ",
               "a positive quota and a positive period, got \"", quota_us, "\" / \"", period_us,
               "\"");
  return static_cast<double>(quota) / *period;
}

std::optional<double> read_cgroup_cpu_quota(const std::string& proc_self_cgroup,
                                            const std::string& cgroup_root) {
  std::istringstream lines(proc_self_cgroup);
  std::string line;
  std::optional<double> quota;
  while (std::getline(lines, line)) {
    // "hierarchy-id:controller,list:/path"
    const auto a = line.find(':');
    const auto b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a);
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    try {
      if (id == "0" && controllers.empty()) {  // cgroup v2
        for (const std::string& dir : folders_up(cgroup_root, path)) {
          if (auto text = read_small_file(dir + "/cpu.max")) {
            quota = tighter(quota, parse_cgroup_v2_cpu_max(*text));
          }
        }
        continue;
      }
      std::vector<std::string> names;
      std::stringstream split(controllers);
      for (std::string name; std::getline(split, name, ',');) names.push_back(name);
      if (std::find(names.begin(), names.end(), "cpu") == names.end()) continue;
      for (const std::string& mount :
           {controllers, std::string("cpu,cpuacct"), std::string("cpu")}) {
        const std::string root = cgroup_root + "/" + mount;
        if (!read_small_file(root + "/cpu.cfs_quota_us")) continue;
        for (const std::string& dir : folders_up(root, path)) {
          auto q = read_small_file(dir + "/cpu.cfs_quota_us");
          auto p = read_small_file(dir + "/cpu.cfs_period_us");
          if (q && p) quota = tighter(quota, parse_cgroup_v1_cpu_quota(*q, *p));
        }
        break;
      }
    } catch (const Error&) {
      // A file we cannot make sense of limits nothing we know of; LibTorch's default is no worse.
    }
  }
  return quota;
}

ThreadDecision decide_cpu_threads(const CpuThreadInputs& in) {
  if (in.user_threads > 0) {
    return {in.user_threads, "set by the user (num_threads / --num-threads)"};
  }
  if (in.omp_num_threads) {
    // OpenMP's syntax allows a list per nesting level ("4,2"): the first is ours.
    const std::string first = in.omp_num_threads->substr(0, in.omp_num_threads->find(','));
    const auto n = positive_int(first);
    FRUGAL_CHECK(n.has_value(), "OMP_NUM_THREADS must be a positive integer, got \"",
                 *in.omp_num_threads, "\"; unset it to let frugal use the CPUs it may run on");
    return {*n, "OMP_NUM_THREADS=" + *in.omp_num_threads};
  }
  FRUGAL_CHECK(in.local_world_size >= 1, "LOCAL_WORLD_SIZE must be >= 1, got ",
               in.local_world_size);
  std::ostringstream why;
  int cpus = std::max(1, in.affinity_cpus);
  if (in.affinity_cpus > 0) {
    why << in.affinity_cpus << (in.affinity_cpus == 1 ? " CPU" : " CPUs")
        << " in the affinity mask";
  } else {
    why << "affinity mask unknown";
  }
  if (in.quota_cpus) {
    const int quota = std::max(1, static_cast<int>(std::ceil(*in.quota_cpus - 1e-9)));
    why << ", cgroup quota " << format_cpus(*in.quota_cpus) << " CPUs";
    if (quota < cpus) {
      cpus = quota;
      why << " -> " << cpus;
    }
  }
  if (in.local_world_size > 1) {
    const int share = std::max(1, cpus / in.local_world_size);
    why << ", shared by " << in.local_world_size << " local ranks (LOCAL_WORLD_SIZE) -> " << share
        << " each";
    cpus = share;
  }
  if (in.data_threads > 0) {
    const int left = std::max(1, cpus - in.data_threads);
    why << ", less " << in.data_threads << " data-loading thread"
        << (in.data_threads == 1 ? "" : "s") << " -> " << left;
    cpus = left;
  }
  return {cpus, why.str()};
}

CpuThreadInputs probe_cpu_thread_inputs(int user_threads) {
  CpuThreadInputs in;
  in.user_threads = user_threads;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) in.affinity_cpus = CPU_COUNT(&set);
  if (auto cgroup = read_small_file("/proc/self/cgroup")) {
    in.quota_cpus = read_cgroup_cpu_quota(*cgroup, "/sys/fs/cgroup");
  }
  if (auto local = env("LOCAL_WORLD_SIZE")) {
    const auto n = positive_int(*local);
    FRUGAL_CHECK(n.has_value(), "LOCAL_WORLD_SIZE must be a positive integer, got \"", *local,
                 "\"");
    in.local_world_size = *n;
  }
  in.omp_num_threads = env("OMP_NUM_THREADS");
  return in;
}

ThreadDecision apply_cpu_threads(int user_threads, int data_threads) {
  CpuThreadInputs inputs = probe_cpu_thread_inputs(user_threads);
  inputs.data_threads = data_threads;
  ThreadDecision decision = decide_cpu_threads(inputs);
  if (at::get_num_threads() != decision.threads) at::set_num_threads(decision.threads);
  return decision;
}

namespace {

int collect_library(dl_phdr_info* info, size_t, void* data) {
  if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') {
    static_cast<std::vector<std::string>*>(data)->push_back(info->dlpi_name);
  }
  return 0;
}

std::string build_setting(const std::string& config, const std::string& key) {
  const auto at = config.find(key + "=");
  if (at == std::string::npos) return "";
  const auto start = at + key.size() + 1;
  return config.substr(start, config.find_first_of(", \n", start) - start);
}

}  // namespace

std::string blas_description() {
  std::vector<std::string> libraries;
  dl_iterate_phdr(collect_library, &libraries);
  std::string found;
  for (const std::string& name : libraries) {
    char resolved[PATH_MAX];
    const std::string path = realpath(name.c_str(), resolved) != nullptr ? resolved : name;
    const std::string file = path.substr(path.rfind('/') + 1);
    if (path.find("openblas") != std::string::npos) {
      found = "OpenBLAS";
      if (path.find("openblas-openmp") != std::string::npos) found += " (openmp)";
      if (path.find("openblas-pthread") != std::string::npos) found += " (pthread)";
      break;
    }
    if (file.rfind("libmkl", 0) == 0) {
      found = "MKL";
      break;
    }
    if (path.find("blis") != std::string::npos) {
      found = "BLIS";
      break;
    }
    if (path.find("atlas") != std::string::npos) {
      found = "ATLAS";
      break;
    }
    if (path.find("/blas/libblas.so") != std::string::npos) found = "reference BLAS (netlib)";
  }
  if (found.rfind("OpenBLAS", 0) == 0) {
    using Config = const char* (*)();
    if (auto config = reinterpret_cast<Config>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
      found += std::string(": ") + config();
    }
  }
  if (!found.empty()) return found;
  const std::string info = build_setting(at::show_config(), "BLAS_INFO");
  if (info == "mkl") return "MKL (linked into LibTorch)";
  if (!info.empty()) return info + " (LibTorch's BLAS_INFO)";
  return "unknown";
}

std::string libtorch_description() {
  std::string out = std::string("LibTorch ") + TORCH_VERSION;
  const std::string config = at::show_config();
  const auto cuda = config.find("CUDA Runtime ");
  if (cuda != std::string::npos) {
    const auto start = cuda + 13;
    out += " (CUDA " + config.substr(start, config.find_first_of(" \n", start) - start) + ")";
  } else {
    out += " (CPU)";
  }
  return out;
}

}  // namespace frugal

// A full disk without mounting anything: while `run(f)` runs, RLIMIT_FSIZE makes every write past
// `bytes` fail part-way with EFBIG ("File too large"), as a full disk fails with ENOSPC, and
// SIGXFSZ is ignored so the process lives on. Both are restored afterwards (space is back).
#pragma once

#include <sys/resource.h>

#include <csignal>
#include <cstddef>

namespace frugal::testing {

template <typename F>
void with_disk_full_after(size_t bytes, F&& f) {
  rlimit saved{};
  getrlimit(RLIMIT_FSIZE, &saved);
  rlimit small = saved;
  small.rlim_cur = bytes;
  auto previous = std::signal(SIGXFSZ, SIG_IGN);
  setrlimit(RLIMIT_FSIZE, &small);
  struct Restore {
    rlimit limit;
    void (*handler)(int);
    ~Restore() {
      setrlimit(RLIMIT_FSIZE, &limit);
      std::signal(SIGXFSZ, handler);
    }
  } restore{saved, previous};
  f();
}

}  // namespace frugal::testing

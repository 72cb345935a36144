#include "frugal/budget/cpu_memory.h"

#include <cstdlib>
#include <cstring>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace frugal {

namespace {
/// True when the environment already sets what keep_freed_cpu_memory would.
bool malloc_configured_by_environment() {
  for (const char* var : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                          "MALLOC_MMAP_MAX_"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables == nullptr) return false;
  for (const char* name : {"glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold",
                           "glibc.malloc.top_pad", "glibc.malloc.mmap_max"}) {
    if (std::strstr(tunables, name) != nullptr) return true;
  }
  return false;
}
}  // namespace

bool keep_freed_cpu_memory() {
#ifdef __GLIBC__
  if (malloc_configured_by_environment()) return false;
  // Both calls also turn off glibc's dynamic mmap threshold, which would otherwise move on.
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024) == 1;
  return mmap_ok && trim_ok;
#else
  return false;
#endif
}

void release_freed_cpu_memory() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

}  // namespace frugal

// Shared by the libFuzzer harnesses (docs/reliability.md): the input as a file, for readers that
// take a path, and the one rule every harness checks.
//
// The rule (docs/reliability.md): a reader of outside bytes either returns or throws
// frugal::Error. Any other exception (c10::Error, std::bad_alloc, ...) escaping the reader is a
// finding too: it is left uncaught, and libFuzzer reports it as a crash with the input saved.
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "frugal/error.h"

namespace frugal::fuzz {

/// A file in a folder of this process's own under $TMPDIR (or /tmp), rewritten for every input
/// and removed at exit.
class InputFile {
 public:
  explicit InputFile(const std::string& name) {
    const char* tmp = std::getenv("TMPDIR");
    dir_ = std::string(tmp && *tmp ? tmp : "/tmp") + "/frugal-fuzz-" + std::to_string(::getpid());
    path_ = dir_ + "/" + name;
  }
  ~InputFile() {
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  /// Writes `data` as the whole file; returns its path.
  const std::string& write(const uint8_t* data, size_t size) {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr && ::mkdir(dir_.c_str(), 0700) == 0) f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr) {
      std::perror(path_.c_str());
      std::abort();
    }
    if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
    if (std::fclose(f) != 0) std::abort();
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

/// The harness's input file, one per process.
inline InputFile& input_file(const std::string& name) {
  static InputFile file(name);
  return file;
}

}  // namespace frugal::fuzz

/// Runs `body`; a frugal::Error is the expected way to refuse bad bytes.
#define FRUGAL_FUZZ_EXPECT_ERROR_ONLY(...) \
  try {                                    \
    __VA_ARGS__;                           \
  } catch (const ::frugal::Error&) {       \
  }

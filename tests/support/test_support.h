// Shared helpers for frugal's tests: temporary folders, tiny data sets and models, a recording
// callback.
#pragma once

#include <frugal/frugal.h>

#include <string>
#include <vector>

namespace frugal::testing {

/// A fresh, empty folder for one test (under $FRUGAL_TEST_TMP or /tmp).
std::string temp_dir(const std::string& name);

/// A small separable classification problem: n samples of `features` floats, `classes` labels.
/// Deterministic for a given seed.
struct ToyData {
  at::Tensor x;
  at::Tensor y;
};
ToyData make_toy_data(int64_t n, int64_t features = 8, int64_t classes = 3, uint64_t seed = 0);

/// SHA-256 of all parameters' bytes, in order, on CPU (what the example reports).
std::string params_sha256(torch::nn::Module& module);

/// Options for quiet, fast tests: no progress bar, no logger, CPU, in `dir`.
TrainerOptions quiet_options(const std::string& dir = "");

/// The message of the frugal::Error that `f()` throws; "no error" or "not a frugal::Error: ..."
/// otherwise. Check it with gtest's own substring assertion (no gmock needed):
///   EXPECT_PRED_FORMAT2(::testing::IsSubstring, "batch_size", error_message([&] { ... }));
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not a frugal::Error: ") + e.what();
  }
  return "no error";
}

/// A child process started with fork/exec, its output (stdout and stderr) going to `log`.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log);
  ~Child();  // kills the child if still running
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  void kill(int signo);
  /// Waits for the child; returns its exit code, or -signal when a signal ended it.
  int wait();
  /// True while the child runs (reaps it when it has ended).
  bool running();

 private:
  int pid_ = -1;
  int status_ = 0;
  bool done_ = false;
};

/// Waits until `path` is written anew (its modification time differs from what it was on entry,
/// or it appears), while `child` runs, for at most `timeout_s` seconds. True when it was.
bool wait_for_rewrite(Child& child, const std::string& path, int timeout_s = 120);

/// A TCP port on 127.0.0.1 that was free a moment ago (for a rendezvous store).
int free_port();

/// `s` quoted for a POSIX shell command line.
std::string shell_quote(const std::string& s);

/// The contents of a text file ("" when missing).
std::string read_text(const std::string& path);

/// What run_program saw: the exit code (-1 when the program did not exit normally) and output.
struct ProgramRun {
  int exit_code = -1;
  std::string out;
  std::string err;
  /// Exit code, stdout and stderr, for failure messages.
  std::string describe() const;
};
/// Runs `program args` (args: shell words, quoted by the caller) in the folder `dir`; stdout and
/// stderr go to `name`.out and `name`.err there and are read back.
ProgramRun run_program(const std::string& program, const std::string& args, const std::string& dir,
                       const std::string& name);

}  // namespace frugal::testing

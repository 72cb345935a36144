// frugal as a dependency of another CMake project: the tiny project in tests/integration/consumer
// is configured, built and run against (a) this build installed to a prefix (find_package) and
// (b) frugal's source tree (add_subdirectory). Each must build and print "consumer ok 8".
//
// Runs after the main build (the test links frugal, so the library is built). The build facts it
// needs (source and build folders, CMake, generator, compiler, Torch_DIR, ccache) come in as
// compile definitions from tests/CMakeLists.txt.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"

#ifndef FRUGAL_SOURCE_DIR
#error "tests/CMakeLists.txt must define FRUGAL_SOURCE_DIR for test_consumer"
#endif

namespace fs = std::filesystem;

namespace {

// Expected output: 64 samples / batch 16 = 4 steps per epoch, 2 epochs.
constexpr const char* kExpected = "consumer ok 8";

using frugal::testing::shell_quote;

std::string read_text(const fs::path& path) { return frugal::testing::read_text(path.string()); }

/// The last `lines` lines of `text`.
std::string tail(const std::string& text, int lines = 40) {
  if (text.empty()) return "(no output)";
  size_t pos = text.size();
  for (int n = 0; n <= lines; ++n) {
    if (pos == 0) return text;
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

struct Result {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

/// Runs `command` through the shell, stdout and stderr to `log`; returns its exit code and output.
Result run(const std::string& command, const fs::path& log) {
  const std::string full = "( " + command + " ) > " + shell_quote(log.string()) + " 2>&1";
  { std::ofstream(log.string() + ".cmd") << command << "\n"; }
  const int status = std::system(full.c_str());
  Result r;
  r.exit_code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  r.output = read_text(log);
  return r;
}

/// Fails the current test (and returns false) unless `r` exited 0; shows the command and log tail.
::testing::AssertionResult succeeded(const std::string& what, const Result& r,
                                     const fs::path& log) {
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  const std::string signal =
      r.exit_code > 128 ? " (killed by signal " + std::to_string(r.exit_code - 128) + ")" : "";
  return ::testing::AssertionFailure() << what << " failed with exit code " << r.exit_code << signal
                                       << "; log " << log << ", its last lines:\n"
                                       << tail(r.output);
}

std::string cmake() { return shell_quote(FRUGAL_CMAKE_COMMAND); }

/// Configure arguments shared by both modes: same generator, compiler and build type as this
/// build, and this build's LibTorch.
std::string common_configure_args() {
  std::string args = " -G " + shell_quote(FRUGAL_CMAKE_GENERATOR);
  const std::string make_program = FRUGAL_CMAKE_MAKE_PROGRAM;
  if (!make_program.empty()) args += " -DCMAKE_MAKE_PROGRAM=" + shell_quote(make_program);
  args += " -DCMAKE_CXX_COMPILER=" + shell_quote(FRUGAL_CXX_COMPILER);
  const std::string build_type = FRUGAL_BUILD_TYPE;
  args += " -DCMAKE_BUILD_TYPE=" + shell_quote(build_type.empty() ? "Release" : build_type);
  const std::string torch_dir = FRUGAL_TORCH_DIR;
  if (!torch_dir.empty()) args += " -DTorch_DIR=" + shell_quote(torch_dir);
  args += " -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON";
  return args;
}

std::string build_command(const fs::path& build_dir) {
  std::string cmd = cmake() + " --build " + shell_quote(build_dir.string());
  if (std::string(FRUGAL_CMAKE_GENERATOR).find("Ninja") == std::string::npos)
    cmd += " --parallel 2";
  return cmd;
}

/// Value of `name` in build_dir/CMakeCache.txt ("" if absent).
std::string cache_value(const fs::path& build_dir, const std::string& name) {
  std::istringstream in(read_text(build_dir / "CMakeCache.txt"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + ":", 0) == 0) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) return line.substr(eq + 1);
    }
  }
  return "";
}

/// A note when a public header is newer than this build's library: in a tree being edited, the
/// installed headers then describe another library than the installed one (bad layouts, crashes).
std::string stale_note() {
#ifdef FRUGAL_LIBRARY_FILE
  std::error_code ec;
  const auto built = fs::last_write_time(FRUGAL_LIBRARY_FILE, ec);
  if (ec) return "";
  for (const auto& entry :
       fs::recursive_directory_iterator(fs::path(FRUGAL_SOURCE_DIR) / "include", ec)) {
    if (entry.is_regular_file() && entry.last_write_time() > built)
      return "\nnote: " + entry.path().string() + " is newer than " + FRUGAL_LIBRARY_FILE +
             ": rebuild frugal before this test";
  }
#endif
  return "";
}

/// Runs the built consumer and checks its output.
void run_consumer(const fs::path& build_dir, const fs::path& dir) {
  const fs::path exe = build_dir / "consumer";
  ASSERT_TRUE(fs::exists(exe)) << exe << " was not built";
  const fs::path log = dir / "run.log";
  const Result r = run(shell_quote(exe.string()) + " " + shell_quote((dir / "root").string()), log);
  ASSERT_TRUE(succeeded("running the consumer", r, log)) << stale_note();
  EXPECT_NE(r.output.find(kExpected), std::string::npos)
      << "expected \"" << kExpected << "\" in the consumer's output:\n"
      << tail(r.output) << stale_note();
}

const fs::path kConsumerSource = fs::path(FRUGAL_SOURCE_DIR) / "tests/integration/consumer";

}  // namespace

// (a) install this build's library (install component "frugal": the library, its headers and
// package files; other installed programs need not be built), then find_package(frugal).
TEST(Consumer, FindPackageFromInstalledPrefix) {
  const fs::path dir = frugal::testing::temp_dir("consumer_package");
  const fs::path prefix = dir / "prefix";
  const fs::path build = dir / "build";

  const fs::path install_log = dir / "install.log";
  Result r = run(cmake() + " --install " + shell_quote(FRUGAL_BINARY_DIR) +
                     " --component frugal --prefix " + shell_quote(prefix.string()),
                 install_log);
  ASSERT_TRUE(succeeded("cmake --install", r, install_log));

  // The package config and the umbrella header are installed.
  fs::path config;
  for (const auto& entry : fs::recursive_directory_iterator(prefix))
    if (entry.path().filename() == "frugalConfig.cmake") config = entry.path();
  ASSERT_FALSE(config.empty()) << "no frugalConfig.cmake under " << prefix << "; install log:\n"
                               << tail(r.output);
  EXPECT_TRUE(fs::exists(config.parent_path() / "frugalConfigVersion.cmake"));
  EXPECT_TRUE(fs::exists(config.parent_path() / "frugalTargets.cmake"));
  EXPECT_TRUE(fs::exists(prefix / "include/frugal/frugal.h"));

  const fs::path configure_log = dir / "configure.log";
  r = run(cmake() + " -S " + shell_quote(kConsumerSource.string()) + " -B " +
              shell_quote(build.string()) + common_configure_args() +
              " -DFRUGAL_CONSUMER_MODE=package" +
              " -DCMAKE_PREFIX_PATH=" + shell_quote(prefix.string()),
          configure_log);
  ASSERT_TRUE(succeeded("configuring the consumer (find_package)", r, configure_log));
  // It found the package just installed, not another one.
  EXPECT_EQ(fs::weakly_canonical(cache_value(build, "frugal_DIR")),
            fs::weakly_canonical(config.parent_path()));

  const fs::path build_log = dir / "build.log";
  r = run(build_command(build), build_log);
  ASSERT_TRUE(succeeded("building the consumer (find_package)", r, build_log));

  run_consumer(build, dir);
}

// (b) add_subdirectory(<frugal source>) from the consumer: builds the library again (tests,
// examples and benchmarks off), with ccache when this build uses it.
TEST(Consumer, AddSubdirectoryOfSourceTree) {
#ifndef FRUGAL_TEST_CONSUMER_SUBDIRECTORY
  GTEST_SKIP() << "off in this build (FRUGAL_TEST_CONSUMER_SUBDIRECTORY, tests/CMakeLists.txt): "
                  "it compiles the library again; the 1.13 build runs it";
#endif
  const fs::path dir = frugal::testing::temp_dir("consumer_subdirectory");
  const fs::path build = dir / "build";

  std::string args = common_configure_args();
  std::string env;
  const std::string ccache = FRUGAL_CCACHE_PROGRAM;
  if (!ccache.empty() && fs::exists(ccache)) {
    args += " -DCMAKE_CXX_COMPILER_LAUNCHER=" + shell_quote(ccache);
    // As the top-level build sets it: precompiled headers need this to get cache hits.
    env = "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime ";
  }
  const fs::path configure_log = dir / "configure.log";
  Result r = run(cmake() + " -S " + shell_quote(kConsumerSource.string()) + " -B " +
                     shell_quote(build.string()) + args + " -DFRUGAL_CONSUMER_MODE=subdirectory" +
                     " -DFRUGAL_SOURCE=" + shell_quote(FRUGAL_SOURCE_DIR) +
                     " -DFRUGAL_BUILD_TESTS=OFF -DFRUGAL_BUILD_EXAMPLES=OFF" +
                     " -DFRUGAL_BUILD_BENCH=OFF -DFRUGAL_USE_PCH=ON",
                 configure_log);
  ASSERT_TRUE(succeeded("configuring the consumer (add_subdirectory)", r, configure_log));

  const fs::path build_log = dir / "build.log";
  r = run(env + build_command(build), build_log);
  ASSERT_TRUE(succeeded("building the consumer (add_subdirectory)", r, build_log));
  // A dependency builds the library, not frugal's tests or examples.
  EXPECT_FALSE(fs::exists(build / "frugal/examples")) << "examples were configured";
  EXPECT_FALSE(fs::exists(build / "frugal/tests")) << "tests were configured";

  run_consumer(build, dir);
}

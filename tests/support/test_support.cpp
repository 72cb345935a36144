#include "test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "free_port.h"

namespace frugal::testing {

std::string temp_dir(const std::string& name) {
  const char* root = std::getenv("FRUGAL_TEST_TMP");
  std::filesystem::path dir = std::filesystem::path(root ? root : "/tmp/frugal_tests") / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

ToyData make_toy_data(int64_t n, int64_t features, int64_t classes, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor centers = torch::randn({classes, features}, gen) * 3.0;
  at::Tensor y = torch::randint(classes, {n}, gen, torch::kLong);
  at::Tensor x = centers.index_select(0, y) + torch::randn({n, features}, gen);
  return {x, y};
}

std::string params_sha256(torch::nn::Module& module) { return frugal::params_sha256(module); }

TrainerOptions quiet_options(const std::string& dir) {
  return TrainerOptions()
      .enable_progress_bar(false)
      .logger(false)
      .accelerator("cpu")
      .num_sanity_val_steps(0)
      .default_root_dir(dir.empty() ? temp_dir("default") : dir);
}

Child::Child(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
}

Child::~Child() {
  if (!done_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    wait();
  }
}

void Child::kill(int signo) {
  if (!done_) ::kill(pid_, signo);
}

int Child::wait() {
  if (!done_) {
    ::waitpid(pid_, &status_, 0);
    done_ = true;
  }
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : -WTERMSIG(status_);
}

bool Child::running() {
  if (done_) return false;
  if (::waitpid(pid_, &status_, WNOHANG) == pid_) done_ = true;
  return !done_;
}

int free_port() { return tools::free_port(); }

bool wait_for_rewrite(Child& child, const std::string& path, int timeout_s) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool existed = fs::exists(path, ec);
  const auto before = existed ? fs::last_write_time(path, ec) : fs::file_time_type();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (child.running() && std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(path, ec) && (!existed || fs::last_write_time(path, ec) != before)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string ProgramRun::describe() const {
  return "exit code " + std::to_string(exit_code) + "\n--- stdout:\n" + out + "\n--- stderr:\n" +
         err;
}

ProgramRun run_program(const std::string& program, const std::string& args, const std::string& dir,
                       const std::string& name) {
  const std::filesystem::path out = std::filesystem::path(dir) / (name + ".out");
  const std::filesystem::path err = std::filesystem::path(dir) / (name + ".err");
  const std::string cmd = "cd " + shell_quote(dir) + " && " + shell_quote(program) + " " + args +
                          " > " + shell_quote(out.string()) + " 2> " + shell_quote(err.string());
  const int status = std::system(cmd.c_str());
  ProgramRun r;
  r.exit_code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  r.out = read_text(out.string());
  r.err = read_text(err.string());
  return r;
}

}  // namespace frugal::testing

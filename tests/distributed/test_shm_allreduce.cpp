// ShmAllReduce (src/distributed/shm_allreduce.h): sums across real forked processes, compared bit
// for bit with the sums computed here; failures (dead or hanging peer, missing segment, bad input)
// are clear.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "distributed/shm_allreduce.h"
#include "test_support.h"

namespace {

using frugal::detail::ShmAllReduce;
using frugal::testing::error_message;
using std::chrono::milliseconds;

constexpr int64_t kCapacity = 4096;  // small, so that 10000 floats go in several pieces
constexpr milliseconds kTimeout(10000);

// A segment name no other test (or test run) uses.
std::string unique_name() {
  static int counter = 0;
  return "/frugal-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

std::string test_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return frugal::testing::temp_dir(std::string("shm_allreduce_") + info->test_suite_name() + "_" +
                                   info->name());
}

void write_bytes(const std::string& path, const void* data, size_t n) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string tensor_bytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

// Rank r's input for call `call`: random, reproducible here and in the child.
at::Tensor input(int64_t rank, int64_t call, int64_t numel, at::ScalarType dtype) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 * call + rank + 1);
  if (at::isIntegralType(dtype, /*includeBool=*/false)) {
    return at::randint(-1000000, 1000000, {numel}, gen, at::kLong).to(dtype);
  }
  return at::randn({numel}, gen, at::kFloat).to(dtype);
}

// (x0 + x1) + ... + x_{W-1}: what every rank must get, bit for bit.
at::Tensor expected_sum(int64_t world_size, int64_t call, int64_t numel, at::ScalarType dtype) {
  at::Tensor sum = input(0, call, numel, dtype);
  for (int64_t r = 1; r < world_size; ++r) sum = sum + input(r, call, numel, dtype);
  return sum;
}

struct Outcome {
  int exit_code = -1;   // 0: body returned; 1: it threw; -signal: killed
  std::string message;  // "ok" or the exception's text
  double seconds = 0;   // how long body ran
};

// Runs body(rank, dir) in `world_size` forked processes and waits for them (killing them all
// after 30 s). With `kill_rest_after_rank0`, the others are killed once rank 0 has ended (for
// peers that hang on purpose).
std::vector<Outcome> run_ranks(int64_t world_size,
                               const std::function<void(int64_t, const std::string&)>& body,
                               const std::string& dir, bool kill_rest_after_rank0 = false) {
  std::vector<pid_t> pids;
  for (int64_t rank = 0; rank < world_size; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      at::set_num_threads(1);
      const auto start = std::chrono::steady_clock::now();
      int code = 0;
      std::string message = "ok";
      try {
        body(rank, dir);
      } catch (const std::exception& e) {
        code = 1;
        message = e.what();
      }
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::ofstream(dir + "/rank" + std::to_string(rank) + ".msg") << s << "\n" << message;
      ::_exit(code);  // not back into GoogleTest
    }
    pids.push_back(pid);
  }
  std::vector<Outcome> outcomes(world_size);
  std::vector<bool> done(world_size, false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (int64_t left = world_size; left > 0;) {
    for (int64_t r = 0; r < world_size; ++r) {
      if (done[r]) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
      done[r] = true;
      --left;
      outcomes[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      if (r == 0 && kill_rest_after_rank0) {
        for (int64_t q = 1; q < world_size; ++q) ::kill(pids[q], SIGKILL);
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (int64_t r = 0; r < world_size; ++r) {
        if (!done[r]) ::kill(pids[r], SIGKILL);
      }
      ADD_FAILURE() << "ranks still running after 30 s; killed";
      kill_rest_after_rank0 = false;
    }
    std::this_thread::sleep_for(milliseconds(2));
  }
  for (int64_t r = 0; r < world_size; ++r) {
    std::istringstream in(frugal::testing::read_text(dir + "/rank" + std::to_string(r) + ".msg"));
    in >> outcomes[r].seconds;
    in.get();
    std::getline(in, outcomes[r].message, '\0');
  }
  return outcomes;
}

std::string describe(const std::vector<Outcome>& outcomes) {
  std::string s;
  for (size_t r = 0; r < outcomes.size(); ++r) {
    s += "rank " + std::to_string(r) + ": exit " + std::to_string(outcomes[r].exit_code) + ", " +
         outcomes[r].message + "\n";
  }
  return s;
}

std::string result_path(const std::string& dir, int64_t rank) {
  return dir + "/rank" + std::to_string(rank) + ".bin";
}

// Every rank all-reduces one tensor per entry of `numels` (call c: numels[c] elements of dtype)
// and appends the results to its file; the parent checks them all, bit for bit.
void expect_sums(int64_t world_size, const std::vector<int64_t>& numels, at::ScalarType dtype,
                 int64_t capacity = kCapacity) {
  const std::string dir = test_dir();
  const std::string name = unique_name();
  const auto outcomes = run_ranks(
      world_size,
      [&](int64_t rank, const std::string& d) {
        auto shm = ShmAllReduce::open(name, rank, world_size, capacity, kTimeout);
        std::string all;
        for (size_t c = 0; c < numels.size(); ++c) {
          at::Tensor t = input(rank, static_cast<int64_t>(c), numels[c], dtype);
          shm->all_reduce_sum(t);
          all += tensor_bytes(t);
        }
        write_bytes(result_path(d, rank), all.data(), all.size());
      },
      dir);
  for (const auto& o : outcomes) ASSERT_EQ(o.exit_code, 0) << describe(outcomes);
  std::string expected;
  for (size_t c = 0; c < numels.size(); ++c) {
    expected += tensor_bytes(expected_sum(world_size, static_cast<int64_t>(c), numels[c], dtype));
  }
  for (int64_t r = 0; r < world_size; ++r) {
    const std::string got = read_bytes(result_path(dir, r));
    ASSERT_EQ(got.size(), expected.size()) << "rank " << r;
    EXPECT_TRUE(got == expected) << "rank " << r << "'s sums differ from (x0 + x1) + ...";
  }
  EXPECT_NE(::access(("/dev/shm" + name).c_str(), F_OK), 0) << "segment left behind";
}

class ShmAllReduceTest : public ::testing::Test {
 protected:
  // No OpenMP threads in this process before it forks.
  void SetUp() override { at::set_num_threads(1); }
};

TEST_F(ShmAllReduceTest, TwoRanksSumExactly) { expect_sums(2, {1, 7, 1000, 10000}, at::kFloat); }

TEST_F(ShmAllReduceTest, ThreeRanksSumInRankOrder) {
  expect_sums(3, {1, 7, 1000, 10000}, at::kFloat);
}

TEST_F(ShmAllReduceTest, OtherDtypes) {
  for (auto dtype : {at::kDouble, at::kLong, at::kBFloat16, at::kInt, at::kHalf}) {
    SCOPED_TRACE(c10::toString(dtype));
    expect_sums(3, {5, 3000}, dtype);
    expect_sums(2, {5, 3000}, dtype);
  }
}

TEST_F(ShmAllReduceTest, EmptyTensor) { expect_sums(2, {0, 3, 0}, at::kFloat); }

TEST_F(ShmAllReduceTest, ManyConsecutiveCallsStayCorrect) {
  std::vector<int64_t> numels;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor sizes = at::randint(1, 3000, {200}, gen, at::kLong);
  for (int64_t i = 0; i < 200; ++i) numels.push_back(sizes[i].item<int64_t>());
  expect_sums(2, numels, at::kFloat);
  expect_sums(3, numels, at::kFloat, /*capacity=*/1000);  // not a multiple of 64 bytes
}

/// A survivor's outcome when rank `dead` exited: an error naming it, well before the timeout.
void expect_reports_exit(const Outcome& outcome, int64_t dead) {
  ASSERT_EQ(outcome.exit_code, 1) << outcome.message;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "rank " + std::to_string(dead), outcome.message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "has exited", outcome.message);
  EXPECT_LT(outcome.seconds, 2.0) << outcome.message;
}

TEST_F(ShmAllReduceTest, DeadPeerIsReportedQuickly) {
  const std::string name = unique_name();
  const auto outcomes = run_ranks(
      2,
      [&](int64_t rank, const std::string&) {
        auto shm = ShmAllReduce::open(name, rank, 2, kCapacity, kTimeout);
        if (rank == 1) ::_exit(0);  // exits without all-reducing
        at::Tensor t = at::ones({100});
        shm->all_reduce_sum(t);
      },
      test_dir());
  expect_reports_exit(outcomes[0], 1);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, name, outcomes[0].message);
}

TEST_F(ShmAllReduceTest, DeadPeerAmongThreeIsReportedByBoth) {
  const std::string name = unique_name();
  const auto outcomes = run_ranks(
      3,
      [&](int64_t rank, const std::string&) {
        auto shm = ShmAllReduce::open(name, rank, 3, kCapacity, kTimeout);
        at::Tensor t = at::ones({100});
        shm->all_reduce_sum(t);
        if (rank == 2) ::_exit(0);  // dies before the second call
        shm->all_reduce_sum(t);
      },
      test_dir());
  for (int64_t r : {0, 1}) expect_reports_exit(outcomes[r], 2);
}

TEST_F(ShmAllReduceTest, DeadPeerNotYetReapedIsReportedQuickly) {
  // Launchers may reap their children only every few seconds: until then a dead rank is a zombie,
  // which kill(pid, 0) does not tell from a live process. Here rank 0 is rank 1's parent and
  // never reaps it.
  const std::string name = unique_name();
  const auto outcomes = run_ranks(
      1,
      [&](int64_t, const std::string&) {
        if (::fork() == 0) {
          ShmAllReduce::open(name, 1, 2, kCapacity, kTimeout);
          ::_exit(0);
        }
        auto shm = ShmAllReduce::open(name, 0, 2, kCapacity, kTimeout);
        at::Tensor t = at::ones({100});
        shm->all_reduce_sum(t);
      },
      test_dir());
  expect_reports_exit(outcomes[0], 1);
}

TEST_F(ShmAllReduceTest, HangingPeerTimesOut) {
  const std::string name = unique_name();
  const auto outcomes = run_ranks(
      2,
      [&](int64_t rank, const std::string&) {
        auto shm = ShmAllReduce::open(name, rank, 2, kCapacity, milliseconds(500));
        if (rank == 1) std::this_thread::sleep_for(std::chrono::seconds(20));  // killed earlier
        at::Tensor t = at::ones({100});
        const std::string first = error_message([&] { shm->all_reduce_sum(t); });
        // Unusable afterwards: a later call fails at once instead of waiting again.
        const std::string second = error_message([&] { shm->all_reduce_sum(t); });
        if (second.find("unusable") == std::string::npos) throw std::runtime_error(second);
        throw std::runtime_error(first);
      },
      test_dir(), /*kill_rest_after_rank0=*/true);
  ASSERT_EQ(outcomes[0].exit_code, 1) << describe(outcomes);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "rank 0 waited more than 0.5 s for rank 1",
                      outcomes[0].message);
  EXPECT_GE(outcomes[0].seconds, 0.5);
  EXPECT_LT(outcomes[0].seconds, 3.0);
}

TEST_F(ShmAllReduceTest, OpenFailsWhenTheSegmentDoesNotAppear) {
  const std::string name = unique_name();
  const auto start = std::chrono::steady_clock::now();
  const std::string message =
      error_message([&] { ShmAllReduce::open(name, 1, 2, kCapacity, milliseconds(200)); });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, name, message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "rank 1 of 2", message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "did not appear", message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "No such file or directory", message);
}

TEST_F(ShmAllReduceTest, RankZeroTimesOutWhenAPeerNeverAttaches) {
  const std::string name = unique_name();
  const std::string message =
      error_message([&] { ShmAllReduce::open(name, 0, 2, kCapacity, milliseconds(200)); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "waited more than 0.2 s for rank 1", message);
  EXPECT_NE(::access(("/dev/shm" + name).c_str(), F_OK), 0) << "segment left behind";
}

TEST_F(ShmAllReduceTest, SegmentIsUnlinkedOnceAllAttached) {
  const std::string name = unique_name();
  const auto outcomes = run_ranks(
      2,
      [&](int64_t rank, const std::string&) {
        auto shm = ShmAllReduce::open(name, rank, 2, kCapacity, kTimeout);
        // Rank 0 unlinks before open() returns; rank 1 may get there first.
        if (rank == 0 && ::access(("/dev/shm" + name).c_str(), F_OK) == 0) {
          throw std::runtime_error("/dev/shm" + name + " still exists after open()");
        }
        at::Tensor t = at::ones({10});
        shm->all_reduce_sum(t);
      },
      test_dir());
  for (const auto& o : outcomes) ASSERT_EQ(o.exit_code, 0) << describe(outcomes);
  EXPECT_NE(::access(("/dev/shm" + name).c_str(), F_OK), 0);
}

TEST_F(ShmAllReduceTest, MismatchedArgumentsAtOpen) {
  const std::string name = unique_name();
  const auto outcomes = run_ranks(
      2,
      [&](int64_t rank, const std::string&) {
        ShmAllReduce::open(name, rank, 2, rank == 0 ? kCapacity : 2 * kCapacity,
                           milliseconds(1000));
      },
      test_dir(), /*kill_rest_after_rank0=*/false);
  ASSERT_EQ(outcomes[1].exit_code, 1) << describe(outcomes);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "same world_size and capacity_bytes",
                      outcomes[1].message);
  EXPECT_EQ(outcomes[0].exit_code, 1) << describe(outcomes);  // rank 0 times out
}

TEST_F(ShmAllReduceTest, BadNamesAndArguments) {
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "segment name",
                      error_message([] { ShmAllReduce::open("frugal", 0, 2, 64, kTimeout); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "segment name",
                      error_message([] { ShmAllReduce::open("/a/b", 0, 2, 64, kTimeout); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "rank must be in [0, 2), got 2",
                      error_message([] { ShmAllReduce::open("/x", 2, 2, 64, kTimeout); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "capacity_bytes must be >= 1",
                      error_message([] { ShmAllReduce::open("/x", 0, 2, 0, kTimeout); }));
}

TEST_F(ShmAllReduceTest, WorldSizeOneLeavesTheTensorAlone) {
  const std::string name = unique_name();
  auto shm = ShmAllReduce::open(name, 0, 1, kCapacity, kTimeout);
  EXPECT_EQ(shm->rank(), 0);
  EXPECT_EQ(shm->world_size(), 1);
  EXPECT_NE(::access(("/dev/shm" + name).c_str(), F_OK), 0);
  at::Tensor t = input(0, 0, 10000, at::kFloat);
  const std::string before = tensor_bytes(t);
  shm->all_reduce_sum(t);
  EXPECT_EQ(tensor_bytes(t), before);
}

TEST_F(ShmAllReduceTest, BadTensorsAreRefused) {
  auto shm = ShmAllReduce::open(unique_name(), 0, 1, 4, kTimeout);
  at::Tensor strided = at::ones({4, 4}).t();
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "must be contiguous",
                      error_message([&] { shm->all_reduce_sum(strided); }));
  at::Tensor meta = at::empty({4}, at::TensorOptions().device(at::kMeta));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "must be a dense CPU tensor",
                      error_message([&] { shm->all_reduce_sum(meta); }));
  at::Tensor flags = at::ones({4}, at::kBool);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "cannot sum tensors of dtype Bool",
                      error_message([&] { shm->all_reduce_sum(flags); }));
  at::Tensor wide = at::ones({4}, at::kDouble);  // 8-byte elements, 4-byte capacity
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "capacity_bytes (4) is smaller than one Double",
                      error_message([&] { shm->all_reduce_sum(wide); }));
  at::Tensor undefined;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "undefined",
                      error_message([&] { shm->all_reduce_sum(undefined); }));
}

TEST_F(ShmAllReduceTest, RanksThatDisagreeOnTheTensorAreTold) {
  const std::string name = unique_name();
  const std::string dir = test_dir();
  const auto outcomes = run_ranks(
      3,
      [&](int64_t rank, const std::string& d) {
        auto shm = ShmAllReduce::open(name, rank, 3, kCapacity, kTimeout);
        at::Tensor t = rank == 2 ? at::ones({999}) : at::ones({1000});
        const std::string message = error_message([&] { shm->all_reduce_sum(t); });
        // Every rank stopped at the same barrier: the next call works.
        at::Tensor u = at::full({10}, static_cast<double>(rank));
        shm->all_reduce_sum(u);
        if (!at::equal(u, at::full({10}, 3.0))) throw std::runtime_error("wrong sum after error");
        throw std::runtime_error(message);
      },
      dir);
  for (int64_t r = 0; r < 3; ++r) {
    ASSERT_EQ(outcomes[r].exit_code, 1) << describe(outcomes);
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, "ranks disagree on the tensor",
                        outcomes[r].message);
    EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                        r == 2 ? "999 elements of Float, rank 0 has 1000"
                               : "1000 elements of Float, rank 2 has 999",
                        outcomes[r].message);
  }
}

TEST_F(ShmAllReduceTest, RanksThatDisagreeOnTheDtypeAreTold) {
  const std::string name = unique_name();
  const auto outcomes = run_ranks(
      2,
      [&](int64_t rank, const std::string&) {
        auto shm = ShmAllReduce::open(name, rank, 2, kCapacity, kTimeout);
        at::Tensor t = at::ones({100}, rank == 0 ? at::kFloat : at::kInt);
        shm->all_reduce_sum(t);
      },
      test_dir());
  for (int64_t r = 0; r < 2; ++r) {
    ASSERT_EQ(outcomes[r].exit_code, 1) << describe(outcomes);
    EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                        r == 0 ? "100 elements of Float, rank 1 has 100 elements of Int"
                               : "100 elements of Int, rank 0 has 100 elements of Float",
                        outcomes[r].message);
  }
}

}  // namespace

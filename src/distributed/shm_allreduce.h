// Sum all-reduce among the processes of one machine through a POSIX shared-memory segment: the
// CPU data-parallel path's replacement for Gloo over TCP loopback when all ranks share a host.
// See Note [Shared-memory all-reduce] in shm_allreduce.cpp.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace frugal::detail {

/// True when process `pid` no longer runs: gone, or a zombie its parent has not reaped yet.
bool process_exited(int64_t pid);

/// Sum all-reduce among processes on one machine through a POSIX shared-memory segment.
///
///   auto shm = ShmAllReduce::open("/frugal-1a2b3c", rank, world_size, 4 << 20,
///                                 std::chrono::seconds(30));
///   shm->all_reduce_sum(grad_bucket);  // every rank, same numel and dtype, same order
class ShmAllReduce {
 public:
  /// Collective over `world_size` processes: rank 0 creates the segment `name` (must start with
  /// '/', e.g. "/frugal-<random>"; O_CREAT|O_EXCL), the others open it, retrying until it exists
  /// or `timeout` passes. `capacity_bytes`: the largest piece reduced at once (bigger tensors go in
  /// pieces). Each rank records its pid in the header. Once every rank has attached, rank 0
  /// shm_unlink()s the name, so nothing is left in /dev/shm even after a crash (open() returns
  /// only after all ranks attached, i.e. it is itself a barrier). Throws frugal::Error naming the
  /// segment, rank and reason (errno text) on failure. With world_size 1 no segment is made and
  /// all_reduce_sum only checks its argument.
  static std::unique_ptr<ShmAllReduce> open(const std::string& name, int64_t rank,
                                            int64_t world_size, int64_t capacity_bytes,
                                            std::chrono::milliseconds timeout);
  ~ShmAllReduce();  // munmap
  ShmAllReduce(const ShmAllReduce&) = delete;
  ShmAllReduce& operator=(const ShmAllReduce&) = delete;

  /// Sums `tensor` (contiguous, CPU, any floating, complex or integral dtype but bool) over all
  /// ranks, in place. Every rank must call it with the same numel and dtype, in the same order.
  /// The result is bit-identical on every rank (each chunk is summed by one rank, in rank order
  /// 0..W-1). Blocks until done. Throws frugal::Error when a peer does not arrive within the
  /// timeout, when a peer process has exited (noticed within ~20 ms), or when the ranks' numel or
  /// dtype differ. After a timeout or a dead peer the object is unusable (later calls throw).
  void all_reduce_sum(at::Tensor& tensor);

  /// How long later waits may take (open() used the one it was given).
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }

 private:
  ShmAllReduce(std::string name, int64_t rank, int64_t world_size, int64_t capacity_bytes,
               std::chrono::milliseconds timeout);
  void attach(bool create);
  void barrier(const char* what);

  std::string name_;
  int64_t rank_;
  int64_t world_size_;
  int64_t capacity_bytes_;
  std::chrono::milliseconds timeout_;
  char* base_ = nullptr;  // the mapping (nullptr for world_size 1)
  size_t mapped_bytes_ = 0;
  size_t slots_offset_ = 0;  // where slot 0 starts in the mapping
  size_t slot_stride_ = 0;   // capacity_bytes_ rounded up to whole pages
  uint64_t epoch_ = 0;       // barriers this rank has passed
  uint64_t calls_ = 0;       // all_reduce_sum calls, for messages
  bool failed_ = false;      // a peer timed out or died: the counters no longer agree
};

}  // namespace frugal::detail

// Sum all-reduce among the processes of one machine through a POSIX shared-memory segment.
#include "distributed/shm_allreduce.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <thread>

#include "frugal/error.h"

namespace frugal::detail {

// Note [Shared-memory all-reduce]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Data-parallel training on CPU all-reduces gradients over Gloo, i.e. TCP on loopback. On a
// 2-core VM a 1.6 MB float32 all-reduce between 2 ranks costs ~1.2 ms of a ~10 ms step: the bytes
// go through the kernel twice per hop, and every hop hands work between Gloo's threads and wakes
// a sleeping one. Ranks on one machine can instead meet in shared memory (as DeepSpeed's CPU shm
// all-reduce does): each byte is copied in once, summed once and copied out once, and nobody
// sleeps: 0.27 ms instead of 1.2 ms for those 1.6 MB (2 processes, same VM).
//
// The segment (one per process group, unlinked as soon as everyone has mapped it):
//
//   [header: magic, version, world_size, capacity]                   one cache line
//   [rank 0: arrival counter, pid, numel, dtype] ... [rank W-1: ...]  one cache line each
//   [slot 0] ... [slot W-1] [result]                                  capacity bytes each
//
// A tensor is reduced in pieces of at most `capacity` bytes; per piece:
//   A. rank r copies its piece into slot r;                                        barrier
//   B. rank r sums chunk r of the piece (the piece cut into W nearly equal, 64-byte aligned
//      ranges) over slots 0, 1, ..., W-1, in that order, into the result area;     barrier
//   C. every rank copies the result area into its tensor.
// Every element is summed by exactly one rank in one fixed order, so all ranks get the same bits
// (and for W = 2 the same bits as x0 + x1), and the summing work is split W ways.
//
// Two barriers per piece are enough; no barrier is needed after phase C:
//  - rank r rewrites its slot (phase A of the next piece or call) only after passing the phase-B
//    barrier, which every rank reaches only after it has finished reading the slots for its chunk;
//  - the result area is rewritten (phase B of the next piece or call) only after the next phase-A
//    barrier, which every rank reaches only after finishing phase C, its read of the result area.
// The same argument covers the per-call numel/dtype in the rank's line: written before the first
// phase-A barrier of a call, read by the peers right after it, and not rewritten before the
// following phase-B barrier (or, when the ranks disagree and all throw, an extra barrier).
// Each rank sums its chunk on its own thread, not with ATen's intra-op threads: the ranks already
// sum in parallel, and more threads than cores fight the peers' spinning (12 ms instead of 0.3).
//
// The barrier is one monotonic counter per rank, in its own cache line: a rank stores its
// counter + 1 (release; this publishes what it wrote before) and waits until every counter has
// reached its own (acquire). Waiting spins with std::this_thread::yield(), never sleeps: waking a
// sleeping vCPU costs milliseconds on VMs, more than the whole all-reduce. While it waits, it reads
// the clock every few hundred spins (timeout) and checks every ~20 ms that the ranks it waits for
// still exist, so a crashed peer is reported at once rather than after the timeout.
//
// Rank 0 creates the segment with O_EXCL and unlinks its name once every rank has attached (open()
// ends with a barrier), so nothing is left in /dev/shm even if a rank is killed later.

namespace {

constexpr uint64_t kMagic = 0x66727567616c5348ull;  // "frugalSH"
constexpr uint64_t kVersion = 1;
constexpr size_t kCacheLine = 64;
constexpr size_t kPage = 4096;
constexpr auto kPidCheckInterval = std::chrono::milliseconds(20);
constexpr uint32_t kSpinsPerClockCheck = 256;

static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "the shared-memory barrier needs lock-free 64-bit atomics");
static_assert(std::atomic<int64_t>::is_always_lock_free,
              "the shared-memory barrier needs lock-free 64-bit atomics");

struct alignas(kCacheLine) SegmentHeader {
  std::atomic<uint64_t> magic;  // stored last by rank 0 (release): the header is ready
  uint64_t version;
  int64_t world_size;
  int64_t capacity_bytes;
};

// One per rank, written only by that rank.
struct alignas(kCacheLine) RankLine {
  std::atomic<uint64_t> arrived;  // barriers this rank has reached
  std::atomic<int64_t> pid;       // 0 until the rank has attached
  int64_t numel;                  // of the current all_reduce_sum call
  int64_t dtype;                  // c10::ScalarType of the current call
};

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

std::string errno_text(int err) { return std::strerror(err); }

double seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

bool summable(at::ScalarType t) {
  return at::isFloatingType(t) || at::isComplexType(t) ||
         at::isIntegralType(t, /*includeBool=*/false);
}

// Where things are in the segment.
struct Layout {
  size_t slots_offset;
  size_t slot_stride;
  size_t total_bytes;

  Layout(int64_t world_size, int64_t capacity_bytes) {
    static_assert(sizeof(SegmentHeader) == kCacheLine && sizeof(RankLine) == kCacheLine);
    slots_offset = round_up(sizeof(SegmentHeader) + sizeof(RankLine) * world_size, kPage);
    slot_stride = round_up(static_cast<size_t>(capacity_bytes), kPage);
    total_bytes = slots_offset + slot_stride * (world_size + 1);  // W slots and the result
  }
};

RankLine* rank_lines(char* base) {
  return reinterpret_cast<RankLine*>(base + sizeof(SegmentHeader));
}
}  // namespace

// True when `pid` no longer runs: gone (ESRCH), or a zombie that its parent has not reaped yet
// (kill() still succeeds on those, and launchers may poll their children only every few seconds).
bool process_exited(int64_t pid) {
  if (pid <= 0) return false;
  if (::kill(static_cast<pid_t>(pid), 0) == -1) return errno == ESRCH;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%lld/stat", static_cast<long long>(pid));
  std::FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr || close[1] != ' ') return false;
  return close[2] == 'Z' || close[2] == 'X';
}

ShmAllReduce::ShmAllReduce(std::string name, int64_t rank, int64_t world_size,
                           int64_t capacity_bytes, std::chrono::milliseconds timeout)
    : name_(std::move(name)),
      rank_(rank),
      world_size_(world_size),
      capacity_bytes_(capacity_bytes),
      timeout_(timeout) {}

ShmAllReduce::~ShmAllReduce() {
  if (base_ != nullptr) ::munmap(base_, mapped_bytes_);
}

std::unique_ptr<ShmAllReduce> ShmAllReduce::open(const std::string& name, int64_t rank,
                                                 int64_t world_size, int64_t capacity_bytes,
                                                 std::chrono::milliseconds timeout) {
  FRUGAL_CHECK(world_size >= 1, "shared-memory all-reduce: world_size must be >= 1, got ",
               world_size);
  FRUGAL_CHECK(rank >= 0 && rank < world_size, "shared-memory all-reduce: rank must be in [0, ",
               world_size, "), got ", rank);
  FRUGAL_CHECK(capacity_bytes >= 1, "shared-memory all-reduce: capacity_bytes must be >= 1, got ",
               capacity_bytes);
  FRUGAL_CHECK(timeout.count() > 0, "shared-memory all-reduce: timeout must be > 0 ms, got ",
               timeout.count());
  FRUGAL_CHECK(name.size() >= 2 && name.size() <= 255 && name[0] == '/' &&
                   name.find('/', 1) == std::string::npos,
               "shared-memory all-reduce: segment name must be '/' followed by up to 254 "
               "characters other than '/', got \"",
               name, "\"");
  std::unique_ptr<ShmAllReduce> self(
      new ShmAllReduce(name, rank, world_size, capacity_bytes, timeout));
  if (world_size > 1) self->attach(/*create=*/rank == 0);
  return self;
}

void ShmAllReduce::attach(bool create) {
  const Layout layout(world_size_, capacity_bytes_);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  const std::string who =
      concat("shared-memory segment ", name_, " (rank ", rank_, " of ", world_size_, ")");
  const auto poll = [] { std::this_thread::sleep_for(std::chrono::milliseconds(1)); };

  int fd = -1;
  if (create) {
    fd = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    FRUGAL_CHECK(fd >= 0, "could not create ", who, ": ", errno_text(errno));
    if (::ftruncate(fd, static_cast<off_t>(layout.total_bytes)) != 0) {
      const int err = errno;
      ::close(fd);
      ::shm_unlink(name_.c_str());
      FRUGAL_CHECK(false, "could not size ", who, " to ", layout.total_bytes,
                   " bytes: ", errno_text(err));
    }
    // Reserve the pages now: a /dev/shm too small for them (Docker's default is 64 MiB) is then
    // an error here, not a SIGBUS at the first write beyond what it holds.
    if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(layout.total_bytes))) {
      ::close(fd);
      ::shm_unlink(name_.c_str());
      FRUGAL_CHECK(false, "could not reserve ", layout.total_bytes, " bytes for ", who, ": ",
                   errno_text(err), " (is /dev/shm too small?)");
    }
  } else {
    // Rank 0 may not have created it yet; and between its shm_open and ftruncate it is empty.
    while ((fd = ::shm_open(name_.c_str(), O_RDWR, 0)) < 0) {
      const int err = errno;
      FRUGAL_CHECK(err == ENOENT, "could not open ", who, ": ", errno_text(err));
      FRUGAL_CHECK(std::chrono::steady_clock::now() < deadline, who, " did not appear within ",
                   seconds(timeout_), " s: ", errno_text(err),
                   " (is rank 0 running, with the same segment name?)");
      poll();
    }
    struct stat st {};
    while (true) {
      if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        FRUGAL_CHECK(false, "could not stat ", who, ": ", errno_text(err));
      }
      if (st.st_size != 0) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        ::close(fd);
        FRUGAL_CHECK(false, who, " stayed empty for ", seconds(timeout_), " s");
      }
      poll();
    }
    if (static_cast<size_t>(st.st_size) != layout.total_bytes) {
      ::close(fd);
      FRUGAL_CHECK(false, who, " has ", st.st_size, " bytes, expected ", layout.total_bytes,
                   ": do all ranks pass the same world_size and capacity_bytes?");
    }
  }
  void* base =
      ::mmap(nullptr, layout.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  const int mmap_err = errno;
  ::close(fd);
  if (base == MAP_FAILED) {
    if (create) ::shm_unlink(name_.c_str());
    FRUGAL_CHECK(false, "could not map ", who, ": ", errno_text(mmap_err));
  }
  base_ = static_cast<char*>(base);
  mapped_bytes_ = layout.total_bytes;
  slots_offset_ = layout.slots_offset;
  slot_stride_ = layout.slot_stride;

  auto* header = reinterpret_cast<SegmentHeader*>(base_);
  RankLine* ranks = rank_lines(base_);
  try {
    if (create) {
      // ftruncate zero-filled the segment; construct the atomics in it, then publish the header.
      new (&header->magic) std::atomic<uint64_t>(0);
      header->version = kVersion;
      header->world_size = world_size_;
      header->capacity_bytes = capacity_bytes_;
      for (int64_t r = 0; r < world_size_; ++r) {
        new (&ranks[r].arrived) std::atomic<uint64_t>(0);
        new (&ranks[r].pid) std::atomic<int64_t>(0);
      }
      header->magic.store(kMagic, std::memory_order_release);
    } else {
      while (header->magic.load(std::memory_order_acquire) != kMagic) {
        FRUGAL_CHECK(std::chrono::steady_clock::now() < deadline, who,
                     " was not initialised by rank 0 within ", seconds(timeout_), " s");
        poll();
      }
      FRUGAL_CHECK(header->version == kVersion, who, " has layout version ", header->version,
                   ", this build uses ", kVersion);
      FRUGAL_CHECK(header->world_size == world_size_ && header->capacity_bytes == capacity_bytes_,
                   who, " was made for world_size ", header->world_size, " and capacity_bytes ",
                   header->capacity_bytes, ", this rank has ", world_size_, " and ",
                   capacity_bytes_);
    }
    ranks[rank_].pid.store(static_cast<int64_t>(::getpid()), std::memory_order_relaxed);
    barrier("open");
    // A segment left behind by a crashed run of the same name (that rank 0 then refused with
    // EEXIST) would carry old counters that pass the barrier at once; its ranks' pids are gone.
    for (int64_t r = 0; r < world_size_ && !create; ++r) {
      const int64_t pid = ranks[r].pid.load(std::memory_order_relaxed);
      FRUGAL_CHECK(pid > 0 && !process_exited(pid), who, ": rank ", r, " (pid ", pid,
                   ") is not running (it has exited, or the segment is left over from an earlier "
                   "run)");
    }
  } catch (...) {
    // The name is this run's: remove it so that nothing is left in /dev/shm.
    ::shm_unlink(name_.c_str());
    throw;
  }
  if (create) {
    FRUGAL_CHECK(::shm_unlink(name_.c_str()) == 0, "could not unlink ", who, ": ",
                 errno_text(errno));
  }
}

void ShmAllReduce::barrier(const char* what) {
  RankLine* ranks = rank_lines(base_);
  const uint64_t target = ++epoch_;
  ranks[rank_].arrived.store(target, std::memory_order_release);

  const auto start = std::chrono::steady_clock::now();
  auto last_pid_check = start;
  for (int64_t p = 0; p < world_size_; ++p) {
    if (p == rank_) continue;
    uint32_t spins = 0;
    while (ranks[p].arrived.load(std::memory_order_acquire) < target) {
      std::this_thread::yield();
      if (++spins % kSpinsPerClockCheck != 0) continue;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_pid_check >= kPidCheckInterval) {
        last_pid_check = now;
        // Every rank still missing, not only p: p may itself be stuck waiting for a dead one.
        for (int64_t q = 0; q < world_size_; ++q) {
          if (q == rank_ || ranks[q].arrived.load(std::memory_order_acquire) >= target) continue;
          const int64_t pid = ranks[q].pid.load(std::memory_order_relaxed);
          if (process_exited(pid)) {
            failed_ = true;
            FRUGAL_CHECK(false, "shared-memory all-reduce ", name_, ": rank ", q, " (pid ", pid,
                         ") has exited while rank ", rank_, " waited for it (", what, ", call ",
                         calls_, ")");
          }
        }
      }
      if (now - start > timeout_) {
        failed_ = true;
        const int64_t pid = ranks[p].pid.load(std::memory_order_relaxed);
        FRUGAL_CHECK(false, "shared-memory all-reduce ", name_, ": rank ", rank_,
                     " waited more than ", seconds(timeout_), " s for rank ", p, " (pid ", pid,
                     ") (", what, ", call ", calls_, ")");
      }
    }
  }
}

void ShmAllReduce::all_reduce_sum(at::Tensor& tensor) {
  FRUGAL_CHECK(!failed_, "shared-memory all-reduce ", name_, " (rank ", rank_,
               ") is unusable after an earlier timeout or dead peer");
  FRUGAL_CHECK(tensor.defined(), "shared-memory all-reduce: the tensor is undefined");
  FRUGAL_CHECK(tensor.device().is_cpu() && tensor.layout() == at::kStrided,
               "shared-memory all-reduce: the tensor must be a dense CPU tensor, got ",
               tensor.device(), " ", tensor.layout());
  FRUGAL_CHECK(tensor.is_contiguous(),
               "shared-memory all-reduce: the tensor must be contiguous, got sizes ",
               tensor.sizes(), " strides ", tensor.strides());
  FRUGAL_CHECK(summable(tensor.scalar_type()),
               "shared-memory all-reduce: cannot sum tensors of dtype ", tensor.scalar_type());
  const auto element_size = static_cast<int64_t>(tensor.element_size());
  FRUGAL_CHECK(element_size <= capacity_bytes_, "shared-memory all-reduce: capacity_bytes (",
               capacity_bytes_, ") is smaller than one ", tensor.scalar_type(), " element (",
               element_size, " bytes)");
  ++calls_;
  if (world_size_ == 1) return;

  RankLine* ranks = rank_lines(base_);
  const auto slot = [&](int64_t r) { return base_ + slots_offset_ + slot_stride_ * r; };
  char* const result = slot(world_size_);

  const int64_t numel = tensor.numel();
  const auto dtype = tensor.scalar_type();
  ranks[rank_].numel = numel;
  ranks[rank_].dtype = static_cast<int64_t>(dtype);

  c10::InferenceMode no_autograd;
  const auto options = at::TensorOptions().dtype(dtype).device(at::kCPU);
  char* data = static_cast<char*>(tensor.data_ptr());
  const int64_t piece_elements = capacity_bytes_ / element_size;
  // One piece even when numel is 0: every call then checks that the ranks agree.
  const int64_t pieces = std::max<int64_t>(1, (numel + piece_elements - 1) / piece_elements);
  // Chunks are cut at multiples of 64 bytes so that no two ranks write one cache line.
  const int64_t align = std::max<int64_t>(1, static_cast<int64_t>(kCacheLine) / element_size);

  for (int64_t piece = 0; piece < pieces; ++piece) {
    const int64_t begin = piece * piece_elements;
    const int64_t count = std::min(piece_elements, numel - begin);
    char* mine = data + begin * element_size;

    // Phase A: my piece into my slot.
    if (count > 0) std::memcpy(slot(rank_), mine, static_cast<size_t>(count * element_size));
    barrier("copying in");
    if (piece == 0) {
      // Every rank reads the same values and so takes the same branch. Before throwing, a second
      // barrier: otherwise a rank that is quick to call again could overwrite its numel while a
      // slow one still reads it (the phase-B barrier guards this when all goes well).
      for (int64_t r = 0; r < world_size_; ++r) {
        const int64_t other_numel = ranks[r].numel;
        const auto other_dtype = static_cast<at::ScalarType>(ranks[r].dtype);
        if (other_numel == numel && other_dtype == dtype) continue;
        barrier("disagreeing on the tensor");
        FRUGAL_CHECK(false, "shared-memory all-reduce ", name_, " (call ", calls_,
                     "): ranks disagree on the tensor: rank ", rank_, " has ", numel,
                     " elements of ", dtype, ", rank ", r, " has ", other_numel, " elements of ",
                     other_dtype);
      }
    }

    // Phase B: my chunk, summed over the slots in rank order.
    const int64_t units = (count + align - 1) / align;
    const int64_t chunk_begin = std::min(count, align * (units * rank_ / world_size_));
    const int64_t chunk_end = std::min(count, align * (units * (rank_ + 1) / world_size_));
    // In steps of at most GRAIN_SIZE elements, which ATen sums on this thread: the W ranks
    // already sum in parallel, and intra-op threads on top of them (when at::get_num_threads() >
    // 1) fight the peers' spinning for the cores: 12 ms instead of 0.3 ms for 1.6 MB, 2 ranks.
    for (int64_t b = chunk_begin; b < chunk_end; b += at::internal::GRAIN_SIZE) {
      const int64_t n = std::min<int64_t>(at::internal::GRAIN_SIZE, chunk_end - b);
      const auto view = [&](char* area) {
        return at::from_blob(area + b * element_size, {n}, options);
      };
      at::Tensor out = view(result);
      at::add_out(out, view(slot(0)), view(slot(1)));
      for (int64_t r = 2; r < world_size_; ++r) out.add_(view(slot(r)));
    }
    barrier("summing");

    // Phase C: the sum back into my tensor.
    if (count > 0) std::memcpy(mine, result, static_cast<size_t>(count * element_size));
  }
}

}  // namespace frugal::detail

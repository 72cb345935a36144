// TensorLoader (in-memory batches, seeded shuffle, shards, prefetch) and FunctionSource.
#include "frugal/data/batch_source.h"

#include <torch/torch.h>

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "frugal/error.h"

namespace frugal {

namespace detail {

uint64_t seed_mix(uint64_t seed, int64_t epoch) {
  // SplitMix64's finalizer over seed and epoch, so (seed, epoch) and (seed + 1, epoch - 1) or
  // neighbouring epochs give unrelated generator seeds.
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (static_cast<uint64_t>(epoch) + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace detail

namespace {

// Moves a batch to `device` unless it is there; pinned host memory is copied asynchronously on
// the calling thread's current stream, so the consumer's kernels are ordered after the copy.
Batch to_device(Batch batch, c10::Device device) {
  if (batch.data.defined() && batch.data.device() != device) {
    batch.data = batch.data.to(device, /*non_blocking=*/batch.data.is_pinned());
  }
  if (batch.target.defined() && batch.target.device() != device) {
    batch.target = batch.target.to(device, /*non_blocking=*/batch.target.is_pinned());
  }
  return batch;
}

}  // namespace

// Note [TensorLoader's prefetch worker]
// One persistent worker thread per loader, started on the first start_epoch that uses it
// (prefetch on, or by default when batches go to an accelerator).
// There is a single job slot and a single result slot: next() takes the result of batch k and
// immediately posts batch k + 1, so exactly one batch is prepared while the caller trains on the
// current one (one mutex/condition-variable hand-off per batch, no thread creation per batch as
// std::async would do). Every start_epoch (and set_shard) bumps `generation`; the worker drops a
// result whose generation is stale, so a new epoch never sees a batch of the previous one and an
// epoch can be abandoned mid-way. An exception in the worker is stored and rethrown by next();
// the batch is then posted again on the next call. The destructor sets `stop` and joins: the
// worker finishes at most the one batch it is computing. Batches are computed under NoGradGuard,
// not InferenceMode: inference tensors could not be saved for backward by the training step.
struct TensorLoader::Impl {
  at::Tensor data;
  at::Tensor targets;
  int64_t size = 0;
  int64_t rank = 0;
  int64_t world_size = 1;
  c10::Device device{c10::kCPU};

  // The current epoch (consumer thread only).
  bool started = false;
  int64_t epoch = 0;
  at::Tensor indices;  // this rank's indices of the epoch, after drop_last
  int64_t cursor = 0;  // next batch to hand out
  int64_t batches = 0;
  bool in_flight = false;  // a job for batch `cursor` is posted and its result not yet taken

  // Shared with the worker, guarded by `mutex`.
  std::mutex mutex;
  std::condition_variable work_cv;
  std::condition_variable done_cv;
  std::thread worker;
  bool stop = false;
  uint64_t generation = 0;
  bool has_job = false;
  at::Tensor job_indices;
  bool job_pin = false;
  uint64_t job_generation = 0;
  bool result_ready = false;
  Batch result;
  std::exception_ptr error;

  // The shard size on this rank before drop_last.
  int64_t shard_size(bool pad) const {
    if (pad) return (size + world_size - 1) / world_size;
    return rank < size ? (size - rank + world_size - 1) / world_size : 0;
  }

  // One index_select for the data and one for the targets; into pinned memory when the batch
  // is bound for a CUDA device, so the host-to-device copy can be asynchronous.
  Batch make_batch(const at::Tensor& index, bool pin) const {
    at::NoGradGuard no_grad;
    auto select = [&](const at::Tensor& source) {
      at::Tensor idx = index.device() == source.device() ? index : index.to(source.device());
      if (pin && source.device().is_cpu()) {
        std::vector<int64_t> sizes = source.sizes().vec();
        sizes[0] = idx.size(0);
        at::Tensor out = at::empty(sizes, source.options().pinned_memory(true));
        at::index_select_out(out, source, 0, idx);
        return out;
      }
      return source.index_select(0, idx);
    };
    return Batch{select(data), select(targets)};
  }

  at::Tensor batch_index(int64_t batch, int64_t batch_size) const {
    const int64_t begin = batch * batch_size;
    return indices.slice(0, begin, std::min(begin + batch_size, indices.size(0)));
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      work_cv.wait(lock, [&] { return stop || has_job; });
      if (stop) return;
      has_job = false;
      at::Tensor index = std::move(job_indices);
      const bool pin = job_pin;
      const uint64_t gen = job_generation;
      lock.unlock();
      Batch batch;
      std::exception_ptr failure;
      try {
        batch = make_batch(index, pin);
      } catch (...) {
        failure = std::current_exception();
      }
      lock.lock();
      if (gen == generation) {
        result = std::move(batch);
        error = failure;
        result_ready = true;
        done_cv.notify_one();
      }
    }
  }

  // Whether batches come from the worker: host data only (data already on an accelerator is
  // indexed inline, its kernels are asynchronous anyway); by default only when they are copied
  // to an accelerator.
  bool uses_worker(const TensorLoaderOptions& options) const {
    return data.device().is_cpu() && options.prefetch().value_or(!device.is_cpu());
  }

  // Posts batch `cursor` to the worker (consumer thread; starts the worker on first use).
  void post(int64_t batch_size) {
    if (!worker.joinable()) worker = std::thread([this] { worker_loop(); });
    {
      std::lock_guard<std::mutex> lock(mutex);
      job_indices = batch_index(cursor, batch_size);
      job_pin = device.is_cuda();
      job_generation = generation;
      has_job = true;
    }
    work_cv.notify_one();
    in_flight = true;
  }

  // Forgets the current epoch and any batch the worker is preparing for it.
  void invalidate() {
    std::lock_guard<std::mutex> lock(mutex);
    ++generation;
    has_job = false;
    job_indices = at::Tensor();
    result_ready = false;
    result = Batch();
    error = nullptr;
    in_flight = false;
  }

  ~Impl() {
    if (worker.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        stop = true;
      }
      work_cv.notify_one();
      worker.join();
    }
  }
};

TensorLoader::TensorLoader(at::Tensor data, at::Tensor targets, TensorLoaderOptions options)
    : options_(options), impl_(std::make_unique<Impl>()) {
  FRUGAL_CHECK(data.defined() && targets.defined(),
               "TensorLoader: data and targets must be defined tensors");
  FRUGAL_CHECK(data.dim() >= 1 && targets.dim() >= 1,
               "TensorLoader: data and targets need a first (sample) dimension, got data ",
               data.sizes(), " and targets ", targets.sizes());
  FRUGAL_CHECK(data.size(0) == targets.size(0),
               "TensorLoader: data and targets must have the same number of samples (first "
               "dimension), got data ",
               data.sizes(), " and targets ", targets.sizes());
  FRUGAL_CHECK(data.size(0) > 0, "TensorLoader: the data set is empty (data ", data.sizes(), ")");
  FRUGAL_CHECK(options.batch_size() >= 1, "TensorLoaderOptions: batch_size must be >= 1, got ",
               options.batch_size());
  impl_->data = std::move(data);
  impl_->targets = std::move(targets);
  impl_->size = impl_->data.size(0);
}

TensorLoader::~TensorLoader() = default;

int64_t TensorLoader::dataset_size() const { return impl_->size; }
int64_t TensorLoader::rank() const { return impl_->rank; }
int64_t TensorLoader::world_size() const { return impl_->world_size; }

int64_t TensorLoader::num_samples() const {
  const int64_t n = impl_->shard_size(options_.pad_shards());
  return options_.drop_last() ? n / options_.batch_size() * options_.batch_size() : n;
}

int64_t TensorLoader::num_batches() const {
  const int64_t n = impl_->shard_size(options_.pad_shards());
  const int64_t b = options_.batch_size();
  return options_.drop_last() ? n / b : (n + b - 1) / b;
}

at::Tensor TensorLoader::epoch_indices(int64_t epoch) const {
  const int64_t n = impl_->size;
  const int64_t world = impl_->world_size;
  const auto long_cpu = at::TensorOptions().dtype(at::kLong);
  // The whole epoch's order, identical on every rank (never the global generator).
  at::Tensor order;
  if (options_.shuffle()) {
    at::Generator gen = at::detail::createCPUGenerator(detail::seed_mix(options_.seed(), epoch));
    order = at::randperm(n, gen, long_cpu);
  } else {
    order = at::arange(n, long_cpu);
  }
  int64_t total = n;
  if (options_.pad_shards() && n % world != 0) {
    // As PyTorch's DistributedSampler: repeat from the start up to a multiple of world_size.
    total = (n + world - 1) / world * world;
    const int64_t repeats = (total + n - 1) / n;
    order = order.repeat({repeats}).slice(0, 0, total);
  }
  at::Tensor shard = order.slice(0, impl_->rank, total, world);
  if (options_.drop_last()) shard = shard.slice(0, 0, num_samples());
  return shard.contiguous();
}

bool TensorLoader::set_batch_size(int64_t batch_size) {
  FRUGAL_CHECK(batch_size >= 1, "TensorLoader: batch_size must be >= 1, got ", batch_size);
  impl_->invalidate();  // a running epoch ends; the next start_epoch uses the new size
  impl_->started = false;
  options_.batch_size(batch_size);
  return true;
}

const at::Tensor& TensorLoader::data() const { return impl_->data; }
const at::Tensor& TensorLoader::targets() const { return impl_->targets; }

void TensorLoader::start_epoch(int64_t epoch, int64_t skip_batches) {
  const int64_t batches = num_batches();
  FRUGAL_CHECK(skip_batches >= 0 && skip_batches <= batches,
               "TensorLoader: skip_batches must be in [0, ", batches,
               "] (the batches of one epoch on this rank), got ", skip_batches);
  Impl& s = *impl_;
  s.invalidate();
  s.epoch = epoch;
  s.indices = epoch_indices(epoch);
  if (!s.data.device().is_cpu()) s.indices = s.indices.to(s.data.device());  // once per epoch
  s.batches = batches;
  s.cursor = skip_batches;
  s.started = true;
  // Data already on an accelerator is indexed inline: the kernels are asynchronous anyway.
  if (s.uses_worker(options_) && s.cursor < s.batches) {
    s.post(options_.batch_size());
  }
}

std::optional<Batch> TensorLoader::next() {
  Impl& s = *impl_;
  FRUGAL_CHECK(s.started, "TensorLoader: next() called before start_epoch()");
  if (s.cursor >= s.batches) return std::nullopt;
  Batch batch;
  if (s.uses_worker(options_)) {
    if (!s.in_flight) s.post(options_.batch_size());  // after an error in the worker
    std::exception_ptr failure;
    {
      std::unique_lock<std::mutex> lock(s.mutex);
      s.done_cv.wait(lock, [&] { return s.result_ready; });
      s.result_ready = false;
      s.in_flight = false;
      batch = std::move(s.result);
      s.result = Batch();
      failure = std::exchange(s.error, nullptr);
    }
    if (failure) std::rethrow_exception(failure);
    ++s.cursor;
    if (s.cursor < s.batches) s.post(options_.batch_size());
  } else {
    batch = s.make_batch(s.batch_index(s.cursor, options_.batch_size()), s.device.is_cuda());
    ++s.cursor;
  }
  return to_device(std::move(batch), s.device);
}

void TensorLoader::set_device(c10::Device device) { impl_->device = device; }

void TensorLoader::set_shard(int64_t rank, int64_t world_size) {
  FRUGAL_CHECK(world_size >= 1, "TensorLoader::set_shard: world_size must be >= 1, got ",
               world_size);
  FRUGAL_CHECK(rank >= 0 && rank < world_size,
               "TensorLoader::set_shard: rank must be in [0, world_size), got rank ", rank,
               " with world_size ", world_size);
  if (rank == impl_->rank && world_size == impl_->world_size) return;
  impl_->invalidate();
  impl_->started = false;  // the epoch's indices changed: start_epoch again
  impl_->rank = rank;
  impl_->world_size = world_size;
}

std::string TensorLoader::describe() const {
  return detail::concat("TensorLoader(", impl_->size, " samples, batch ", options_.batch_size(),
                        options_.shuffle() ? ", shuffle" : ", sequential",
                        options_.drop_last() ? ", drop_last" : "", ", shard ", impl_->rank, "/",
                        impl_->world_size, ")");
}

// ---- FunctionSource ----

FunctionSource::FunctionSource(EpochFactory make_epoch, int64_t num_batches, int64_t num_samples,
                               std::string name)
    : make_epoch_(std::move(make_epoch)),
      num_batches_(num_batches),
      num_samples_(num_samples),
      name_(std::move(name)) {
  FRUGAL_CHECK(static_cast<bool>(make_epoch_), "FunctionSource '", name_,
               "': the epoch factory is empty");
  FRUGAL_CHECK(num_batches_ >= 0, "FunctionSource '", name_, "': num_batches must be >= 0, got ",
               num_batches_);
  FRUGAL_CHECK(num_samples_ >= 0, "FunctionSource '", name_, "': num_samples must be >= 0, got ",
               num_samples_);
}

void FunctionSource::start_epoch(int64_t epoch, int64_t skip_batches) {
  FRUGAL_CHECK(skip_batches >= 0, "FunctionSource '", name_, "': skip_batches must be >= 0, got ",
               skip_batches);
  current_ = nullptr;  // the previous epoch's loader goes before the next one is made
  current_ = make_epoch_(epoch);
  FRUGAL_CHECK(static_cast<bool>(current_), "FunctionSource '", name_,
               "': the epoch factory returned an empty function for epoch ", epoch);
  // Skipped batches are produced (a generic source cannot seek) but not moved to the device.
  for (int64_t i = 0; i < skip_batches; ++i) {
    FRUGAL_CHECK(current_().has_value(), "FunctionSource '", name_, "': cannot skip ", skip_batches,
                 " batches of epoch ", epoch, ", it ended after ", i);
  }
}

std::optional<Batch> FunctionSource::next() {
  FRUGAL_CHECK(static_cast<bool>(current_), "FunctionSource '", name_,
               "': next() called before start_epoch()");
  std::optional<Batch> batch = current_();
  if (batch) batch = to_device(std::move(*batch), device_);
  return batch;
}

void FunctionSource::set_shard(int64_t rank, int64_t world_size) {
  if (rank == 0 && world_size == 1) return;
  FRUGAL_CHECK(false, "FunctionSource '", name_, "' cannot be sharded by frugal (set_shard(", rank,
               ", ", world_size,
               ")): a FunctionSource must shard itself, e.g. build its torch::data loader with "
               "DistributedRandomSampler(size, world_size, rank) or "
               "DistributedSequentialSampler, and pass its per-rank num_batches/num_samples");
}

}  // namespace frugal

// ImageLoader: persistent decode threads filling a ring of preallocated batch buffers.
//
// Note [The decode ring]. Batch b of the epoch lives in slot b % ring. The consumer (next())
// owns the window [consumed, consumed + ring): workers claim samples one at a time in epoch order
// (an atomic-like cursor under the mutex) but only of batches inside the window, decode and
// transform them outside the lock into their place in the slot's buffer, and count the slot's
// remaining samples down. next() waits for its batch's count to reach zero, hands the buffer out
// and, on the following call, moves the window on, giving the slot a fresh buffer when the caller
// still holds the old one. A new epoch bumps `generation`; workers drop claims of an older one.
#include "frugal/data/image_loader.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "frugal/error.h"

namespace frugal {

struct ImageLoader::Impl {
  std::vector<ImageSample> samples;
  std::shared_ptr<const SampleStore> store;  // when reading a packed cache or LMDB
  std::vector<int64_t> store_index;          // samples[i] is the store's sample store_index[i]
  TransformPtr transform;
  int64_t height = 0, width = 0, channels = 3;
  int64_t rank = 0, world_size = 1;
  c10::Device device{c10::kCPU};
  std::atomic<int64_t> bad{0};

  struct Slot {
    at::Tensor data, target;
    int64_t batch = -1;
    int64_t remaining = 0;
    std::exception_ptr error;
  };

  std::mutex mutex;
  std::condition_variable work_cv, done_cv;
  std::vector<std::thread> workers;
  bool stopping = false;
  bool started = false;
  uint64_t generation = 0;
  int64_t epoch = 0;
  std::vector<int64_t> indices;  // this rank's samples of the epoch, in order
  std::vector<Slot> ring;
  int64_t batch_size = 0, num_batches = 0;
  int64_t next_batch = 0;   // the batch next() returns next
  int64_t cursor = 0;       // the next sample (position in `indices`) to claim
  int64_t in_flight = 0;    // claimed, not finished
  bool handed_out = false;  // next_batch - 1 was returned and its slot not yet recycled

  // Batches workers may fill: while batch next_batch - 1 is held, its slot is not free.
  int64_t window_end() const {
    return std::min(num_batches, next_batch + (int64_t)ring.size() - (handed_out ? 1 : 0));
  }

  void prepare_slot(int64_t batch) {
    Slot& slot = ring[batch % ring.size()];
    const int64_t n = std::min(batch_size, (int64_t)indices.size() - batch * batch_size);
    const bool pin = device.is_cuda();
    // A buffer the caller still holds (or of another size) is replaced, never overwritten.
    if (!slot.data.defined() || slot.data.size(0) != n || slot.data.use_count() > 1 ||
        slot.data.storage().use_count() > 1 || slot.target.use_count() > 1 ||
        slot.target.storage().use_count() > 1) {
      auto opts = at::TensorOptions().dtype(at::kByte).pinned_memory(pin);
      slot.data = at::empty({n, channels, height, width}, opts);
      slot.target = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(pin));
    }
    slot.batch = batch;
    slot.remaining = n;
    slot.error = nullptr;
  }

  // Decodes sample `index` (dataset index) with randomness `key` into `out` (C x H x W).
  void fill(int64_t index, int64_t key_position, uint8_t* out, int64_t* label,
            const ImageLoaderOptions& options) {
    SampleRng rng(options.seed(), epoch, key_position);
    const int64_t n = static_cast<int64_t>(samples.size());
    for (int64_t attempt = 0;; ++attempt) {
      const int64_t at = (index + attempt) % n;
      const ImageSample& sample = samples[at];
      try {
        SampleRng sample_rng = rng;
        // An encoded image is decoded only as far as the transform needs (a crop's box).
        const Image image = [&] {
          if (store)
            return store->read_transformed(store_index[at], options.color(), *transform,
                                           sample_rng);
          const std::vector<uint8_t> bytes = read_file_bytes(sample.path);
          return transform->apply_encoded(bytes.data(), bytes.size(), options.color(), sample.path,
                                          sample_rng);
        }();
        FRUGAL_CHECK(image.height == height && image.width == width && image.channels == channels,
                     "ImageLoader: '", sample.path, "' came out of the transforms as ",
                     image.height, "x", image.width, "x", image.channels, ", expected ", height,
                     "x", width, "x", channels, " (add a Resize/CenterCrop or RandomResizedCrop)");
        // HWC -> CHW.
        const int64_t plane = height * width;
        for (int64_t c = 0; c < channels; ++c) {
          uint8_t* dst = out + c * plane;
          const uint8_t* src = image.pixels.data() + c;
          for (int64_t p = 0; p < plane; ++p) dst[p] = src[p * channels];
        }
        *label = sample.label;
        return;
      } catch (const Error&) {
        if (options.on_bad_sample() == OnBadSample::kRaise || attempt + 1 >= n) throw;
        if (attempt == 0) bad.fetch_add(1);
      }
    }
  }

  void worker_loop(const ImageLoaderOptions* options) {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      work_cv.wait(lock, [&] {
        return stopping ||
               (started && cursor < (int64_t)indices.size() && cursor / batch_size < window_end());
      });
      if (stopping) return;
      const int64_t position = cursor++;
      const int64_t batch = position / batch_size;
      Slot& slot = ring[batch % ring.size()];
      const uint64_t gen = generation;
      const int64_t index = indices[position];
      const int64_t key = (position)*world_size + rank;  // position in the unsharded order
      const int64_t row = position - batch * batch_size;
      at::Tensor data = slot.data;  // keeps the buffer alive whatever happens to the slot
      at::Tensor target = slot.target;
      ++in_flight;
      lock.unlock();
      std::exception_ptr error;
      int64_t label = 0;
      try {
        fill(index, key, data.data_ptr<uint8_t>() + row * channels * height * width, &label,
             *options);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      --in_flight;
      if (gen == generation && slot.batch == batch) {
        target.data_ptr<int64_t>()[row] = label;
        if (error && !slot.error) slot.error = error;
        --slot.remaining;
      }
      done_cv.notify_all();
    }
  }

  // Ends the running epoch: no claim of it survives.
  void reset(std::unique_lock<std::mutex>& lock) {
    ++generation;
    started = false;
    done_cv.wait(lock, [&] { return in_flight == 0; });
  }
};

namespace {
int64_t default_threads() {
  const int64_t cpus = static_cast<int64_t>(std::thread::hardware_concurrency());
  return std::max<int64_t>(1, cpus - 1);
}
}  // namespace

ImageLoader::ImageLoader(std::vector<ImageSample> samples, TransformPtr transform, int64_t height,
                         int64_t width, ImageLoaderOptions options)
    : options_(options), impl_(std::make_unique<Impl>()) {
  init(std::move(samples), std::move(transform), height, width);
}

ImageLoader::ImageLoader(std::shared_ptr<const SampleStore> store, TransformPtr transform,
                         int64_t height, int64_t width, ImageLoaderOptions options,
                         std::vector<int64_t> subset)
    : options_(options), impl_(std::make_unique<Impl>()) {
  FRUGAL_CHECK(store != nullptr, "ImageLoader: the sample store is null");
  if (subset.empty()) {
    subset.resize(static_cast<size_t>(store->size()));
    for (int64_t i = 0; i < store->size(); ++i) subset[static_cast<size_t>(i)] = i;
  }
  std::vector<ImageSample> samples;
  samples.reserve(subset.size());
  for (const int64_t i : subset) {
    FRUGAL_CHECK(i >= 0 && i < store->size(), "ImageLoader: subset index ", i,
                 " is not a sample of '", store->name(), "' (", store->size(), " samples)");
    samples.push_back({store->name() + ":" + store->sample_name(i), store->label(i)});
  }
  impl_->store = std::move(store);
  impl_->store_index = std::move(subset);
  init(std::move(samples), std::move(transform), height, width);
}

void ImageLoader::init(std::vector<ImageSample> samples, TransformPtr transform, int64_t height,
                       int64_t width) {
  const ImageLoaderOptions& options = options_;
  FRUGAL_CHECK(!samples.empty(), "ImageLoader: no samples");
  FRUGAL_CHECK(transform != nullptr, "ImageLoader: the transform is null");
  FRUGAL_CHECK(height >= 1 && width >= 1, "ImageLoader: height and width must be >= 1, got ",
               height, "x", width);
  FRUGAL_CHECK(options.batch_size() >= 1, "ImageLoader: batch_size must be >= 1, got ",
               options.batch_size());
  FRUGAL_CHECK(options.threads() >= 0, "ImageLoader: threads must be >= 0 (0: CPUs - 1), got ",
               options.threads());
  FRUGAL_CHECK(options.batches_ahead() >= 1, "ImageLoader: batches_ahead must be >= 1, got ",
               options.batches_ahead());
  FRUGAL_CHECK(options.shuffle_block() >= 0,
               "ImageLoader: shuffle_block must be >= 0 (0: shuffle all samples), got ",
               options.shuffle_block());
  FRUGAL_CHECK(options.shuffle_window() >= 1, "ImageLoader: shuffle_window must be >= 1, got ",
               options.shuffle_window());
  for (const ImageSample& s : samples) {
    FRUGAL_CHECK(s.label >= 0, "ImageLoader: sample '", s.path, "' has label ", s.label,
                 ", expected >= 0");
  }
  impl_->samples = std::move(samples);
  impl_->transform = std::move(transform);
  impl_->height = height;
  impl_->width = width;
  impl_->channels = options.color() == ColorMode::kRGB ? 3 : 1;
  impl_->ring.resize(static_cast<size_t>(options.batches_ahead()) + 1);
  const int64_t n = options.threads() == 0 ? default_threads() : options.threads();
  for (int64_t t = 0; t < n; ++t) {
    impl_->workers.emplace_back([this] { impl_->worker_loop(&options_); });
  }
}

ImageLoader::~ImageLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->work_cv.notify_all();
  for (auto& w : impl_->workers) w.join();
}

int64_t ImageLoader::threads() const { return static_cast<int64_t>(impl_->workers.size()); }
int64_t ImageLoader::bad_samples() const { return impl_->bad.load(); }

namespace {
int64_t shard_size(int64_t size, int64_t rank, int64_t world, bool pad) {
  if (pad) return (size + world - 1) / world;
  return rank < size ? (size - rank + world - 1) / world : 0;
}
}  // namespace

int64_t ImageLoader::num_samples() const {
  const int64_t n = shard_size((int64_t)impl_->samples.size(), impl_->rank, impl_->world_size,
                               options_.pad_shards());
  return options_.drop_last() ? n / options_.batch_size() * options_.batch_size() : n;
}

int64_t ImageLoader::num_batches() const {
  const int64_t n = shard_size((int64_t)impl_->samples.size(), impl_->rank, impl_->world_size,
                               options_.pad_shards());
  const int64_t b = options_.batch_size();
  return options_.drop_last() ? n / b : (n + b - 1) / b;
}

namespace {
// The blocks of `block` consecutive samples in a random order; then, per window of `window`
// consecutive blocks of that order, its samples shuffled. One generator draws both.
at::Tensor block_shuffle(int64_t n, int64_t block, int64_t window, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  const int64_t blocks = (n + block - 1) / block;
  const at::Tensor block_order = at::randperm(blocks, gen, long_opts);
  const int64_t* bo = block_order.data_ptr<int64_t>();
  at::Tensor order = at::empty({n}, long_opts);
  int64_t* out = order.data_ptr<int64_t>();
  int64_t filled = 0;
  std::vector<int64_t> members;
  for (int64_t w = 0; w < blocks; w += window) {
    members.clear();
    for (int64_t b = w; b < std::min(blocks, w + window); ++b) {
      for (int64_t i = bo[b] * block; i < std::min(n, (bo[b] + 1) * block); ++i) {
        members.push_back(i);
      }
    }
    const int64_t m = static_cast<int64_t>(members.size());
    const at::Tensor perm = at::randperm(m, gen, long_opts);
    const int64_t* p = perm.data_ptr<int64_t>();
    for (int64_t k = 0; k < m; ++k) out[filled++] = members[static_cast<size_t>(p[k])];
  }
  return order;
}
}  // namespace

std::vector<int64_t> ImageLoader::epoch_indices(int64_t epoch) const {
  // The same order as TensorLoader's (randperm from seed_mix(seed, epoch), padded by repeating).
  const int64_t n = static_cast<int64_t>(impl_->samples.size());
  const int64_t world = impl_->world_size;
  at::Tensor order;
  if (options_.shuffle() && options_.shuffle_block() > 0) {
    order = block_shuffle(n, options_.shuffle_block(), options_.shuffle_window(),
                          detail::seed_mix(options_.seed(), epoch));
  } else if (options_.shuffle()) {
    at::Generator gen = at::detail::createCPUGenerator(detail::seed_mix(options_.seed(), epoch));
    order = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
  } else {
    order = at::arange(n, at::TensorOptions().dtype(at::kLong));
  }
  const int64_t* o = order.data_ptr<int64_t>();
  const int64_t total =
      options_.pad_shards() && n % world != 0 ? (n + world - 1) / world * world : n;
  std::vector<int64_t> out;
  for (int64_t g = impl_->rank; g < total; g += world) out.push_back(o[g % n]);
  if (options_.drop_last()) out.resize(static_cast<size_t>(num_samples()));
  return out;
}

void ImageLoader::start_epoch(int64_t epoch, int64_t skip_batches) {
  const int64_t batches = num_batches();
  FRUGAL_CHECK(skip_batches >= 0 && skip_batches <= batches,
               "ImageLoader: skip_batches must be in [0, ", batches, "], got ", skip_batches);
  std::vector<int64_t> indices = epoch_indices(epoch);
  std::unique_lock<std::mutex> lock(impl_->mutex);
  impl_->reset(lock);
  impl_->epoch = epoch;
  impl_->indices = std::move(indices);
  impl_->batch_size = options_.batch_size();
  impl_->num_batches = batches;
  impl_->next_batch = skip_batches;
  impl_->cursor = skip_batches * options_.batch_size();  // skipped samples are never read
  impl_->handed_out = false;
  for (int64_t b = skip_batches; b < impl_->window_end(); ++b) impl_->prepare_slot(b);
  impl_->started = true;
  lock.unlock();
  impl_->work_cv.notify_all();
}

std::optional<Batch> ImageLoader::next() {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  FRUGAL_CHECK(impl_->started, "ImageLoader: next() before start_epoch()");
  if (impl_->handed_out) {
    // The previous batch is released: its slot takes the batch that enters the window.
    impl_->handed_out = false;
    const int64_t entering = impl_->next_batch + (int64_t)impl_->ring.size() - 1;
    if (entering < impl_->num_batches) impl_->prepare_slot(entering);
    impl_->work_cv.notify_all();
  }
  if (impl_->next_batch >= impl_->num_batches) return std::nullopt;
  Impl::Slot& slot = impl_->ring[impl_->next_batch % impl_->ring.size()];
  impl_->done_cv.wait(lock, [&] { return slot.batch == impl_->next_batch && slot.remaining == 0; });
  if (slot.error) {
    std::exception_ptr error = slot.error;
    // The batch is retried on the next call.
    slot.error = nullptr;
    impl_->prepare_slot(impl_->next_batch);
    impl_->cursor = std::min(impl_->cursor, impl_->next_batch * impl_->batch_size);
    // Claims of later batches in flight are harmless: their slots are prepared again below.
    for (int64_t b = impl_->next_batch + 1; b < impl_->window_end(); ++b) impl_->prepare_slot(b);
    ++impl_->generation;  // drop the completions of claims made before
    impl_->work_cv.notify_all();
    std::rethrow_exception(error);
  }
  Batch batch{slot.data, slot.target};
  ++impl_->next_batch;
  impl_->handed_out = true;
  lock.unlock();
  if (!impl_->device.is_cpu()) {
    // A blocking copy: the pinned buffer may be refilled as soon as the caller moves on.
    batch.data = batch.data.to(impl_->device);
    batch.target = batch.target.to(impl_->device);
  }
  return batch;
}

void ImageLoader::set_device(c10::Device device) {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  impl_->reset(lock);
  impl_->device = device;
  for (auto& slot : impl_->ring) slot = Impl::Slot();
}

void ImageLoader::set_shard(int64_t rank, int64_t world_size) {
  FRUGAL_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
               "ImageLoader: shard rank must be in [0, world_size), got rank ", rank,
               " of world_size ", world_size);
  std::unique_lock<std::mutex> lock(impl_->mutex);
  impl_->reset(lock);
  impl_->rank = rank;
  impl_->world_size = world_size;
}

bool ImageLoader::set_batch_size(int64_t batch_size) {
  FRUGAL_CHECK(batch_size >= 1, "ImageLoader: batch_size must be >= 1, got ", batch_size);
  std::unique_lock<std::mutex> lock(impl_->mutex);
  impl_->reset(lock);
  options_.batch_size(batch_size);
  return true;
}

std::string ImageLoader::describe() const {
  return fmt::format("ImageLoader({} images{}, {}x{}x{}, batch {}, {} threads, {})",
                     impl_->samples.size(), impl_->store ? " from " + impl_->store->name() : "",
                     impl_->channels, impl_->height, impl_->width, options_.batch_size(),
                     impl_->workers.size(), impl_->transform->describe());
}

at::Tensor normalize_batch(const at::Tensor& batch, const std::vector<double>& mean,
                           const std::vector<double>& std) {
  FRUGAL_CHECK(batch.dim() == 4 && batch.scalar_type() == at::kByte,
               "normalize_batch: expected an N x C x H x W uint8 batch, got ", batch.sizes(), " ",
               batch.scalar_type());
  const int64_t c = batch.size(1);
  FRUGAL_CHECK((int64_t)mean.size() == c && (int64_t)std.size() == c,
               "normalize_batch: mean and std need ", c, " values (one per channel), got ",
               mean.size(), " and ", std.size());
  std::vector<float> scale(c), shift(c);
  for (int64_t k = 0; k < c; ++k) {
    FRUGAL_CHECK(std[k] > 0, "normalize_batch: std must be > 0, got ", std[k]);
    scale[k] = static_cast<float>(1.0 / (255.0 * std[k]));
    shift[k] = static_cast<float>(-mean[k] / std[k]);
  }
  auto opts = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor s = at::from_blob(scale.data(), {1, c, 1, 1}, opts).to(batch.device());
  const at::Tensor b = at::from_blob(shift.data(), {1, c, 1, 1}, opts).to(batch.device());
  return batch.to(at::kFloat).mul_(s).add_(b);
}

}  // namespace frugal

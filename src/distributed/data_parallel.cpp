// Data-parallel training: a c10d process group (Gloo on CPU, NCCL on CUDA) joined from the
// launcher's environment, and gradient synchronisation by our own bucketed autograd hooks (see
// Note [Bucketed all-reduce from autograd hooks]). c10d's Reducer is not used: it is internal API
// that differs between LibTorch 1.13 and 2.x, and Debian's headers for it are incomplete.
#include "distributed/data_parallel.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>

#include "distributed/shm_allreduce.h"
#include "frugal/error.h"

#if defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace frugal::detail {

namespace {
std::optional<std::string> env_var(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

int64_t env_int(const char* name, const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  FRUGAL_CHECK(end && *end == '\0' && v >= 0, "environment variable ", name,
               " must be a non-negative integer, got \"", text, "\"");
  return static_cast<int64_t>(v);
}
}  // namespace

std::optional<DistributedEnv> read_distributed_env() {
  DistributedEnv env;
  if (auto ws = env_var("WORLD_SIZE")) {
    env.world_size = env_int("WORLD_SIZE", *ws);
    auto rank = env_var("RANK");
    FRUGAL_CHECK(rank.has_value(), "WORLD_SIZE is set but RANK is not");
    env.rank = env_int("RANK", *rank);
    env.local_rank = env_var("LOCAL_RANK") ? env_int("LOCAL_RANK", *env_var("LOCAL_RANK")) : 0;
    env.local_world_size = env_var("LOCAL_WORLD_SIZE")
                               ? env_int("LOCAL_WORLD_SIZE", *env_var("LOCAL_WORLD_SIZE"))
                               : env.world_size;
  } else if (auto ntasks = env_var("SLURM_NTASKS")) {
    env.world_size = env_int("SLURM_NTASKS", *ntasks);
    env.rank = env_var("SLURM_PROCID") ? env_int("SLURM_PROCID", *env_var("SLURM_PROCID")) : 0;
    env.local_rank =
        env_var("SLURM_LOCALID") ? env_int("SLURM_LOCALID", *env_var("SLURM_LOCALID")) : 0;
    env.local_world_size = env_var("SLURM_NTASKS_PER_NODE")
                               ? env_int("SLURM_NTASKS_PER_NODE", *env_var("SLURM_NTASKS_PER_NODE"))
                               : env.world_size;
  } else {
    return std::nullopt;
  }
  FRUGAL_CHECK(env.world_size >= 1, "WORLD_SIZE must be >= 1, got ", env.world_size);
  FRUGAL_CHECK(env.rank < env.world_size, "RANK (", env.rank, ") must be < WORLD_SIZE (",
               env.world_size, ")");
  if (auto addr = env_var("MASTER_ADDR")) env.master_addr = *addr;
  if (auto port = env_var("MASTER_PORT")) env.master_port = env_int("MASTER_PORT", *port);
  env.agent_store = env_var("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  if (auto rc = env_var("TORCHELASTIC_RESTART_COUNT")) {
    env.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", *rc);
  }
  return env;
}

DataParallelConfig read_data_parallel_config(const TrainerOptions& options) {
  // The options first; the FRUGAL_DDP_* environment variables override them (handy under a
  // launcher without changing the program).
  DataParallelConfig config;
  config.timeout_seconds = options.process_group_timeout_seconds();
  config.bucket_cap_bytes = static_cast<int64_t>(options.ddp_bucket_cap_mb() * 1024 * 1024);
  config.find_unused_parameters = options.find_unused_parameters();
  if (auto t = env_var("FRUGAL_DDP_TIMEOUT_SECONDS")) {
    config.timeout_seconds = static_cast<double>(env_int("FRUGAL_DDP_TIMEOUT_SECONDS", *t));
    FRUGAL_CHECK(config.timeout_seconds > 0, "FRUGAL_DDP_TIMEOUT_SECONDS must be > 0");
  }
  if (auto mb = env_var("FRUGAL_DDP_BUCKET_MB")) {
    char* end = nullptr;
    const double v = std::strtod(mb->c_str(), &end);
    FRUGAL_CHECK(end && *end == '\0' && v > 0,
                 "FRUGAL_DDP_BUCKET_MB must be a positive number, got \"", *mb, "\"");
    config.bucket_cap_bytes = static_cast<int64_t>(v * 1024 * 1024);
  }
  if (auto fu = env_var("FRUGAL_DDP_FIND_UNUSED_PARAMETERS")) {
    config.find_unused_parameters = *fu == "1" || *fu == "true" || *fu == "True";
  }
  if (auto ov = env_var("FRUGAL_DDP_OVERLAP")) config.overlap = *ov != "0";
  if (auto sw = env_var("FRUGAL_DDP_SPIN_WAIT")) config.spin_wait = *sw != "0";
  if (auto shm = env_var("FRUGAL_DDP_SHM")) config.shared_memory = *shm != "0";
  return config;
}

std::vector<std::vector<size_t>> assign_buckets(const std::vector<at::Tensor>& params,
                                                int64_t cap_bytes) {
  std::vector<std::vector<size_t>> buckets;
  int64_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {  // reverse order: roughly the order grads arrive
    const at::Tensor& p = params[k];
    const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
    const bool fits = !buckets.empty() && bytes + size <= cap_bytes &&
                      params[buckets.back().front()].scalar_type() == p.scalar_type() &&
                      params[buckets.back().front()].device() == p.device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(k);
    bytes += size;
  }
  return buckets;
}

namespace {

using std::chrono::milliseconds;

/// The ranks that run on this machine, with their pids, exchanged once at start-up so that a
/// failed collective can say which of them has exited (a dead peer also takes the rendezvous
/// store with it when it is rank 0).
struct LocalPeers {
  std::vector<std::pair<int64_t, pid_t>> ranks;  // (rank, pid), this rank excluded

  /// "; rank 1 (pid 824) has exited" for each peer on this machine that no longer runs. Called
  /// when a collective failed: a killed peer's sockets close before the kernel marks it exited,
  /// so this looks again for up to a second before it concludes that every peer still runs.
  std::string exited() const {
    std::string out;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    do {
      for (const auto& [rank, pid] : ranks) {
        if (process_exited(pid)) {
          out += "; rank " + std::to_string(rank) + " (pid " + std::to_string(pid) + ") has exited";
        }
      }
      if (!out.empty() || ranks.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < until);
    return out;
  }
};

/// This machine's identity for "same machine" decisions: host name and boot id.
[[maybe_unused]] std::string machine_id() {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  std::getline(boot, boot_id);
  return std::string(host) + "/" + boot_id;
}

// Note [Bucketed all-reduce from autograd hooks]
// Trainable parameters are split into buckets of about `bucket_cap_bytes`, in reverse parameter
// order (the order their gradients are usually ready in backward). A post hook on every
// parameter's gradient accumulator (it runs once .grad holds this backward's sum) counts the
// bucket's ready gradients; when a bucket is complete, it and every following complete bucket
// are flattened and all-reduced asynchronously, strictly in bucket-index order (every rank issues
// the same collectives in the same order: Gloo matches them by a counter, NCCL would deadlock).
// So communication runs while backward computes the rest. after_backward() launches what is left
// (a parameter that got no gradient contributes zeros), waits, divides by the world size and
// writes the averages back into .grad. The last bucket also carries one float per parameter,
// 1 where this rank has a gradient for it: after the all-reduce every rank knows the same set of
// parameters that were unused somewhere and decides the same thing (an error naming them, or with
// find_unused_parameters, zeros; globally unused parameters keep no gradient); after those, the
// rank's votes on the step's decisions (Note [Step decisions travel with the gradients] in
// trainer.cpp), so a step needs no collective besides its buckets. Nothing is
// communicated on accumulation micro-steps (sync=false): gradients accumulate locally.
// Buffers (BatchNorm's running statistics) are broadcast from rank 0 once per optimizer step,
// launched before backward from a copy and written back after it (as DDP's broadcast_buffers,
// whose sync happens before the next window's first forward).
template <class PG>
class DataParallel final : public Strategy {
 public:
  DataParallel(c10::intrusive_ptr<PG> pg, const DistributedEnv& env, c10::Device device,
               DataParallelConfig config, LocalPeers peers,
               std::unique_ptr<ShmAllReduce> shm = nullptr)
      : pg_(std::move(pg)),
        env_(env),
        device_(device),
        config_(config),
        peers_(std::move(peers)),
        shm_(std::move(shm)) {}
  ~DataParallel() override { remove_hooks(); }

  int64_t rank() const override { return env_.rank; }
  int64_t world_size() const override { return env_.world_size; }
  c10::Device device() const override { return device_; }

  void broadcast_module(torch::nn::Module& module) override {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> state = module.parameters(/*recurse=*/true);
    for (const auto& b : module.buffers(/*recurse=*/true)) state.push_back(b);
    broadcast_coalesced(state);
  }

  void setup(torch::nn::Module& module, const std::vector<at::Tensor>& params) override {
    remove_hooks();
    at::NoGradGuard no_grad;
    // Every rank starts from rank 0's parameters (all of them, frozen too) and buffers.
    broadcast_module(module);
    buffers_ = module.buffers(/*recurse=*/true);

    params_.clear();
    for (const auto& p : params) {
      if (p.requires_grad()) params_.push_back(p);  // frozen parameters are never synchronised
    }
    names_.assign(params_.size(), std::string());
    std::unordered_map<const void*, std::string> by_impl;
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      by_impl[item.value().unsafeGetTensorImpl()] = item.key();
    }
    for (size_t k = 0; k < params_.size(); ++k) {
      auto it = by_impl.find(params_[k].unsafeGetTensorImpl());
      names_[k] = it != by_impl.end() ? it->second : "parameter #" + std::to_string(k);
    }
    buckets_.clear();
    for (auto& indices : assign_buckets(params_, config_.bucket_cap_bytes)) {
      Bucket bucket;
      bucket.params = std::move(indices);
      buckets_.push_back(std::move(bucket));
    }
    bucket_of_.assign(params_.size(), 0);
    for (size_t b = 0; b < buckets_.size(); ++b) {
      for (size_t k : buckets_[b].params) bucket_of_[k] = b;
    }
    fired_.assign(params_.size(), false);
    for (size_t k = 0; k < params_.size(); ++k) {
      std::shared_ptr<torch::autograd::Node> acc =
          torch::autograd::impl::grad_accumulator(params_[k]);
      FRUGAL_CHECK(acc != nullptr, "data parallel: parameter ", names_[k],
                   " is not a leaf tensor, so its gradient cannot be synchronised");
      const uintptr_t key = acc->add_post_hook(std::make_unique<ReadyHook>(this, k));
      hooks_.push_back({acc, key});  // the Variable holds its accumulator only weakly
    }
  }

  void before_backward(bool sync, const std::vector<bool>& votes) override {
    std::lock_guard<std::mutex> lock(mutex_);
    sync_ = sync;
    if (!sync) return;
    votes_ = votes;
    std::fill(fired_.begin(), fired_.end(), false);
    for (auto& bucket : buckets_) {
      bucket.ready = 0;
      bucket.work.reset();
      bucket.flat = at::Tensor();
    }
    next_ = 0;
    buffer_work_.reset();
    if (!buffers_.empty() && !shm_) {  // shared memory: after backward, with the gradients
      // From a copy: backward may read the buffers (BatchNorm in eval mode) while this runs.
      at::NoGradGuard no_grad;
      buffer_flat_ = flatten(buffers_);
      std::vector<at::Tensor> v{buffer_flat_};
      c10d::BroadcastOptions o;
      o.rootRank = 0;
      buffer_work_ = pg_->broadcast(v, o);
    }
  }

  std::vector<bool> after_backward(bool sync) override {
    if (!sync) return {};
    if (buckets_.empty()) return any(std::move(votes_));  // nothing trainable: vote on their own
    std::unique_lock<std::mutex> lock(mutex_);
    sync_ = false;  // a stray backward before the next sync step communicates nothing
    at::NoGradGuard no_grad;
    while (next_ < buckets_.size()) launch(next_++);
    lock.unlock();
    if (shm_) reduce_in_shared_memory();
    if (buffer_work_) {
      wait(buffer_work_, "the buffer broadcast");
      buffer_work_.reset();
      if (env_.rank != 0) unflatten_into(buffer_flat_, buffers_);
    }
    for (auto& bucket : buckets_) {
      wait(bucket.work, "the gradient all-reduce");
      bucket.work.reset();
    }
    // The last bucket's tail: on how many ranks each parameter had a gradient, then the votes.
    const auto n_params = static_cast<int64_t>(params_.size());
    const auto n_votes = static_cast<int64_t>(votes_.size());
    const at::Tensor& last = buckets_.back().flat;
    const at::Tensor tail = last.narrow(0, last.numel() - n_params - n_votes, n_params + n_votes)
                                .to(at::kCPU, at::kFloat);
    const float* u = tail.data_ptr<float>();
    std::vector<bool> agreed(votes_.size());
    for (int64_t v = 0; v < n_votes; ++v) agreed[v] = u[n_params + v] > 0.5f;
    std::vector<bool> globally_unused(params_.size(), false);
    std::string partly;
    std::string nowhere;
    for (size_t k = 0; k < params_.size(); ++k) {
      const auto n = static_cast<int64_t>(std::lround(u[k]));
      if (n == env_.world_size) continue;
      globally_unused[k] = n == 0;
      std::string& list = n == 0 ? nowhere : partly;
      if (!list.empty()) list += ", ";
      list += names_[k];
    }
    if (!config_.find_unused_parameters && (!partly.empty() || !nowhere.empty())) {
      for (auto& bucket : buckets_) bucket.flat = at::Tensor();
      FRUGAL_CHECK(false, "data parallel: some trainable parameters got no gradient in this step",
                   nowhere.empty() ? "" : " (on every rank: ", nowhere, nowhere.empty() ? "" : ")",
                   partly.empty() ? "" : " (on some ranks only: ", partly,
                   partly.empty() ? "" : ")",
                   ". Freeze them (requires_grad=false), leave them out of the optimizer, or set "
                   "find_unused_parameters (environment FRUGAL_DDP_FIND_UNUSED_PARAMETERS=1)");
    }
    const double world = static_cast<double>(env_.world_size);
    for (auto& bucket : buckets_) {
      int64_t offset = 0;
      for (size_t k : bucket.params) {
        at::Tensor& p = params_[k];
        const int64_t n = p.numel();
        const at::Tensor sum = bucket.flat.narrow(0, offset, n).view(p.sizes());
        offset += n;
        if (globally_unused[k]) {
          p.mutable_grad() = at::Tensor();
        } else if (p.grad().defined()) {
          at::div_out(p.mutable_grad(), sum, world);  // the average, in one pass
        } else {
          p.mutable_grad() = sum / world;
        }
      }
      bucket.flat = at::Tensor();
    }
    return agreed;
  }

  void all_reduce_sum(std::vector<at::Tensor>& tensors) override {
    if (tensors.empty()) return;
    at::NoGradGuard no_grad;
    // One collective for all of them (per dtype), on the device the backend wants.
    std::map<at::ScalarType, std::vector<size_t>> by_type;
    for (size_t i = 0; i < tensors.size(); ++i) by_type[tensors[i].scalar_type()].push_back(i);
    for (auto& [type, indices] : by_type) {
      std::vector<at::Tensor> group;
      for (size_t i : indices) group.push_back(tensors[i]);
      at::Tensor flat = flatten(group).to(comm_device());
      std::vector<at::Tensor> v{flat};
      wait(pg_->allreduce(v), "a metric all-reduce");
      int64_t offset = 0;
      for (size_t i : indices) {
        at::Tensor& t = tensors[i];
        const int64_t n = t.numel();
        at::Tensor part = flat.narrow(0, offset, n).view(t.sizes()).to(t.device());
        offset += n;
        t.copy_(part);
      }
    }
  }

  std::vector<bool> any(std::vector<bool> flags) override {
    if (flags.empty()) return flags;
    std::vector<float> values(flags.begin(), flags.end());
    at::Tensor t = at::tensor(values, at::kFloat).to(comm_device());
    std::vector<at::Tensor> v{t};
    wait(pg_->allreduce(v), "a decision all-reduce");
    at::Tensor host = t.to(at::kCPU);
    const float* p = host.data_ptr<float>();
    for (size_t i = 0; i < flags.size(); ++i) flags[i] = p[i] > 0.5f;
    return flags;
  }

  void barrier() override {
    // A one-element all-reduce: works the same on every backend and honours the timeout.
    at::Tensor t = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(comm_device()));
    std::vector<at::Tensor> v{t};
    wait(pg_->allreduce(v), "a barrier");
  }

  void teardown() override { remove_hooks(); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    size_t ready = 0;
    at::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
  };

  struct ReadyHook final : torch::autograd::FunctionPostHook {
    ReadyHook(DataParallel* owner, size_t index) : owner_(owner), index_(index) {}
    torch::autograd::variable_list operator()(
        const torch::autograd::variable_list& outputs,
        const torch::autograd::variable_list& /*inputs*/) override {
      owner_->on_ready(index_);
      return outputs;
    }
    DataParallel* owner_;
    size_t index_;
  };

  c10::Device comm_device() const { return device_.is_cuda() ? device_ : c10::Device(c10::kCPU); }

  static at::Tensor flatten(const std::vector<at::Tensor>& tensors) {
    std::vector<at::Tensor> flat;
    flat.reserve(tensors.size());
    for (const auto& t : tensors) flat.push_back(t.detach().reshape({-1}));
    return at::cat(flat);
  }

  static void unflatten_into(const at::Tensor& flat, std::vector<at::Tensor>& tensors) {
    int64_t offset = 0;
    for (auto& t : tensors) {
      const int64_t n = t.numel();
      t.detach().copy_(flat.narrow(0, offset, n).view(t.sizes()));
      offset += n;
    }
  }

  /// Broadcasts from rank 0 into `tensors`, one collective per (dtype, device).
  void broadcast_coalesced(std::vector<at::Tensor>& tensors) {
    std::map<std::pair<at::ScalarType, std::string>, std::vector<at::Tensor>> groups;
    for (const auto& t : tensors) groups[{t.scalar_type(), t.device().str()}].push_back(t);
    for (auto& [key, group] : groups) {
      at::Tensor flat = flatten(group);
      at::Tensor comm = flat.to(comm_device());
      std::vector<at::Tensor> v{comm};
      c10d::BroadcastOptions o;
      o.rootRank = 0;
      wait(pg_->broadcast(v, o), "the broadcast of rank 0's parameters and buffers");
      if (env_.rank != 0) unflatten_into(comm.to(flat.device()), group);
    }
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) const {
    if (!work) return;
    try {
      // Note [Waiting for Gloo]: a rank that sleeps on the collective's condition variable lets
      // its vCPU go idle, and waking an idle vCPU in a VM costs up to several milliseconds: on
      // the project's 2-vCPU machine half the steps of a 2-rank run paid 4-8 ms for it (step
      // p50 16 ms against 12 ms without communication). Polling the work while yielding keeps
      // the core awake and lets Gloo's threads run on it: p50 12.6 ms. A failed or timed-out
      // collective completes too, so the loop ends and wait() below throws. Never for NCCL,
      // whose completion means the GPU finished: polling it would be a host sync.
      if (config_.spin_wait && comm_device().is_cpu()) {
        while (!work->isCompleted()) std::this_thread::yield();
      }
      work->wait();
    } catch (const std::exception& e) {
      std::string reason = e.what();
      FRUGAL_CHECK(false, "data parallel: ", what, " failed on rank ", env_.rank, " of ",
                   env_.world_size, " (another rank died, hung longer than the ",
                   config_.timeout_seconds,
                   " s timeout, or could not be reached): ", reason.substr(0, reason.find('\n')),
                   peers_.exited());
    }
  }

  void on_ready(size_t k) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!sync_ || fired_[k]) return;
    fired_[k] = true;
    if (++buckets_[bucket_of_[k]].ready < buckets_[bucket_of_[k]].params.size()) return;
    if (!config_.overlap || shm_) return;
    at::NoGradGuard no_grad;
    while (next_ < buckets_.size() && buckets_[next_].ready == buckets_[next_].params.size()) {
      launch(next_++);
    }
  }

  /// Note [Shared-memory all-reduce] (shm_allreduce.cpp): ranks on one machine sum the buckets
  /// through shared memory, here, after backward and on this thread: 0.27 ms for the example
  /// CNN's 1.6 MB where Gloo over loopback took 1.2 ms, and no collective to overlap (on busy
  /// cores overlapping did not pay: the communication is CPU work too). The buffers go the same
  /// way: rank 0 adds its values, the others zeros, so every rank gets rank 0's exactly.
  void reduce_in_shared_memory() {
    try {
      for (auto& bucket : buckets_) shm_->all_reduce_sum(bucket.flat);
      if (!buffers_.empty()) {
        at::NoGradGuard no_grad;
        at::Tensor flat = flatten(buffers_);
        if (env_.rank != 0) flat.zero_();
        shm_->all_reduce_sum(flat);
        if (env_.rank != 0) unflatten_into(flat, buffers_);
      }
    } catch (const std::exception& e) {
      FRUGAL_CHECK(false, "data parallel: the gradient all-reduce failed on rank ", env_.rank,
                   " of ", env_.world_size, ": ", e.what());
    }
  }

  /// Flattens bucket `b`'s gradients (zeros where there is none) and starts their all-reduce
  /// (with shared memory: only flattens; reduce_in_shared_memory sums them all after backward).
  void launch(size_t b) {
    Bucket& bucket = buckets_[b];
    const at::Tensor& first = params_[bucket.params.front()];
    std::vector<at::Tensor> parts;
    parts.reserve(bucket.params.size() + 1);
    for (size_t k : bucket.params) {
      const at::Tensor& g = params_[k].grad();
      parts.push_back(g.defined() ? g.reshape({-1})
                                  : at::zeros({params_[k].numel()}, first.options()));
    }
    if (b + 1 == buckets_.size()) {
      // Which parameters have a gradient here (buckets launch in order, so all are known now),
      // then this rank's votes (Note [Step decisions travel with the gradients]).
      std::vector<float> tail(params_.size() + votes_.size());
      for (size_t k = 0; k < params_.size(); ++k) tail[k] = params_[k].grad().defined() ? 1.f : 0.f;
      for (size_t v = 0; v < votes_.size(); ++v) tail[params_.size() + v] = votes_[v] ? 1.f : 0.f;
      parts.push_back(at::tensor(tail, at::kFloat).to(first.options()));
    }
    bucket.flat = at::cat(parts);
    if (shm_) return;
    std::vector<at::Tensor> v{bucket.flat};
    bucket.work = pg_->allreduce(v);
  }

  void remove_hooks() {
    for (auto& [acc, key] : hooks_) acc->del_post_hook(key);
    hooks_.clear();
  }

  c10::intrusive_ptr<PG> pg_;
  DistributedEnv env_;
  c10::Device device_;
  DataParallelConfig config_;
  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> buffers_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<bool> fired_;
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks_;
  std::mutex mutex_;
  bool sync_ = false;
  size_t next_ = 0;
  at::Tensor buffer_flat_;
  c10::intrusive_ptr<c10d::Work> buffer_work_;
  LocalPeers peers_;
  std::unique_ptr<ShmAllReduce> shm_;  // ranks on one machine, CPU: see reduce_in_shared_memory
};

#if defined(USE_C10D_GLOO) || defined(USE_C10D_NCCL)
/// The rendezvous store: rank 0 hosts a TCPStore on MASTER_ADDR:MASTER_PORT, or, under torchrun
/// with TORCHELASTIC_USE_AGENT_STORE=True, every rank joins the agent's store as a client (as
/// torch.distributed's _create_c10d_store does).
c10::intrusive_ptr<c10d::Store> make_store(const DistributedEnv& env, milliseconds timeout) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = !env.agent_store && env.rank == 0;
  if (!env.agent_store) so.numWorkers = static_cast<std::size_t>(env.world_size);
  so.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    std::string reason = e.what();
    FRUGAL_CHECK(false, "data parallel: rank ", env.rank, " could not ",
                 so.isServer ? "host" : "join", " the rendezvous store at ", env.master_addr, ":",
                 env.master_port, " (MASTER_ADDR:MASTER_PORT) within ", timeout.count() / 1000.0,
                 " s: ", reason.substr(0, reason.find('\n')));
  }
  if (env.agent_store) {
    store = c10::make_intrusive<c10d::PrefixStore>(
        "/worker/attempt_" + std::to_string(env.restart_count), store);
  }
  return c10::make_intrusive<c10d::PrefixStore>("frugal", store);
}

/// Every rank publishes its machine and pid; returns the other ranks on this machine.
LocalPeers exchange_peers(c10d::Store& store, const DistributedEnv& env) {
  const std::string here = machine_id();
  const std::string mine = here + " " + std::to_string(::getpid());
  store.set("peer/" + std::to_string(env.rank), std::vector<uint8_t>(mine.begin(), mine.end()));
  LocalPeers peers;
  for (int64_t r = 0; r < env.world_size; ++r) {
    if (r == env.rank) continue;
    const std::vector<uint8_t> bytes = store.get("peer/" + std::to_string(r));
    const std::string text(bytes.begin(), bytes.end());
    const size_t space = text.rfind(' ');
    if (space == std::string::npos || text.substr(0, space) != here) continue;
    peers.ranks.emplace_back(r, static_cast<pid_t>(std::atoll(text.c_str() + space + 1)));
  }
  return peers;
}
#endif

#ifdef USE_C10D_GLOO
/// The shared-memory all-reduce for CPU ranks that all run on one machine (LOCAL_WORLD_SIZE ==
/// WORLD_SIZE), or nullptr: when any rank turned it off (FRUGAL_DDP_SHM=0), when the ranks span
/// machines, or when any rank cannot map the segment (a small /dev/shm, another container). All
/// ranks take the same decision.
std::unique_ptr<ShmAllReduce> open_shared_memory(c10d::Store& store, c10d::ProcessGroupGloo& pg,
                                                 const DistributedEnv& env,
                                                 const DataParallelConfig& config) {
  if (env.world_size < 2) return nullptr;
  // Every rank publishes where it runs (host and boot), or "off" when it will not use shared
  // memory (FRUGAL_DDP_SHM=0, or its launcher says the ranks span machines); all read the same
  // list and so decide alike, even when their settings differ. LOCAL_WORLD_SIZE alone is not
  // trusted: it may be a guess (Slurm without SLURM_NTASKS_PER_NODE).
  std::string here = "off";
  if (config.shared_memory && env.local_world_size == env.world_size) here = machine_id();
  store.set("shm_host/" + std::to_string(env.rank), std::vector<uint8_t>(here.begin(), here.end()));
  const std::vector<uint8_t> rank0 = store.get("shm_host/0");
  if (std::string(rank0.begin(), rank0.end()) == "off") return nullptr;
  for (int64_t r = 1; r < env.world_size; ++r) {
    if (store.get("shm_host/" + std::to_string(r)) != rank0) return nullptr;
  }
  // A fresh name per job; rank 0 unlinks it as soon as every rank has mapped the segment.
  if (env.rank == 0) {
    std::random_device random;
    const std::string name = "/frugal-" + std::to_string(::getpid()) + "-" +
                             std::to_string(random()) + std::to_string(random());
    store.set("shm_name", std::vector<uint8_t>(name.begin(), name.end()));
  }
  const std::vector<uint8_t> bytes = store.get("shm_name");
  const std::string name(bytes.begin(), bytes.end());
  std::unique_ptr<ShmAllReduce> shm;
  std::string reason;
  try {
    // Pieces of at most 4 MiB: (WORLD_SIZE + 1) x 4 MiB of /dev/shm, which Docker keeps at 64 MiB
    // by default. Every rank is connected already, so a short timeout for finding the segment.
    const double open_seconds = std::min(config.timeout_seconds, 10.0);
    shm = ShmAllReduce::open(name, env.rank, env.world_size, 4 << 20,
                             milliseconds(static_cast<int64_t>(open_seconds * 1000)));
    shm->set_timeout(milliseconds(static_cast<int64_t>(config.timeout_seconds * 1000)));
  } catch (const std::exception& e) {
    reason = e.what();
    shm.reset();
  }
  // Every rank uses shared memory, or none does.
  at::Tensor ok = at::full({1}, shm ? 1 : 0, at::kInt);
  std::vector<at::Tensor> v{ok};
  pg.allreduce(v)->wait();
  if (ok.item<int>() == env.world_size) return shm;
  if (!reason.empty()) {
    std::cerr << "frugal: rank " << env.rank << ": gradients go over Gloo, not shared memory ("
              << reason.substr(0, reason.find('\n')) << ")\n";
  }
  return nullptr;
}
#endif

}  // namespace

std::unique_ptr<Strategy> make_data_parallel(const TrainerOptions& options,
                                             c10::DeviceType device_type,
                                             const DistributedEnv& env) {
  const DataParallelConfig config = read_data_parallel_config(options);
  const auto timeout = milliseconds(static_cast<int64_t>(config.timeout_seconds * 1000));
  if (device_type == c10::kCUDA) {
#ifdef USE_C10D_NCCL
    const int64_t visible = static_cast<int64_t>(c10::cuda::device_count());
    FRUGAL_CHECK(env.local_rank < visible, "data parallel: LOCAL_RANK=", env.local_rank,
                 " but only ", visible,
                 " CUDA devices are visible: start one process per GPU (torchrun "
                 "--nproc_per_node <= ",
                 visible, ")");
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(env.local_rank));
    auto store = make_store(env, timeout);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(env.rank),
                                                          static_cast<int>(env.world_size), opts);
    if (env.rank == 0) {
      std::cerr << "frugal: data parallel on " << env.world_size << " CUDA ranks (NCCL)\n";
    }
    return std::make_unique<DataParallel<c10d::ProcessGroupNCCL>>(
        pg, env, c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank)), config,
        exchange_peers(*store, env));
#else
    FRUGAL_CHECK(false,
                 "data parallel on CUDA needs NCCL, and this build of frugal has none (LibTorch "
                 "without CUDA, or nccl.h not found at configure time); use accelerator=\"cpu\" "
                 "for Gloo");
#endif
  }
#ifdef USE_C10D_GLOO
  auto store = make_store(env, timeout);
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost") {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  try {
    pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(env.rank),
                                                     static_cast<int>(env.world_size), opts);
  } catch (const std::exception& e) {
    std::string reason = e.what();
    FRUGAL_CHECK(false, "data parallel: rank ", env.rank, " of ", env.world_size,
                 " could not connect the Gloo process group within ", config.timeout_seconds,
                 " s: ", reason.substr(0, reason.find('\n')));
  }
  auto shm = open_shared_memory(*store, *pg, env, config);
  if (env.rank == 0) {
    std::cerr << "frugal: data parallel on " << env.world_size << " CPU ranks (Gloo), gradients "
              << (shm ? "through shared memory" : "over Gloo") << "\n";
  }
  LocalPeers peers = exchange_peers(*store, env);
  return std::make_unique<DataParallel<c10d::ProcessGroupGloo>>(
      pg, env, c10::Device(c10::kCPU), config, std::move(peers), std::move(shm));
#else
  FRUGAL_CHECK(false, "data-parallel training (WORLD_SIZE=", env.world_size,
               ") needs c10d's Gloo backend on CPU, and this build of frugal has none (Gloo's "
               "headers were not found at configure time: install libgloo-dev)");
  return nullptr;
#endif
}

}  // namespace frugal::detail

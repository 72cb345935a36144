#include "frugal/budget/batch_size_finder.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>

#include "budget/memory_meter.h"
#include "compat.h"
#include "frugal/callbacks/memory_monitor.h"
#include "frugal/error.h"
#include "frugal/models/finetune.h"
#include "frugal/precision/grad_scaler.h"
#include "optim/optim_util.h"
#include "precision/plugin.h"

namespace frugal {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

std::string mib(double bytes) { return fmt::format("{:.1f} MiB", bytes / kMiB); }

// Note [The finder restores state bit for bit]: a trial runs real optimizer steps, so it changes
// parameters, buffers (BatchNorm statistics), gradients, the optimizer's state and options, the
// RNG (dropout) and the module's train/eval mode. All are copied before the search and written
// back after every trial: parameters and buffers by copy_ into the same tensors (so the
// optimizer's references stay valid), the optimizer through its own save/load into memory after
// clearing its state (load only adds entries), its group options as clones.
class Snapshot {
 public:
  Snapshot(torch::nn::Module& module, torch::optim::Optimizer& optimizer, c10::Device device)
      : module_(module), optimizer_(optimizer), device_(device) {
    at::NoGradGuard no_grad;
    for (const auto& p : module.parameters()) {
      live_.push_back(p);
      saved_.push_back(p.detach().clone());
      grads_.push_back(p.grad().defined() ? p.grad().detach().clone() : at::Tensor());
    }
    for (const auto& b : module.buffers()) {
      live_.push_back(b);
      saved_.push_back(b.detach().clone());
      grads_.emplace_back();
    }
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    optimizer_bytes_ = bytes.str();
    for (const auto& group : optimizer.param_groups()) options_.push_back(group.options().clone());
    training_ = module.is_training();
    rng_cpu_ = generator_state(c10::Device(c10::kCPU));
    if (!device.is_cpu()) rng_device_ = generator_state(device);
  }

  void restore() {
    {
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < live_.size(); ++i) {
        live_[i].detach().copy_(saved_[i]);
        if (live_[i].requires_grad() || grads_[i].defined()) {
          live_[i].mutable_grad() = grads_[i].defined() ? grads_[i].clone() : at::Tensor();
        }
      }
    }
    optimizer_.state().clear();
    torch::serialize::InputArchive archive;
    std::istringstream bytes(optimizer_bytes_);
    archive.load_from(bytes);
    optimizer_.load(archive);
    for (size_t i = 0; i < options_.size(); ++i) {
      optimizer_.param_groups()[i].set_options(options_[i]->clone());
    }
    module_.train(training_);
    set_generator_state(c10::Device(c10::kCPU), rng_cpu_);
    if (rng_device_.defined()) set_generator_state(device_, rng_device_);
  }

 private:
  static at::Tensor generator_state(c10::Device device) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
  }
  static void set_generator_state(c10::Device device, const at::Tensor& state) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }

  torch::nn::Module& module_;
  torch::optim::Optimizer& optimizer_;
  c10::Device device_;
  std::vector<at::Tensor> live_;
  std::vector<at::Tensor> saved_;
  std::vector<at::Tensor> grads_;
  std::string optimizer_bytes_;
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options_;
  bool training_ = true;
  at::Tensor rng_cpu_;
  at::Tensor rng_device_;
};

// Note [How a trial's memory is measured]: on CPU, the peak RSS growth over the RSS at the
// trial's start. Before each trial, malloc_trim hands the allocator's free pages back to the
// kernel (otherwise a trial reuses pages a bigger one left behind and seems to need nothing), and
// /proc/self/clear_refs resets the peak (VmHWM) to the current RSS; it works on the kernels we run
// on, and where it is refused the finder stops with an error rather than report a stale peak
// (a fork per trial would be the fallback; see docs/budget.md). On CUDA: the growth of the
// caching allocator's peak reserved bytes over the reserved bytes after emptyCache.
// Takes the baseline of a trial; on CPU refuses to go on when the peak cannot be reset.
void start_meter(detail::PeakMemoryMeter& meter, bool cuda) {
  const bool reset = meter.start();
  FRUGAL_CHECK(cuda || reset,
               "find_batch_size: cannot reset the peak RSS (writing /proc/self/clear_refs was "
               "refused: peak ",
               mib(meter.baseline().peak_rss), ", current ", mib(meter.baseline().rss),
               "), so a CPU byte budget cannot be measured in this process");
}

class Search {
 public:
  Search(Task& task, torch::optim::Optimizer& optimizer, const at::Tensor& data,
         const at::Tensor& targets, const BatchSizeFinderOptions& options)
      : task_(task),
        optimizer_(optimizer),
        data_(data),
        targets_(targets),
        options_(options),
        snapshot_(task.module(), optimizer, options.device()),
        meter_(options.device()) {
    precision_ = detail::make_precision(options.precision(), options.device());
    if (precision_->mode() == Precision::k16Mixed) {
      // A trial must reach the optimizer step (which allocates the optimizer's state); the
      // default initial scale of 65536 skips the first steps on overflow, a scale of 1 does not.
      precision_ = detail::make_loss_scaling_plugin(GradScalerOptions().init_scale(1.0),
                                                    options.device(), /*autocast=*/true);
    }
  }

  BatchSizeTrial run(int64_t size) {
    BatchSizeTrial trial;
    trial.batch_size = size;
    bool out_of_memory = false;
    try {
      start_meter(meter_, options_.device().is_cuda());
      {
        task_.module().train();
        keep_frozen_batchnorm_eval(task_.module());
        const Batch batch = make_batch(size);
        for (int64_t s = 0; s < options_.steps_per_trial(); ++s) step(batch);
      }
      trial.bytes = meter_.growth();
    } catch (const std::exception& e) {
      if (!compat::is_out_of_memory(e)) {
        detail::zero_grad_set_to_none(optimizer_);
        snapshot_.restore();
        throw;
      }
      out_of_memory = true;  // the trial's tensors are gone with its scope; free the cache below
    }
    detail::zero_grad_set_to_none(optimizer_);
    snapshot_.restore();
    if (out_of_memory) {
      compat::empty_device_cache(options_.device());
      trial.outcome = BatchSizeTrial::Outcome::kOutOfMemory;
    } else if (options_.budget_bytes() > 0 &&
               static_cast<double>(trial.bytes) > options_.budget_bytes()) {
      trial.outcome = BatchSizeTrial::Outcome::kOverBudget;
    }
    if (options_.out() != nullptr) {
      *options_.out() << "batch size finder: " << size << ": "
                      << (trial.bytes >= 0 ? mib(static_cast<double>(trial.bytes)) : "-") << " "
                      << to_string(trial.outcome) << "\n"
                      << std::flush;
    }
    return trial;
  }

 private:
  Batch make_batch(int64_t size) {
    // A copy, as a loader makes one; sizes beyond the samples given cycle through them.
    at::Tensor index =
        at::arange(size, at::TensorOptions().dtype(at::kLong).device(data_.device()));
    if (size > data_.size(0)) index = index.remainder(data_.size(0));
    Batch batch;
    batch.data = data_.index_select(0, index).to(options_.device());
    batch.target = targets_.index_select(0, index.to(targets_.device())).to(options_.device());
    return batch;
  }

  void step(const Batch& batch) {
    metrics_.set_context(Stage::kTrain, batch.size());
    StepContext ctx(metrics_, options_.context(), Stage::kTrain, 0);
    at::Tensor loss;
    {
      auto autocast = precision_->forward_scope();
      loss = task_.training_step(batch, ctx);
    }
    FRUGAL_CHECK(loss.defined() && loss.numel() == 1 && loss.requires_grad(),
                 "find_batch_size: training_step must return a scalar loss that requires grad");
    precision_->backward(loss);
    loss = at::Tensor();
    precision_->unscale(optimizer_);
    precision_->step(optimizer_, /*skip=*/false);
    detail::zero_grad_set_to_none(optimizer_);
  }

  Task& task_;
  torch::optim::Optimizer& optimizer_;
  const at::Tensor& data_;
  const at::Tensor& targets_;
  const BatchSizeFinderOptions& options_;
  Snapshot snapshot_;
  detail::PeakMemoryMeter meter_;
  Metrics metrics_;
  std::unique_ptr<detail::PrecisionPlugin> precision_;
};

void check_inputs(const at::Tensor& data, const at::Tensor& targets,
                  const BatchSizeFinderOptions& options) {
  options.validate();
  FRUGAL_CHECK(data.defined() && data.dim() >= 1 && data.size(0) >= 1,
               "find_batch_size: data must hold at least one sample along dim 0, got ",
               data.defined() ? c10::str("shape ", data.sizes()) : std::string("no tensor"));
  FRUGAL_CHECK(targets.defined() && targets.dim() >= 1 && targets.size(0) == data.size(0),
               "find_batch_size: targets must have ", data.size(0), " rows like data, got ",
               targets.defined() ? c10::str("shape ", targets.sizes()) : std::string("no tensor"));
  FRUGAL_CHECK(options.max_size() <= data.size(0),
               "BatchSizeFinderOptions: max_size must be <= the number of samples (", data.size(0),
               "), got ", options.max_size());
  FRUGAL_CHECK(options.start_size() <= (options.max_size() < 0 ? data.size(0) : options.max_size()),
               "BatchSizeFinderOptions: start_size (", options.start_size(),
               ") must be <= max_size (",
               options.max_size() < 0 ? data.size(0) : options.max_size(), ")");
  FRUGAL_CHECK(options.device().is_cuda() || options.budget_bytes() > 0,
               "BatchSizeFinderOptions: budget_bytes must be > 0 on ", options.device(),
               " (the limit there is a byte budget), got ", options.budget_bytes());
}

BatchSizeResult search(Task& task, torch::optim::Optimizer& optimizer, const at::Tensor& data,
                       const at::Tensor& targets, const BatchSizeFinderOptions& options) {
  check_inputs(data, targets, options);
  task.module().to(options.device());
  const int64_t max_size = options.max_size() < 0 ? data.size(0) : options.max_size();
  Search trials(task, optimizer, data, targets, options);
  BatchSizeResult result;
  result.budget_bytes = options.budget_bytes();
  result.device = options.device();
  result.precision = options.precision();
  if (options.warmup()) trials.run(options.start_size());

  std::optional<BatchSizeTrial> best;
  std::optional<int64_t> too_big;
  auto budget_left = [&] {
    return static_cast<int64_t>(result.trials.size()) < options.max_trials();
  };
  for (int64_t size = options.start_size(); budget_left();) {
    result.trials.push_back(trials.run(size));
    if (!result.trials.back().fits()) {
      too_big = size;
      break;
    }
    best = result.trials.back();
    if (size == max_size) break;
    size = std::min(size * 2, max_size);
  }
  if (best && too_big && options.mode() == BatchSizeSearch::kPowerThenBinary) {
    int64_t low = best->batch_size;
    int64_t high = *too_big;
    while (high - low > 1 && budget_left()) {
      const int64_t mid = low + (high - low) / 2;
      result.trials.push_back(trials.run(mid));
      if (result.trials.back().fits()) {
        best = result.trials.back();
        low = mid;
      } else {
        high = mid;
      }
    }
  }
  if (!best) {
    const BatchSizeTrial& first = result.trials.front();
    FRUGAL_CHECK(false, "find_batch_size: even start_size=", options.start_size(),
                 " does not fit on ", options.device(), " (",
                 first.outcome == BatchSizeTrial::Outcome::kOutOfMemory
                     ? std::string("out of memory")
                     : c10::str("uses ", mib(static_cast<double>(first.bytes)),
                                ", budget_bytes=", mib(options.budget_bytes())),
                 ")");
  }
  result.batch_size = best->batch_size;
  result.bytes_used = best->bytes;
  return result;
}

}  // namespace

const char* to_string(BatchSizeTrial::Outcome outcome) {
  switch (outcome) {
    case BatchSizeTrial::Outcome::kFits:
      return "fits";
    case BatchSizeTrial::Outcome::kOverBudget:
      return "over budget";
    case BatchSizeTrial::Outcome::kOutOfMemory:
      return "out of memory";
  }
  return "?";
}

void BatchSizeFinderOptions::validate() const {
  FRUGAL_CHECK(budget_bytes_ >= 0, "BatchSizeFinderOptions: budget_bytes must be >= 0, got ",
               budget_bytes_);
  FRUGAL_CHECK(start_size_ >= 1, "BatchSizeFinderOptions: start_size must be >= 1, got ",
               start_size_);
  FRUGAL_CHECK(max_size_ == -1 || max_size_ >= 1,
               "BatchSizeFinderOptions: max_size must be >= 1 (or -1: all samples), got ",
               max_size_);
  FRUGAL_CHECK(steps_per_trial_ >= 1, "BatchSizeFinderOptions: steps_per_trial must be >= 1, got ",
               steps_per_trial_);
  FRUGAL_CHECK(max_trials_ >= 1, "BatchSizeFinderOptions: max_trials must be >= 1, got ",
               max_trials_);
  FRUGAL_CHECK(device_.is_cpu() || device_.is_cuda(),
               "BatchSizeFinderOptions: device must be cpu or cuda, got ", device_);
}

std::string BatchSizeResult::describe() const {
  std::string limit = device.is_cuda() ? std::string("CUDA memory") : std::string();
  if (budget_bytes > 0) {
    limit += (limit.empty() ? "" : " and ") + std::string("budget ") + mib(budget_bytes) +
             (device.is_cuda() ? " of peak reserved growth" : " of peak RSS growth");
  }
  std::string out = fmt::format(
      "batch size finder on {} ({}), limit {}: largest micro-batch {} uses {}\n", device.str(),
      frugal::to_string(precision), limit, batch_size, mib(static_cast<double>(bytes_used)));
  out += fmt::format("  {:>8}  {:>12}  {}\n", "size", "memory", "outcome");
  for (const auto& t : trials) {
    out += fmt::format("  {:>8}  {:>12}  {}\n", t.batch_size,
                       t.bytes >= 0 ? mib(static_cast<double>(t.bytes)) : std::string("-"),
                       to_string(t.outcome));
  }
  return out;
}

BatchSizeResult find_batch_size(Task& task, torch::optim::Optimizer& optimizer,
                                const at::Tensor& data, const at::Tensor& targets,
                                BatchSizeFinderOptions options) {
  options.validate();
  return search(task, optimizer, data, targets, options);
}

BatchSizeResult find_batch_size(Task& task, const at::Tensor& data, const at::Tensor& targets,
                                BatchSizeFinderOptions options) {
  options.validate();
  task.module().to(options.device());  // the optimizer is built on the parameters' device
  OptimizerConfig config = task.configure_optimizers();
  FRUGAL_CHECK(config.optimizer != nullptr,
               "find_batch_size: configure_optimizers returned no "
               "optimizer");
  return find_batch_size(task, *config.optimizer, data, targets, options);
}

BatchSizeTrial measure_batch_size(Task& task, const at::Tensor& data, const at::Tensor& targets,
                                  int64_t batch_size, BatchSizeFinderOptions options) {
  options.max_size(-1);
  check_inputs(data, targets, options);
  FRUGAL_CHECK(batch_size >= 1, "measure_batch_size: batch_size must be >= 1, got ", batch_size);
  task.module().to(options.device());
  OptimizerConfig config = task.configure_optimizers();
  FRUGAL_CHECK(config.optimizer != nullptr,
               "measure_batch_size: configure_optimizers returned no optimizer");
  Search trials(task, *config.optimizer, data, targets, options);
  if (options.warmup()) trials.run(batch_size);  // one-time costs of this size are not charged
  return trials.run(batch_size);
}

// Note [Budget plans divide the effective batch exactly]: with m the largest micro-batch that
// fits and B = effective_batch / world_size the per-rank batch, k = ceil(B / m) micro-batches
// would do if m divided B; otherwise k grows until it divides B, and the micro-batch is B / k
// (<= m, so it fits). Then micro x k x world == effective exactly, for every window but the
// epoch's last, which the Trainer scales by its own size (Note [The last accumulation window is
// scaled by its own size] in trainer.cpp). k = B always works (micro-batch 1).
BudgetPlan plan_budget(Task& task, const at::Tensor& data, const at::Tensor& targets,
                       double budget_bytes, int64_t effective_batch, int64_t world_size,
                       BatchSizeFinderOptions options) {
  FRUGAL_CHECK(effective_batch >= 1, "plan_budget: effective_batch_size must be >= 1, got ",
               effective_batch);
  FRUGAL_CHECK(world_size >= 1, "plan_budget: world_size must be >= 1, got ", world_size);
  FRUGAL_CHECK(
      effective_batch % world_size == 0, "plan_budget: effective_batch_size=", effective_batch,
      " is not divisible by the world size ", world_size, "; choose a multiple of ", world_size);
  FRUGAL_CHECK(budget_bytes > 0 || options.device().is_cuda(),
               "plan_budget: memory_budget must be > 0 bytes on ", options.device(), ", got ",
               budget_bytes);
  const int64_t per_rank = effective_batch / world_size;
  const int64_t cap = std::min(per_rank, data.defined() && data.dim() >= 1 ? data.size(0) : 1);
  options.budget_bytes(budget_bytes)
      .max_size(options.max_size() < 0 ? cap : std::min(options.max_size(), cap))
      .start_size(std::min(options.start_size(), cap));
  BudgetPlan plan;
  plan.search = find_batch_size(task, data, targets, options);
  const int64_t fits = plan.search.batch_size;
  int64_t k = (per_rank + fits - 1) / fits;
  while (per_rank % k != 0) ++k;
  plan.accumulate = k;
  plan.micro_batch = per_rank / k;
  plan.effective_batch = effective_batch;
  plan.world_size = world_size;
  return plan;
}

std::string BudgetPlan::describe() const {
  std::string why;
  if (accumulate == 1) {
    why = "the whole per-rank batch fits, no accumulation";
  } else if (micro_batch == search.batch_size) {
    why = fmt::format("{} micro-batches of the largest size that fits", accumulate);
  } else {
    why = fmt::format("{} is the largest divisor of the per-rank batch {} not above {}",
                      micro_batch, effective_batch / world_size, search.batch_size);
  }
  const std::string budget = search.budget_bytes > 0 ? mib(search.budget_bytes) : "CUDA memory";
  return fmt::format(
      "memory budget {}: micro-batch {} fits (uses {}); effective batch {} = micro-batch {} x "
      "accumulate_grad_batches {} x world size {} ({})",
      budget, search.batch_size, mib(static_cast<double>(search.bytes_used)), effective_batch,
      micro_batch, accumulate, world_size, why);
}

}  // namespace frugal

// The Trainer's loops. The training step's order lives in one place: run_training_batch() and
// optimizer_step() below, in the order of DESIGN.md.
#include "frugal/trainer.h"

#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <set>
#include <thread>

#include "compat.h"
#include "distributed/strategy.h"
#include "frugal/budget/batch_size_finder.h"
#include "frugal/budget/cpu_memory.h"
#include "frugal/callbacks/batch_size_finder.h"
#include "frugal/callbacks/early_stopping.h"
#include "frugal/callbacks/memory_monitor.h"
#include "frugal/callbacks/model_checkpoint.h"
#include "frugal/callbacks/progress_bar.h"
#include "frugal/callbacks/timer.h"
#include "frugal/error.h"
#include "frugal/hardware/cpu_threads.h"
#include "frugal/io/checkpoint.h"
#include "frugal/loggers/report.h"
#include "frugal/loggers/tensorboard.h"
#include "frugal/models/finetune.h"
#include "frugal/optim/lr_scheduler.h"
#include "frugal/version.h"
#include "io/checkpoint_io.h"
#include "io/checksum.h"
#include "models/layout.h"
#include "optim/optim_util.h"
#include "precision/plugin.h"

// Calls `hook` on every callback, in order: FRUGAL_HOOK(on_fit_start, task).
#define FRUGAL_HOOK(hook, ...) \
  for (auto& cb_ : callbacks_) cb_->hook(*this, __VA_ARGS__)

namespace frugal {

// What one fit needs beyond the state callbacks see.
struct Trainer::Fit {
  Task* task = nullptr;
  OptimizerConfig config;
  std::unique_ptr<detail::PrecisionPlugin> precision;
  PrecisionChoice precision_choice;      // options' precision with "auto" resolved at fit start
  std::vector<at::Tensor> params;        // trainable parameters, in optimizer order
  int64_t total_batches = 0;             // training batches over all epochs of this fit
  int64_t steps_taken = 0;               // optimizer steps that were not skipped
  bool window_nonfinite = false;         // a non-finite loss in the current accumulation window
  std::vector<bool> agreed;              // the step's votes, OR-ed over the ranks (Strategy)
  int64_t val_batches = 0;               // validation batches per check
  int64_t val_check_batches = 0;         // validate every n training batches
  bool epoch_finished = false;           // the current epoch's end-of-epoch work has begun
  bool window_open = false;              // gradients of an unfinished accumulation window are held
  bool batch_validated = true;           // the validation due after the last batch has begun
  std::optional<at::Tensor> resume_rng;  // CPU generator state to restore before training
  std::optional<at::Tensor> resume_device_rng;  // the accelerator's (CUDA) generator state
  std::optional<StateDict> resume_metrics;
  // Out-of-memory recovery (Note [Out-of-memory recovery]): what redoing the current accumulation
  // window needs. Filled only with TrainerOptions::oom_recovery; window_metrics is set from the
  // window's first batch to its optimizer step.
  std::vector<Batch> window_batches;                // its batches so far, the current one last
  std::vector<at::Tensor> window_base_grads;        // gradients at its start (a resume inside it)
  std::optional<Metrics::Snapshot> window_metrics;  // the metrics at its start
  bool window_base_nonfinite = false;
  // The deferred non-finite loss check (Note [The loss is checked one micro-batch late]).
  at::Tensor loss_host;                   // the last micro-batch's loss, on the host
  float loss_value = 0.0f;                // ... or its value, read directly (float32 on the CPU)
  std::optional<c10::Event> loss_copied;  // recorded after its copy (accelerators)
  bool loss_pending = false;
  int64_t loss_epoch = 0;
  int64_t loss_batch = 0;
  int64_t loss_step = 0;
};

namespace {

c10::Device resolve_device(const TrainerOptions& options) {
  const std::string& acc = options.accelerator();
  const bool cuda = torch::cuda::is_available();
  if (acc == "cpu") return c10::Device(c10::kCPU);
  if (acc == "cuda" || acc == "gpu") {
#ifdef FRUGAL_WITH_CUDA
    const char* build = "this LibTorch has CUDA, but no device is visible";
#else
    const char* build = "this LibTorch was built without CUDA";
#endif
    FRUGAL_CHECK(cuda, "accelerator=\"", acc, "\" but no CUDA device is usable (", build,
                 "); use accelerator=\"cpu\" or \"auto\"");
    return c10::Device(c10::kCUDA, 0);
  }
  return cuda ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
}

/// The run's first lines: CPU threads (and why), BLAS, LibTorch. Printed by rank 0, once per
/// process unless what they say changes (tests build many Trainers).
void announce_hardware(const TrainerOptions& options, bool global_zero) {
  std::string threads;
  if (options.num_threads() == -1) {
    threads = std::to_string(at::get_num_threads()) + " (LibTorch's setting: num_threads=-1)";
  } else {
    const ThreadDecision decision = apply_cpu_threads(static_cast<int>(options.num_threads()));
    threads = std::to_string(decision.threads) + " (" + decision.reason + ")";
  }
  static std::string last;
  const std::string text = "frugal: CPU threads: " + threads +
                           "\nfrugal: BLAS: " + blas_description() + "; " + libtorch_description() +
                           "\n";
  if (text == last) return;
  last = text;
  if (global_zero) std::cout << text << std::flush;
}

/// A 4-D input batch in the channels_last memory format (TrainerOptions::channels_last).
void to_channels_last(Batch* batch) {
  if (batch->data.dim() == 4) batch->data = batch->data.contiguous(at::MemoryFormat::ChannelsLast);
}

/// Lightning's fast_dev_run: n batches of everything, once, nothing written.
TrainerOptions effective_options(TrainerOptions options) {
  options.validate();
  if (options.fast_dev_run() > 0) {
    const int64_t n = options.fast_dev_run();
    options.max_epochs(1)
        .max_steps(n)
        .limit_train_batches(BatchLimit(n * options.accumulation_for_epoch(0)))
        .limit_val_batches(BatchLimit(n))
        .limit_test_batches(BatchLimit(n))
        .val_check_interval(BatchLimit(1.0))
        .check_val_every_n_epoch(1)
        .num_sanity_val_steps(0)
        .logger(false);
  }
  return options;
}

/// Total p-norm of the gradients, computed on device (no host sync).
at::Tensor total_grad_norm(const std::vector<at::Tensor>& grads, double norm_type) {
  std::vector<at::Tensor> norms;
  norms.reserve(grads.size());
  if (std::isinf(norm_type)) {
    for (const auto& g : grads) norms.push_back(g.detach().abs().max().to(at::kFloat));
    return at::stack(norms).max();
  }
  for (const auto& g : grads) norms.push_back(g.detach().norm(norm_type).to(at::kFloat));
  return at::stack(norms).norm(norm_type);
}

// Note [Preemption]: SIGTERM (Slurm, Kubernetes) and SIGINT only set a flag here; the training
// loop looks at it after each optimizer step, saves a checkpoint and returns cleanly.
std::atomic<int> g_signal{0};
extern "C" void frugal_on_signal(int signo) { g_signal.store(signo); }

/// Installs the handlers for the duration of a fit, and restores the previous ones.
class SignalScope {
 public:
  SignalScope() {
    g_signal.store(0);
    struct sigaction action {};
    action.sa_handler = frugal_on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, &old_term_);
    sigaction(SIGINT, &action, &old_int_);
  }
  ~SignalScope() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
  }

 private:
  struct sigaction old_term_ {};
  struct sigaction old_int_ {};
};

}  // namespace

Trainer::Trainer(TrainerOptions options, std::vector<std::shared_ptr<Callback>> callbacks,
                 std::vector<std::shared_ptr<Logger>> loggers)
    : options_(effective_options(std::move(options))),
      callbacks_(std::move(callbacks)),
      loggers_(std::move(loggers)) {
  // Checkpoints keep each stateful callback's state under its key: two such callbacks with one key
  // (e.g. two ModelCheckpoints that differ only in dirpath) are refused here, not at the first
  // save hours later.
  std::map<std::string, size_t> state_keys;
  for (size_t i = 0; i < callbacks_.size(); ++i) {
    FRUGAL_CHECK(callbacks_[i], "Trainer: a callback is null");
    if (callbacks_[i]->state_dict().empty()) continue;
    const auto [it, fresh] = state_keys.emplace(callbacks_[i]->state_key(), i);
    FRUGAL_CHECK(fresh, "Trainer: callbacks ", it->second, " and ", i, " share the state key \"",
                 it->first,
                 "\", so a checkpoint could not tell their states apart; give them different "
                 "options (e.g. another monitor) or override state_key()");
  }
  for (const auto& lg : loggers_) FRUGAL_CHECK(lg, "Trainer: a logger is null");
  strategy_ = detail::make_strategy(options_, resolve_device(options_).type());
  device_ = strategy_->device();
  announce_hardware(options_, is_global_zero());
  FRUGAL_CHECK(!options_.oom_recovery() || world_size() == 1,
               "oom_recovery works on a single device only: with data parallel (world size ",
               world_size(),
               ") one rank redoing a step would leave the others waiting in the gradient "
               "all-reduce; turn it off, or plan the micro-batch beforehand with memory_budget");
  max_epochs_ = options_.max_epochs() >= 0  ? options_.max_epochs()
                : options_.max_steps() >= 0 ? -1
                                            : 1000;
  const bool has_bar = std::any_of(callbacks_.begin(), callbacks_.end(), [](const auto& cb) {
    return dynamic_cast<ProgressBar*>(cb.get()) != nullptr;
  });
  if (options_.enable_progress_bar() && !has_bar) {
    callbacks_.push_back(std::make_shared<ProgressBar>());
  }
  const bool has_timer = std::any_of(callbacks_.begin(), callbacks_.end(), [](const auto& cb) {
    return dynamic_cast<Timer*>(cb.get()) != nullptr;
  });
  if (options_.max_time_seconds() > 0 && has_timer && is_global_zero()) {
    std::cerr << "frugal: ignoring max_time: the callbacks already hold a Timer (as Lightning)\n";
  } else if (options_.max_time_seconds() > 0) {
    callbacks_.push_back(std::make_shared<Timer>(options_.max_time_seconds()));
  }
  if (options_.fast_dev_run() > 0 || !is_global_zero()) {
    loggers_.clear();  // only rank 0 writes logs
  } else if (options_.logger() && loggers_.empty()) {
    // As Lightning's default (TensorBoard), plus CSV; both in the same version_N folder.
    loggers_ = make_file_loggers("both", options_.default_root_dir());
  }
}

Trainer::~Trainer() = default;

namespace {
/// The module in training mode, frozen BatchNorm layers left in eval (frugal/models/finetune.h).
void enter_train_mode(Task& task) {
  task.module().train();
  keep_frozen_batchnorm_eval(task.module());
}

// The global step in a checkpoint's file name ("...step=120..."), -1 when it has none.
int64_t step_in_name(const std::string& path) {
  const std::string name = std::filesystem::path(path).filename().string();
  const size_t at = name.find("step=");
  if (at == std::string::npos) return -1;
  try {
    return std::stoll(name.substr(at + 5));
  } catch (const std::exception&) {
    return -1;
  }
}
}  // namespace

void Trainer::write_fit_report(const std::string& failure) {
  const CSVLogger* csv = nullptr;
  for (const auto& lg : loggers_) {
    if ((csv = dynamic_cast<const CSVLogger*>(lg.get()))) break;
  }
  // The report is made from metrics.csv: none without a CSVLogger, or before its first row.
  if (!csv || !std::filesystem::exists(csv->metrics_path())) return;
  RunReportInfo info;
  info.title = "frugal run " + csv->log_dir();
  info.stop_reason = failure.empty() ? state_.stop_reason : failure;
  info.environment = report_environment();
  info.environment.emplace_back("Device", device_.str());
  std::set<int64_t> checkpoint_steps;
  for (const auto& cb : callbacks_) {
    if (const auto* ckpt = dynamic_cast<const ModelCheckpoint*>(cb.get())) {
      for (const auto& kv : ckpt->best_k_models()) checkpoint_steps.insert(step_in_name(kv.first));
      checkpoint_steps.insert(step_in_name(ckpt->best_model_path()));
      checkpoint_steps.insert(step_in_name(ckpt->last_model_path()));
    } else if (const auto* es = dynamic_cast<const EarlyStopping*>(cb.get())) {
      if (!es->stopping_reason().empty()) {
        info.marks.emplace_back(state_.global_step, "early stop");
      }
    } else if (const auto* mm = dynamic_cast<const MemoryMonitor*>(cb.get())) {
      if (mm->options().warn_bytes() > 0) {
        info.memory_thresholds_mb.emplace_back(mm->options().warn_bytes() / 1048576.0, "warn");
      }
      if (mm->options().stop_bytes() > 0) {
        info.memory_thresholds_mb.emplace_back(mm->options().stop_bytes() / 1048576.0, "stop");
      }
    }
  }
  for (int64_t step : checkpoint_steps) {
    if (step >= 0) info.marks.emplace_back(step, "checkpoint");
  }
  try {
    write_run_report(csv->log_dir(), info);
  } catch (const std::exception& e) {
    // A report is a convenience: its failure must not fail a finished fit (or hide why one
    // failed).
    std::cerr << "frugal: could not write the run report: " << e.what() << "\n";
  }
}

torch::optim::Optimizer* Trainer::optimizer() const {
  return fit_ ? fit_->config.optimizer.get() : nullptr;
}

LRScheduler* Trainer::lr_scheduler() const { return fit_ ? fit_->config.scheduler.get() : nullptr; }

std::string Trainer::log_dir() const {
  for (const auto& lg : loggers_) {
    if (!lg->log_dir().empty()) return lg->log_dir();
  }
  return options_.default_root_dir();
}

void Trainer::request_stop(const std::string& reason) {
  if (!state_.should_stop) state_.stop_reason = reason;
  state_.should_stop = true;
}

bool Trainer::can_stop(bool at_epoch_end) const {
  const int64_t epochs_done = state_.epoch + (at_epoch_end ? 1 : 0);
  return epochs_done >= options_.min_epochs() && state_.global_step >= options_.min_steps();
}

bool Trainer::max_steps_reached() const {
  return options_.max_steps() >= 0 && state_.global_step >= options_.max_steps();
}

void Trainer::prepare(Task& task, BatchSource* a, BatchSource* b) {
  if (options_.seed() >= 0) torch::manual_seed(static_cast<uint64_t>(options_.seed()));
  if (options_.deterministic()) at::globalContext().setDeterministicAlgorithms(true, false);
  task.module().to(device_);
  if (options_.channels_last()) {
    // Before the optimizer exists: its state is created in the parameters' layout.
    detail::set_memory_format(task.module().parameters(), at::MemoryFormat::ChannelsLast);
    detail::set_memory_format(task.module().buffers(), at::MemoryFormat::ChannelsLast);
  }
  for (BatchSource* source : {a, b}) {
    if (source == nullptr) continue;
    source->set_device(device_);
    source->set_shard(global_rank(), world_size());
  }
}

std::function<void(std::vector<at::Tensor>&)> Trainer::metric_reducer() {
  if (world_size() == 1) return {};
  return [this](std::vector<at::Tensor>& tensors) { strategy_->all_reduce_sum(tensors); };
}

int64_t Trainer::global_rank() const { return strategy_->rank(); }
int64_t Trainer::world_size() const { return strategy_->world_size(); }

void Trainer::handle_exception(Task& task, const std::exception& error) {
  // Every callback hears about it, loggers keep what they have; a failing handler must not hide
  // the original error, which reaches the caller unchanged.
  for (auto& cb : callbacks_) {
    try {
      cb->on_exception(*this, task, error);
    } catch (...) {
    }
  }
  for (auto& lg : loggers_) {
    try {
      lg->finalize("failed");
    } catch (...) {
    }
  }
}

// ---------------------------------------------------------------------------------------------
// fit

void Trainer::fit(Task& task, std::shared_ptr<BatchSource> train, std::shared_ptr<BatchSource> val,
                  const std::string& ckpt_path) {
  FRUGAL_CHECK(train != nullptr, "fit: the training data source is null");
  state_ = TrainerState{};
  state_.fn = TrainerFn::kFit;
  metrics_.reset();
  fit_ = std::make_unique<Fit>();
  fit_->task = &task;
  SignalScope signals;
  // frugal/budget/cpu_memory.h: freed tensor memory stays in the process while fit trains on the
  // CPU.
  struct CpuMemoryScope {
    bool kept = false;
    ~CpuMemoryScope() {
      if (kept) release_freed_cpu_memory();
    }
  } cpu_memory;
  try {
    prepare(task, train.get(), val.get());
    if (options_.num_threads() == 0 && train->worker_threads() > 0) {
      // The data source's threads need cores too: the automatic count leaves them theirs.
      const int before = at::get_num_threads();
      const ThreadDecision decision =
          apply_cpu_threads(0, static_cast<int>(train->worker_threads()));
      if (decision.threads != before && is_global_zero()) {
        std::cout << "frugal: CPU threads: " << decision.threads << " (" << decision.reason << ")\n"
                  << std::flush;
      }
    }
    // "auto" is decided once per fit, here; the checkpoint records the outcome.
    fit_->precision_choice = resolve_precision(options_.precision(), device_);
    if (options_.precision() == Precision::kAuto && is_global_zero()) {
      std::cout << "frugal: precision auto -> " << to_string(fit_->precision_choice.precision)
                << " (" << fit_->precision_choice.reason << ")\n"
                << std::flush;
    }
    // Not while something measures memory: budget mode's finder, or a BatchSizeFinder callback.
    const bool measuring_memory =
        options_.effective_batch_size() > 0 ||
        std::any_of(callbacks_.begin(), callbacks_.end(), [](const auto& cb) {
          return dynamic_cast<BatchSizeFinder*>(cb.get()) != nullptr;
        });
    if (device_.is_cpu() && options_.cpu_malloc_tuning() && !measuring_memory) {
      cpu_memory.kept = keep_freed_cpu_memory();
    }
    FRUGAL_HOOK(setup, task, TrainerFn::kFit);
    if (options_.effective_batch_size() > 0) plan_micro_batch(task, *train);
    configure_optimization(task);
    num_training_batches_ = options_.limit_train_batches().resolve(train->num_batches());
    FRUGAL_CHECK(train->num_batches() > 0, "fit: the training source ", train->describe(),
                 " yields no batches");
    if (val) configure_validation(*val);
    ckpt_path_.clear();
    if (!ckpt_path.empty()) {
      ckpt_path_ = resolve_ckpt_path(ckpt_path);
      if (!ckpt_path_.empty()) restore(task, ckpt_path_);
    }

    std::map<std::string, std::string> hparams = options_.to_map();
    for (const auto& [k, v] : task.hparams()) hparams[k] = v;
    for (auto& lg : loggers_) lg->log_hyperparams(hparams);

    FRUGAL_HOOK(on_fit_start, task);
    if (val && fit_->val_batches > 0 && options_.num_sanity_val_steps() != 0) {
      const int64_t n = options_.num_sanity_val_steps() < 0
                            ? fit_->val_batches
                            : std::min(options_.num_sanity_val_steps(), fit_->val_batches);
      state_.sanity_checking = true;
      FRUGAL_HOOK(on_sanity_check_start, task);
      run_evaluation(task, *val, Stage::kValidate, n, /*sanity=*/true);
      FRUGAL_HOOK(on_sanity_check_end, task);
      state_.sanity_checking = false;
      metrics_.reset();  // sanity results are not real metrics
      if (fit_->resume_metrics) metrics_.load_state_dict(*fit_->resume_metrics);
    }
    if (fit_->resume_rng) {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(*fit_->resume_rng);
    }
    if (fit_->resume_device_rng && !device_.is_cpu()) {
      auto gen = at::globalContext().defaultGenerator(device_);
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(*fit_->resume_device_rng);
    }
    run_training(task, *train, val.get());
    FRUGAL_HOOK(on_fit_end, task);
    for (auto& lg : loggers_) lg->finalize("success");
    write_fit_report();
    FRUGAL_HOOK(teardown, task, TrainerFn::kFit);
    strategy_->teardown();
  } catch (const std::exception& e) {
    // Under data parallel each rank says why it failed, at once: a launcher stops the other
    // ranks with SIGTERM as soon as one fails, and the frugal handler for it ends with this
    // scope, so a message printed later by the caller may never come.
    if (strategy_ && strategy_->world_size() > 1) {
      std::cerr << "frugal: rank " << global_rank() << ": fit failed: " << e.what() << "\n";
    }
    handle_exception(task, e);
    write_fit_report(std::string("failed: ") + e.what());
    throw;
  }
}

void Trainer::configure_optimization(Task& task) {
  fit_->config = task.configure_optimizers();
  const OptimizerConfig& config = fit_->config;
  FRUGAL_CHECK(config.optimizer != nullptr, "configure_optimizers returned no optimizer");
  FRUGAL_CHECK(config.frequency >= 1, "OptimizerConfig.frequency must be >= 1, got ",
               config.frequency);
  if (config.scheduler && config.scheduler->needs_metric()) {
    FRUGAL_CHECK(!config.monitor.empty(),
                 "the LR scheduler needs a monitored metric: set OptimizerConfig.monitor (e.g. "
                 "\"val/loss\")");
  }
  for (auto& group : config.optimizer->param_groups()) {
    for (auto& p : group.params()) {
      if (p.requires_grad()) fit_->params.push_back(p);
    }
  }
  FRUGAL_CHECK(!fit_->params.empty(), "the optimizer has no parameters that require grad");
  strategy_->setup(task.module(), fit_->params);
  fit_->precision = detail::make_precision(fit_->precision_choice.precision, device_);
}

// Budget mode (docs/budget.md): the finder picks the micro-batch that fits memory_budget, and
// accumulation makes up the effective batch; the epoch's last window is scaled by its own size.
void Trainer::plan_micro_batch(Task& task, BatchSource& train) {
  auto* loader = dynamic_cast<TensorLoader*>(&train);
  FRUGAL_CHECK(loader != nullptr,
               "memory_budget/effective_batch_size need a TensorLoader training source (the finder "
               "draws its trial batches from it), got ",
               train.describe());
  BudgetPlan plan = plan_budget(task, loader->data(), loader->targets(), options_.memory_budget(),
                                options_.effective_batch_size(), world_size(),
                                BatchSizeFinderOptions()
                                    .device(device_)
                                    .precision(fit_->precision_choice.precision)
                                    .context(this));
  if (world_size() > 1) {  // every rank uses rank 0's plan
    std::vector<at::Tensor> t{
        at::tensor({is_global_zero() ? static_cast<double>(plan.micro_batch) : 0.0,
                    is_global_zero() ? static_cast<double>(plan.accumulate) : 0.0},
                   at::kDouble)};
    strategy_->all_reduce_sum(t);
    plan.micro_batch = static_cast<int64_t>(t[0][0].item<double>());
    plan.accumulate = static_cast<int64_t>(t[0][1].item<double>());
  }
  FRUGAL_CHECK(train.set_batch_size(plan.micro_batch), "the training source ", train.describe(),
               " cannot change its batch size");
  options_.accumulate_grad_batches(plan.accumulate);
  if (is_global_zero()) std::cout << "frugal: " << plan.describe() << "\n" << std::flush;
}

void Trainer::configure_validation(BatchSource& val) {
  fit_->val_batches = options_.limit_val_batches().resolve(val.num_batches());
  const BatchLimit& interval = options_.val_check_interval();
  if (interval.is_fraction) {
    fit_->val_check_batches = std::max<int64_t>(
        1, static_cast<int64_t>(std::floor(interval.value * num_training_batches_)));
  } else {
    fit_->val_check_batches = static_cast<int64_t>(interval.value);
    FRUGAL_CHECK(
        options_.check_val_every_n_epoch() == 0 || fit_->val_check_batches <= num_training_batches_,
        "val_check_interval=", fit_->val_check_batches,
        " batches is more than the training batches per epoch (", num_training_batches_,
        "); set check_val_every_n_epoch(0) to validate across epochs");
  }
}

void Trainer::run_training(Task& task, BatchSource& train, BatchSource* val) {
  FRUGAL_HOOK(on_train_start, task);
  while (num_training_batches_ > 0) {
    if (max_epochs_ >= 0 && state_.epoch >= max_epochs_) break;
    if (max_steps_reached()) break;
    const bool completed = train_epoch(task, train, val);
    if (!completed) break;
    const bool stop = strategy_->any({state_.should_stop && can_stop(/*at_epoch_end=*/false)})[0];
    if (stop && !state_.should_stop) request_stop("stop requested on another rank");
    if (stop) break;
  }
  check_pending_loss();
  FRUGAL_HOOK(on_train_end, task);
}

// As Lightning (_TrainingEpochLoop._should_check_val_fx, checked by tests/conformance): every
// val_check_batches batches (of the epoch, or in total across epochs), and when a requested stop
// (EarlyStopping, request_stop) ends training; not at an epoch end that is no multiple of
// val_check_batches, and not when max_steps ends training.
bool Trainer::should_validate(int64_t batch_idx, bool stop_requested) const {
  if (fit_->val_batches == 0) return false;
  const int64_t every_n_epochs = options_.check_val_every_n_epoch();
  if (every_n_epochs == 0) {  // batch-count driven, across epochs
    return fit_->total_batches % fit_->val_check_batches == 0 || stop_requested;
  }
  if ((state_.epoch + 1) % every_n_epochs != 0) return false;
  return (batch_idx + 1) % fit_->val_check_batches == 0 || stop_requested;
}

// One epoch. Returns true when it ran to its end (false: stopped early).
bool Trainer::train_epoch(Task& task, BatchSource& train, BatchSource* val) {
  const int64_t n = num_training_batches_;
  const int64_t k = options_.accumulation_for_epoch(state_.epoch);
  const int64_t first = state_.epoch_batches_done;  // > 0 when resuming mid-epoch
  fit_->epoch_finished = false;
  train.start_epoch(state_.epoch, first);
  if (first == 0) metrics_.begin_epoch(Stage::kTrain);  // a resumed epoch keeps its accumulators
  enter_train_mode(task);
  FRUGAL_HOOK(on_train_epoch_start, task);

  // Note [A checkpoint between a batch and its validation]: a checkpoint saved in
  // on_train_batch_end (as ModelCheckpoint's step trigger does) comes before the validation due
  // after that batch. Resuming from it continues with the next batch, so the validation runs
  // here first, as it did in the uninterrupted run.
  if (first > 0 && !fit_->batch_validated && val && should_validate(first - 1, false)) {
    fit_->batch_validated = true;
    run_evaluation(task, *val, Stage::kValidate, fit_->val_batches, /*sanity=*/false);
    enter_train_mode(task);
  }

  bool stopped = false;
  for (int64_t i = first; i < n; ++i) {
    std::optional<Batch> batch = train.next();
    FRUGAL_CHECK(batch.has_value(), "the training source ", train.describe(), " ended after ", i,
                 " batches but announced ", train.num_batches());
    if (options_.channels_last()) to_channels_last(&*batch);
    state_.batch_idx = i;
    fit_->batch_validated = false;
    run_training_batch(task, *batch, i);
    ++fit_->total_batches;
    // A stop (max_steps, a callback, the time limit, a signal) takes effect at the end of an
    // accumulation window, never inside one.
    const bool window_end = (i + 1) % k == 0 || i + 1 == n;
    bool stop_requested = false;
    if (window_end) {
      // Every rank takes the same decision at the same step (a signal or a stop request on one
      // rank stops all), so no rank ever waits for another in a collective.
      const std::vector<bool> agreed = step_decisions();
      if (agreed[kVotePreempt]) {
        preempt();
        return false;
      }
      if (agreed[kVoteStop] && !state_.should_stop) request_stop("stop requested on another rank");
      stopped = i + 1 < n && (max_steps_reached() || agreed[kVoteStop]);
      stop_requested = stopped && agreed[kVoteStop];
    }
    if (val && should_validate(i, stop_requested)) {
      fit_->batch_validated =
          true;  // a checkpoint saved by the validation's hooks resumes after it
      run_evaluation(task, *val, Stage::kValidate, fit_->val_batches, /*sanity=*/false);
      enter_train_mode(task);
      // As Lightning: a stop the validation asked for (EarlyStopping) takes effect now, not
      // after another batch; at a window's end only, and agreed by every rank (the epoch's last
      // batch is left to the epoch-end decision in run_training).
      if (!stopped && window_end && i + 1 < n) {
        stopped = strategy_->any({state_.should_stop && can_stop(/*at_epoch_end=*/false)})[0];
        if (stopped && !state_.should_stop) request_stop("stop requested on another rank");
      }
    }
    if (stopped) break;
  }

  // Note [Checkpoint position]: from here on the epoch counts as done: a checkpoint saved by an
  // epoch-end hook resumes at the start of the next epoch, so the epoch's scheduler step happens
  // before those hooks. A checkpoint saved before this point (e.g. after the last validation)
  // resumes here and runs the epoch end.
  metrics_.end_epoch(Stage::kTrain, metric_reducer());
  if (!stopped) {
    fit_->epoch_finished = true;
    step_scheduler(Interval::kEpoch);
  }
  FRUGAL_HOOK(on_train_epoch_end, task);
  log_epoch_metrics();
  if (stopped) return false;
  ++state_.epoch;
  state_.epoch_batches_done = 0;
  fit_->epoch_finished = false;
  return true;
}

// Note [Step decisions travel with the gradients]: at the end of every optimizer step all ranks
// must decide alike whether to save a checkpoint and stop (a signal reached one of them), to stop
// (a callback or the time limit asked on one of them), and, with NanLossPolicy::kSkip, to skip
// the step (a non-finite loss on one of them). A separate all-reduce for these few flags cost
// 0.5 ms per step on the 2-core CPU machine (5% of a 10 ms step: a collective's latency is the
// hand-offs between threads, not the bytes). So each rank casts its votes just before the
// backward pass that communicates the step's gradients, and they ride in the last gradient
// bucket. One process decides on what it knows at the end of the step. Under data parallel, a
// stop asked for after that backward pass (in on_after_backward, on_before_optimizer_step or
// on_train_batch_end, or a signal arriving during the step) takes effect at the end of the next
// step, on every rank together; the skip vote is always current (the window's losses are all
// known before its last backward). Stops asked for in a validation, mid-epoch (train_epoch) or
// at an epoch's end (run_training), are decided at once by their own collective.
std::vector<bool> Trainer::step_votes() const {
  std::vector<bool> votes(kVoteCount);
  votes[kVotePreempt] = g_signal.load() != 0;
  votes[kVoteStop] = state_.should_stop && can_stop(/*at_epoch_end=*/false);
  votes[kVoteSkip] = fit_->window_nonfinite;
  return votes;
}

std::vector<bool> Trainer::step_decisions() const {
  if (strategy_->world_size() == 1) return step_votes();
  FRUGAL_CHECK(fit_->agreed.size() == kVoteCount,
               "internal error: the step's decisions were not agreed with its gradients");
  return fit_->agreed;
}

void Trainer::preempt() {
  const int signo = g_signal.exchange(0);
  const std::string path = (std::filesystem::path(checkpoint_dir()) / "last.ckpt").string();
  save_checkpoint(path);
  state_.should_stop = true;
  const std::string what = signo == SIGTERM  ? "received SIGTERM"
                           : signo == SIGINT ? "received SIGINT"
                                             : "another rank received a signal";
  state_.stop_reason =
      what + " at global step " + std::to_string(state_.global_step) + "; saved checkpoint " + path;
  // A preempted job's log says why it ended, on every rank (Slurm and Kubernetes keep each one).
  std::cerr << "frugal: "
            << (strategy_->world_size() > 1 ? "rank " + std::to_string(global_rank()) + ": " : "")
            << state_.stop_reason << "\n";
}

// The step, in DESIGN.md's order. Micro-batch i of the accumulation window that holds it.
void Trainer::run_training_batch(Task& task, const Batch& batch, int64_t i) {
  // Note [The last accumulation window is scaled by its own size]: windows are aligned to the
  // epoch start; an epoch of n batches with k-batch windows ends in a window of n % k batches,
  // whose losses are divided by that real size (Lightning #19987 divides them by k), so every
  // optimizer step sees the mean gradient of its own samples.
  const int64_t k = options_.accumulation_for_epoch(state_.epoch);
  const int64_t window_start = (i / k) * k;
  const int64_t window = std::min(k, num_training_batches_ - window_start);
  const bool last_in_window = i + 1 == window_start + window;

  metrics_.set_context(Stage::kTrain, batch.size());
  FRUGAL_HOOK(on_train_batch_start, task, batch, i);
  const at::Tensor loss =
      options_.oom_recovery()
          ? recoverable_forward_backward(task, batch, i, window, /*sync=*/last_in_window)
          : forward_backward(task, batch, i, window, /*sync=*/last_in_window);
  fit_->window_open = true;
  if (last_in_window) optimizer_step(task);
  state_.epoch_batches_done = i + 1;  // what a checkpoint saved by the hook below records
  FRUGAL_HOOK(on_train_batch_end, task, loss, batch, i);
}

namespace {

/// Samples [start, start + length) of a batch (targets too, when they have one row per sample).
Batch slice_batch(const Batch& batch, int64_t start, int64_t length) {
  Batch part;
  part.data = batch.data.narrow(0, start, length);
  const at::Tensor& t = batch.target;
  const bool per_sample = t.defined() && t.dim() > 0 && t.size(0) == batch.size();
  part.target = per_sample ? t.narrow(0, start, length) : t;
  return part;
}

}  // namespace

// Forward and backward of one training batch: in one piece, or in state_.micro_batch_split parts
// after an out-of-memory recovery halved the micro-batch. A part's loss is scaled by
// part size / (batch size x window), so the window's gradient is the mean over its samples
// however its batches are split. `sync`: the batch ends its window (gradients are communicated
// with the last part's backward). Returns the batch's detached loss (the parts' weighted mean).
at::Tensor Trainer::forward_backward(Task& task, const Batch& batch, int64_t i, int64_t window,
                                     bool sync) {
  const int64_t size = batch.size();
  const int64_t part_size = (size + state_.micro_batch_split - 1) / state_.micro_batch_split;
  const bool whole = state_.micro_batch_split == 1 || part_size >= size;
  at::Tensor total;
  for (int64_t start = 0; start == 0 || start < size; start += part_size) {
    const int64_t length = whole ? size : std::min(part_size, size - start);
    const Batch part = whole ? batch : slice_batch(batch, start, length);
    const bool last_part = whole || start + length >= size;
    if (!whole) metrics_.set_context(Stage::kTrain, length);
    StepContext ctx(metrics_, this, Stage::kTrain, i);
    at::Tensor loss;
    {
      strategy_->before_forward(task.module());
      auto autocast = fit_->precision->forward_scope();
      loss = task.training_step(part, ctx);
    }
    FRUGAL_CHECK(loss.defined() && loss.numel() == 1,
                 "training_step must return a scalar loss, got ",
                 loss.defined() ? c10::str("shape ", loss.sizes()) : std::string("no tensor"));
    FRUGAL_CHECK(loss.requires_grad(),
                 "training_step returned a loss that does not require grad (was it computed under "
                 "no_grad, or detached?)");
    check_loss(loss);
    at::Tensor to_backward =
        whole ? (window == 1 ? loss : loss / static_cast<double>(window))
              : loss * (static_cast<double>(length) / static_cast<double>(size * window));
    FRUGAL_HOOK(on_before_backward, task, to_backward);
    const bool communicate = sync && last_part;  // no communication on other micro-steps
    strategy_->before_backward(communicate, communicate ? step_votes() : std::vector<bool>());
    fit_->precision->backward(to_backward);
    std::vector<bool> agreed = strategy_->after_backward(communicate);
    if (communicate) fit_->agreed = std::move(agreed);
    FRUGAL_HOOK(on_after_backward, task);
    if (whole) return loss.detach();
    at::Tensor weighted = loss.detach() * static_cast<double>(length);
    total = total.defined() ? total + weighted : weighted;
  }
  return total / static_cast<double>(size);
}

// Note [Out-of-memory recovery]: with oom_recovery, an out-of-memory error anywhere in a training
// step's forward or backward undoes the current accumulation window's first attempt and redoes
// it with the micro-batch halved. The window's batches are kept until its optimizer step (inputs
// only, already on the device), with the gradients at its start (none, except right after a resume
// inside a window) and a snapshot of the metrics. On the error: gradients back to the window's
// start (a backward that failed halfway has added to some of them), metrics rolled back (the
// failed attempt's logged losses do not count), the caching allocator emptied, every batch from
// now on run as twice as many parts (forward_backward), and the window's batches redone. Each
// part's loss is weighted by its share of the window, so the update is the one the full batch
// would have given, up to float rounding; the loader, the batch indices, the windows and the
// schedule of validation and checkpoints are untouched. Dropout draws other random numbers on the
// redo, and BatchNorm sees smaller batches (as with any smaller micro-batch). The hooks of the
// redone backward passes run again; on_train_batch_start/end run once per batch.
at::Tensor Trainer::recoverable_forward_backward(Task& task, const Batch& batch, int64_t i,
                                                 int64_t window, bool sync) {
  Fit& fit = *fit_;
  if (!fit.window_metrics) {  // the window's first batch, or the first after a resume inside it
    fit.window_batches.clear();
    fit.window_base_grads.clear();
    if (fit.window_open) {
      for (const auto& p : fit.params) {
        fit.window_base_grads.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
      }
    }
    fit.window_metrics = metrics_.snapshot();
    fit.window_base_nonfinite = fit.window_nonfinite;
  }
  fit.window_batches.push_back(batch);
  bool redo = false;
  while (true) {
    try {
      if (redo) {
        const auto earlier = static_cast<int64_t>(fit.window_batches.size()) - 1;
        for (int64_t j = 0; j < earlier; ++j) {
          const Batch& b = fit.window_batches[static_cast<size_t>(j)];
          metrics_.set_context(Stage::kTrain, b.size());
          forward_backward(task, b, i - earlier + j, window, /*sync=*/false);
        }
        metrics_.set_context(Stage::kTrain, batch.size());
      }
      return forward_backward(task, batch, i, window, sync);
    } catch (const std::exception& error) {
      if (!compat::is_out_of_memory(error)) throw;
      const int64_t part = (batch.size() + state_.micro_batch_split - 1) / state_.micro_batch_split;
      std::string reason = error.what();
      reason = reason.substr(0, reason.find('\n'));
      FRUGAL_CHECK(part > 1, "out of memory at epoch ", state_.epoch, ", batch ", i,
                   " with micro-batch ", part, ", which oom_recovery cannot halve (",
                   state_.oom_recoveries, " recoveries so far): ", reason);
      for (size_t p = 0; p < fit.params.size(); ++p) {
        const at::Tensor base =
            fit.window_base_grads.empty() ? at::Tensor() : fit.window_base_grads[p];
        fit.params[p].mutable_grad() = base.defined() ? base.clone() : at::Tensor();
      }
      metrics_.rollback(*fit.window_metrics);
      fit.window_nonfinite = fit.window_base_nonfinite;
      compat::empty_device_cache(device_);
      state_.micro_batch_split *= 2;
      ++state_.oom_recoveries;
      const int64_t k = options_.accumulation_for_epoch(state_.epoch);
      std::cerr << "frugal: out of memory at epoch " << state_.epoch << ", batch " << i
                << " (micro-batch " << part << "): micro-batch now "
                << (batch.size() + state_.micro_batch_split - 1) / state_.micro_batch_split
                << ", accumulation " << k * state_.micro_batch_split
                << " (effective batch unchanged); redoing the accumulation window (" << reason
                << ")\n";
      metrics_.log("train/oom_recoveries", static_cast<double>(state_.oom_recoveries),
                   LogOptions().on_step(true).on_epoch(false));
      redo = true;
    }
  }
}

// Note [The loss is checked one micro-batch late]: with NanLossPolicy::kRaise (the default) a
// micro-batch's loss is copied to the host without waiting (pinned memory, an event recorded
// after the copy on accelerators) and looked at when the next micro-batch reaches this point,
// by which time the device has long computed it; so the check costs no device sync. Before a
// checkpoint is written and when training ends, the last pending loss is checked at once, so a
// non-finite loss is always reported (naming its own epoch, batch and step) and never saved in a
// checkpoint; the optimizer step of its window may have run by then. kSkip must decide before
// the optimizer step, so it reads the flag at once (one sync per micro-batch on accelerators).
void Trainer::check_loss(const at::Tensor& loss) {
  if (options_.nan_loss() == NanLossPolicy::kIgnore) return;
  if (options_.nan_loss() == NanLossPolicy::kSkip) {
    if (!loss.detach().isfinite().item<bool>()) fit_->window_nonfinite = true;
    return;
  }
  check_pending_loss();
  Fit& fit = *fit_;
  const bool accelerator = !device_.is_cpu();
  fit.loss_pending = true;
  fit.loss_epoch = state_.epoch;
  fit.loss_batch = state_.batch_idx;
  fit.loss_step = state_.global_step;
  if (loss.device().is_cpu() && loss.scalar_type() == at::kFloat && loss.numel() == 1) {
    // A float32 loss in CPU memory is read where it lies: no operator dispatched per step.
    fit.loss_value = *loss.data_ptr<float>();
    fit.loss_host = at::Tensor();
    return;
  }
  if (!fit.loss_host.defined()) {
    fit.loss_host =
        at::empty({}, at::TensorOptions().dtype(at::kFloat).pinned_memory(device_.is_cuda()));
  }
  fit.loss_host.copy_(loss.detach().reshape({}), /*non_blocking=*/accelerator);
  if (accelerator) {
    if (!fit.loss_copied) fit.loss_copied.emplace(device_.type());
    fit.loss_copied->record(c10::impl::VirtualGuardImpl(device_.type()).getStream(device_));
  }
}

void Trainer::check_pending_loss() {
  if (!fit_ || !fit_->loss_pending) return;
  Fit& fit = *fit_;
  fit.loss_pending = false;
  if (fit.loss_copied) {
    while (!fit.loss_copied->query()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  // A host tensor (no device sync), or the value read at once.
  const float value = fit.loss_host.defined() ? fit.loss_host.item<float>() : fit.loss_value;
  FRUGAL_CHECK(std::isfinite(value), "training_step returned a non-finite loss (", value,
               ") at epoch ", fit.loss_epoch, ", batch ", fit.loss_batch, ", global step ",
               fit.loss_step,
               "; to skip such optimizer steps instead, set "
               "TrainerOptions().nan_loss(NanLossPolicy::kSkip)");
}

void Trainer::optimizer_step(Task& task) {
  torch::optim::Optimizer& optimizer = *fit_->config.optimizer;
  fit_->precision->unscale(optimizer);  // before anything looks at gradients
  FRUGAL_HOOK(on_before_optimizer_step, task, optimizer);
  clip_gradients();
  // Every rank skips or steps together (only kSkip sets the flag; its vote travelled with the
  // gradients).
  const bool skip = step_decisions()[kVoteSkip];
  fit_->window_nonfinite = false;
  const bool stepped = fit_->precision->step(optimizer, skip);
  ++state_.global_step;
  if (stepped) {
    ++fit_->steps_taken;
    step_scheduler(Interval::kStep);  // never after a skipped step
  } else {
    ++state_.skipped_steps;
    metrics_.log("train/skipped_steps", static_cast<double>(state_.skipped_steps),
                 LogOptions().on_step(true).on_epoch(false));
  }
  FRUGAL_HOOK(on_before_zero_grad, task, optimizer);
  detail::zero_grad_set_to_none(optimizer);
  fit_->window_open = false;
  if (fit_->window_metrics) {  // oom_recovery: the window is done, its batches can go
    fit_->window_batches.clear();
    fit_->window_base_grads.clear();
    fit_->window_metrics.reset();
  }
  if (!loggers_.empty() && state_.global_step % options_.log_every_n_steps() == 0) {
    auto values = metrics_.take_step_metrics();
    if (!values.empty()) {
      for (auto& lg : loggers_) lg->log_metrics(values, state_.global_step, state_.epoch);
    }
  }
}

void Trainer::clip_gradients() {
  const double clip = options_.gradient_clip_val();
  if (clip <= 0 && !options_.log_grad_norm()) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  grads.reserve(fit_->params.size());
  for (const auto& p : fit_->params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return;
  if (options_.gradient_clip_algorithm() == "value" || clip <= 0) {
    if (options_.log_grad_norm()) {
      metrics_.log("train/grad_norm", total_grad_norm(grads, options_.gradient_clip_norm_type()),
                   LogOptions().on_step(true).on_epoch(false));
    }
    if (clip > 0) {
      for (auto& g : grads) g.clamp_(-clip, clip);
    }
    return;
  }
  // Clip by total norm without a host sync: scale by min(1, clip / (norm + eps)) on device.
  at::Tensor norm = total_grad_norm(grads, options_.gradient_clip_norm_type());
  if (options_.log_grad_norm()) {
    metrics_.log("train/grad_norm", norm, LogOptions().on_step(true).on_epoch(false));
  }
  at::Tensor coef = (clip / (norm + 1e-6)).clamp_max(1.0);
  for (auto& g : grads) g.mul_(coef.to(g.scalar_type()));
}

void Trainer::step_scheduler(Interval interval) {
  const OptimizerConfig& config = fit_->config;
  if (!config.scheduler || config.interval != interval) return;
  const int64_t count = interval == Interval::kStep ? fit_->steps_taken : state_.epoch + 1;
  if (count % config.frequency != 0) return;
  if (!config.scheduler->needs_metric()) {
    config.scheduler->step();
    return;
  }
  std::optional<double> value = metrics_.get(config.monitor);
  if (!value) {
    std::string known;
    for (const auto& name : metrics_.names()) known += (known.empty() ? "" : ", ") + name;
    FRUGAL_CHECK(false, "the LR scheduler monitors \"", config.monitor,
                 "\", which was not logged; logged metrics: ", known.empty() ? "(none)" : known);
  }
  config.scheduler->step(*value);
}

void Trainer::log_epoch_metrics() {
  if (loggers_.empty() || state_.sanity_checking) return;
  auto values = metrics_.take_epoch_metrics();
  if (values.empty()) return;
  for (auto& lg : loggers_) lg->log_epoch_metrics(values, state_.global_step, state_.epoch);
}

// ---------------------------------------------------------------------------------------------
// checkpoints

std::string Trainer::checkpoint_dir() const {
  for (const auto& cb : callbacks_) {
    if (auto* mc = dynamic_cast<ModelCheckpoint*>(cb.get()); mc && !mc->dirpath().empty()) {
      return mc->dirpath();
    }
  }
  return (std::filesystem::path(log_dir()) / "checkpoints").string();
}

std::string Trainer::resolve_ckpt_path(const std::string& which) const {
  if (which != "last" && which != "best") return which;
  for (const auto& cb : callbacks_) {
    if (auto* mc = dynamic_cast<ModelCheckpoint*>(cb.get())) {
      std::string path = mc->resolve_ckpt_path(which);
      if (!path.empty()) return path;
    }
  }
  const std::string last = (std::filesystem::path(checkpoint_dir()) / "last.ckpt").string();
  if (which == "last") {
    if (std::filesystem::exists(last)) return last;
    // As Lightning (checkpoint_connector._parse_ckpt_path): not an error, so that a job's one
    // command line with ckpt_path="last" works from its first start; it starts fresh.
    if (is_global_zero()) {
      std::string looked = checkpoint_dir();
      for (const auto& cb : callbacks_) {
        if (auto* mc = dynamic_cast<ModelCheckpoint*>(cb.get());
            mc && !mc->dirpath().empty() && mc->dirpath() != looked) {
          looked += ", " + mc->dirpath();
        }
      }
      std::cerr << "frugal: warning: fit(ckpt_path=\"last\") is set, but there is no last "
                   "checkpoint available (looked in "
                << looked
                << "). No checkpoint will be loaded: training starts fresh. HINT: set "
                   "ModelCheckpoint's save_last(true).\n";
    }
    return "";
  }
  FRUGAL_CHECK(false, "ckpt_path=\"", which, "\": no such checkpoint is known (looked in ",
               checkpoint_dir(),
               which == "best" ? " and at the ModelCheckpoint callbacks' best_model_path)" : ")");
  return "";
}

StateDict Trainer::training_state() const {
  StateDict st;
  st["version"] = std::string(version());
  // See Note [Checkpoint position].
  st["loop/epoch"] = state_.epoch + (fit_->epoch_finished ? 1 : 0);
  st["loop/batches_done"] = fit_->epoch_finished ? int64_t{0} : state_.epoch_batches_done;
  st["loop/global_step"] = state_.global_step;
  st["loop/skipped_steps"] = state_.skipped_steps;
  st["loop/oom_recoveries"] = state_.oom_recoveries;
  st["loop/micro_batch_split"] = state_.micro_batch_split;
  st["loop/steps_taken"] = fit_->steps_taken;
  st["loop/total_batches"] = fit_->total_batches;
  st["loop/batch_validated"] = fit_->batch_validated;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    st["rng/cpu"] = gen.get_state();
  }
  st["rng/device"] = c10::IValue();  // the accelerator's generator (CUDA), when training on one
  if (!device_.is_cpu()) {
    auto gen = at::globalContext().defaultGenerator(device_);
    std::lock_guard<std::mutex> lock(gen.mutex());
    st["rng/device"] = gen.get_state();
  }
  st["scheduler"] = fit_->config.scheduler ? detail::to_ivalue(fit_->config.scheduler->state_dict())
                                           : c10::IValue();
  st["precision"] = detail::to_ivalue(fit_->precision->state_dict());
  st["precision/resolved"] = std::string(to_string(fit_->precision->mode()));
  c10::impl::GenericDict callbacks(c10::StringType::get(), c10::AnyType::get());
  for (const auto& cb : callbacks_) {
    StateDict state = cb->state_dict();
    if (state.empty()) continue;  // stateless callbacks need no entry (nor a unique key)
    const std::string key = cb->state_key();
    FRUGAL_CHECK(!callbacks.contains(key), "two callbacks share the state key \"", key,
                 "\"; override state_key() so that each instance has its own");
    callbacks.insert(key, detail::to_ivalue(state));
  }
  st["callbacks"] = callbacks;
  st["metrics"] = detail::to_ivalue(metrics_.state_dict());
  StateDict options;
  for (const auto& [k, v] : options_.to_map()) options[k] = v;
  st["options"] = detail::to_ivalue(options);
  // Gradients of an unfinished accumulation window (a save inside a window resumes exactly).
  c10::impl::GenericList grads(c10::AnyType::get());
  if (fit_->window_open) {
    for (const auto& p : fit_->params) {
      grads.push_back(p.grad().defined() ? c10::IValue(p.grad().to(at::kCPU)) : c10::IValue());
    }
  }
  st["window/grads"] = grads;
  st["window/nonfinite"] = fit_->window_nonfinite;
  return st;
}

void Trainer::save_checkpoint(const std::string& path, bool weights_only) {
  FRUGAL_CHECK(fit_ && fit_->task && fit_->config.optimizer, "save_checkpoint(\"", path,
               "\"): no fit has started, so there is no training state");
  check_pending_loss();  // never save the result of a non-finite loss
  // Only rank 0 writes; the barriers keep the others from running ahead (or reading early).
  strategy_->barrier();
  if (is_global_zero()) write_checkpoint(path, weights_only);
  strategy_->barrier();
}

void Trainer::write_checkpoint(const std::string& path, bool weights_only) {
  torch::serialize::OutputArchive root;
  root.write("frugal_format", c10::IValue(detail::kFormat));
  root.write("weights_only", c10::IValue(weights_only));
  torch::serialize::OutputArchive model(root.compilation_unit());
  detail::save_module(fit_->task->module(), model);
  root.write("model", model);
  if (!weights_only) {
    torch::serialize::OutputArchive optimizer(root.compilation_unit());
    fit_->config.optimizer->save(optimizer);
    root.write("optimizer", optimizer);
    root.write("trainer_state", detail::pack(training_state()));
  }
  detail::write_atomically(path, [&](const auto& sink) {
    detail::ChecksummedZipWriter checked(sink);  // Note [Checkpoint checksums]
    root.save_to([&](const void* data, size_t size) {
      checked.write(data, size);
      return size;
    });
    checked.finish(path);
  });
}

void Trainer::restore(Task& task, const std::string& path) {
  // Everything is read and checked before anything changes; the model is written last.
  detail::LoadedCheckpoint ckpt =
      detail::open_checkpoint(path, device_, options_.verify_checkpoints());
  FRUGAL_CHECK(!ckpt.weights_only, "checkpoint ", path,
               " holds weights only, so it cannot resume training; use frugal::load_weights() "
               "for inference");
  auto plan = detail::plan_weights(task.module(), ckpt);
  const StateDict& st = ckpt.state;
  auto need = [&](const char* key) -> const c10::IValue& {
    FRUGAL_CHECK(st.count(key) > 0, "checkpoint ", path, " has no \"", key,
                 "\" in its trainer state: it is damaged or from an incompatible frugal");
    return st.at(key);
  };
  OptimizerConfig& config = fit_->config;
  const bool has_scheduler = !need("scheduler").isNone();
  FRUGAL_CHECK(has_scheduler == (config.scheduler != nullptr), "checkpoint ", path,
               has_scheduler
                   ? " has LR scheduler state, but configure_optimizers returns no scheduler"
                   : " has no LR scheduler state, but configure_optimizers returns one");
  for (const char* key :
       {"loop/epoch", "loop/batches_done", "loop/global_step", "loop/skipped_steps",
        "loop/steps_taken", "loop/total_batches", "rng/cpu", "precision", "callbacks", "metrics",
        "window/grads", "window/nonfinite"}) {
    need(key);
  }
  const c10::impl::GenericList grads = st.at("window/grads").toList();
  FRUGAL_CHECK(grads.empty() || grads.size() == fit_->params.size(), "checkpoint ", path,
               " holds gradients for ", grads.size(), " parameters, the optimizer has ",
               fit_->params.size());
  torch::serialize::InputArchive optimizer;
  FRUGAL_CHECK(ckpt.root.try_read("optimizer", optimizer), "checkpoint ", path,
               " has no optimizer state: it is damaged");
  try {
    config.optimizer->load(optimizer);
  } catch (const std::exception& e) {
    std::string reason = e.what();
    FRUGAL_CHECK(false, "checkpoint ", path,
                 ": its optimizer state does not fit this task's optimizer (",
                 reason.substr(0, reason.find('\n')), ")");
  }

  detail::apply_weights(plan);
  if (config.scheduler) config.scheduler->load_state_dict(detail::from_ivalue(st.at("scheduler")));
  fit_->precision->load_state_dict(detail::from_ivalue(st.at("precision")));
  const auto callbacks = st.at("callbacks").toGenericDict();
  for (auto& cb : callbacks_) {
    const std::string key = cb->state_key();
    if (callbacks.contains(key)) cb->load_state_dict(detail::from_ivalue(callbacks.at(key)));
  }
  fit_->resume_metrics = detail::from_ivalue(st.at("metrics"));
  metrics_.load_state_dict(*fit_->resume_metrics);
  state_.epoch = st.at("loop/epoch").toInt();
  state_.epoch_batches_done = st.at("loop/batches_done").toInt();
  state_.global_step = st.at("loop/global_step").toInt();
  state_.skipped_steps = st.at("loop/skipped_steps").toInt();
  if (st.count("loop/micro_batch_split") > 0) {  // checkpoints of frugal 0.1 have neither
    state_.oom_recoveries = st.at("loop/oom_recoveries").toInt();
    state_.micro_batch_split = st.at("loop/micro_batch_split").toInt();
  }
  fit_->steps_taken = st.at("loop/steps_taken").toInt();
  fit_->total_batches = st.at("loop/total_batches").toInt();
  fit_->batch_validated =
      st.count("loop/batch_validated") == 0 || st.at("loop/batch_validated").toBool();
  fit_->resume_rng = st.at("rng/cpu").toTensor().to(at::kCPU);
  if (st.count("rng/device") && st.at("rng/device").isTensor()) {
    fit_->resume_device_rng = st.at("rng/device").toTensor().to(at::kCPU);
  }
  fit_->window_nonfinite = st.at("window/nonfinite").toBool();
  fit_->window_open = !grads.empty();
  for (size_t i = 0; i < grads.size(); ++i) {
    const c10::IValue g = grads.get(i);
    fit_->params[i].mutable_grad() = g.isNone() ? at::Tensor() : g.toTensor().to(device_);
  }
}

// ---------------------------------------------------------------------------------------------
// validation and test

std::vector<std::string> Trainer::run_evaluation(Task& task, BatchSource& data, Stage stage,
                                                 int64_t max_batches, bool sanity) {
  torch::nn::Module& module = task.module();
  const bool was_training = module.is_training();
  const Stage outer_stage = state_.stage;
  const int64_t outer_batch = state_.batch_idx;
  module.eval();
  at::NoGradGuard no_grad;
  state_.stage = stage;
  num_eval_batches_ = max_batches;
  metrics_.begin_epoch(stage);
  const bool validating = stage == Stage::kValidate;
  if (validating) {
    FRUGAL_HOOK(on_validation_start, task);
    FRUGAL_HOOK(on_validation_epoch_start, task);
  } else {
    FRUGAL_HOOK(on_test_start, task);
    FRUGAL_HOOK(on_test_epoch_start, task);
  }
  data.start_epoch(0);
  for (int64_t i = 0; i < max_batches; ++i) {
    std::optional<Batch> batch = data.next();
    if (!batch) break;
    if (options_.channels_last()) to_channels_last(&*batch);
    state_.batch_idx = i;
    metrics_.set_context(stage, batch->size());
    StepContext ctx(metrics_, this, stage, i);
    if (validating) {
      FRUGAL_HOOK(on_validation_batch_start, task, *batch, i);
    } else {
      FRUGAL_HOOK(on_test_batch_start, task, *batch, i);
    }
    {
      auto autocast = fit_ && fit_->precision ? fit_->precision->forward_scope() : nullptr;
      if (validating) {
        task.validation_step(*batch, ctx);
      } else {
        task.test_step(*batch, ctx);
      }
    }
    if (validating) {
      FRUGAL_HOOK(on_validation_batch_end, task, *batch, i);
    } else {
      FRUGAL_HOOK(on_test_batch_end, task, *batch, i);
    }
  }
  std::vector<std::string> produced = metrics_.end_epoch(stage, metric_reducer());
  if (validating) {
    FRUGAL_HOOK(on_validation_epoch_end, task);
    FRUGAL_HOOK(on_validation_end, task);
  } else {
    FRUGAL_HOOK(on_test_epoch_end, task);
    FRUGAL_HOOK(on_test_end, task);
  }
  if (!sanity) log_epoch_metrics();
  state_.stage = outer_stage;
  state_.batch_idx = outer_batch;
  module.train(was_training);
  return produced;
}

std::map<std::string, double> Trainer::evaluate(Task& task, std::shared_ptr<BatchSource> data,
                                                TrainerFn fn) {
  const Stage stage = fn == TrainerFn::kValidate ? Stage::kValidate : Stage::kTest;
  FRUGAL_CHECK(data != nullptr, to_string(fn), ": the data source is null");
  state_.fn = fn;
  state_.should_stop = false;
  try {
    prepare(task, data.get(), nullptr);
    strategy_->broadcast_module(task.module());  // every rank evaluates rank 0's weights
    if (!fit_) fit_ = std::make_unique<Fit>();
    if (!fit_->precision) fit_->precision = detail::make_precision(options_.precision(), device_);
    FRUGAL_HOOK(setup, task, fn);
    const BatchLimit& limit =
        stage == Stage::kValidate ? options_.limit_val_batches() : options_.limit_test_batches();
    std::vector<std::string> names =
        run_evaluation(task, *data, stage, limit.resolve(data->num_batches()), false);
    for (auto& lg : loggers_) lg->flush();
    FRUGAL_HOOK(teardown, task, fn);
    std::map<std::string, double> out;
    for (const auto& name : names) out[name] = *metrics_.get(name);
    return out;
  } catch (const std::exception& e) {
    handle_exception(task, e);
    throw;
  }
}

std::map<std::string, double> Trainer::validate(Task& task, std::shared_ptr<BatchSource> data) {
  return evaluate(task, std::move(data), TrainerFn::kValidate);
}

std::map<std::string, double> Trainer::test(Task& task, std::shared_ptr<BatchSource> data) {
  return evaluate(task, std::move(data), TrainerFn::kTest);
}

}  // namespace frugal

#include "frugal/budget/trials.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "budget/memory_meter.h"
#include "compat.h"
#include "frugal/callbacks/memory_monitor.h"
#include "frugal/data/batch_source.h"
#include "frugal/deploy/quantize.h"
#include "frugal/deploy/quantized_model.h"
#include "frugal/error.h"
#include "frugal/loggers/logger.h"
#include "frugal/loggers/report.h"

#ifdef FRUGAL_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace frugal {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;
using Clock = std::chrono::steady_clock;

std::string mib(double bytes) { return fmt::format("{:.1f} MiB", bytes / kMiB); }

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The first line of an exception's message (the table has one line per candidate; the CSV and
// JSON files keep the whole message).
std::string first_line(const std::string& text) {
  const size_t end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

void synchronize(c10::Device device) {
#ifdef FRUGAL_WITH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#else
  (void)device;
#endif
}

// Times the training part of each epoch (validation inside the epoch excluded) and counts the
// samples trained. On CUDA the clock reads follow a device synchronization, at epoch and
// validation boundaries only (never per step).
class TrialClock : public Callback {
 public:
  std::string state_key() const override { return "TrialClock"; }
  void on_train_epoch_start(Trainer& trainer, Task&) override {
    synchronize(trainer.device());
    start_ = Clock::now();
    in_epoch_ = true;
  }
  void on_validation_start(Trainer& trainer, Task&) override {
    if (!in_epoch_) return;  // sanity validation, before training
    synchronize(trainer.device());
    seconds_ += seconds_since(start_);
  }
  void on_validation_end(Trainer&, Task&) override {
    if (in_epoch_) start_ = Clock::now();
  }
  void on_train_batch_end(Trainer&, Task&, const at::Tensor&, const Batch& batch,
                          int64_t) override {
    samples_ += batch.size();
  }
  void on_train_epoch_end(Trainer& trainer, Task&) override {
    synchronize(trainer.device());
    seconds_ += seconds_since(start_);
    in_epoch_ = false;
  }
  double seconds() const { return seconds_; }
  int64_t samples() const { return samples_; }

 private:
  Clock::time_point start_;
  double seconds_ = 0.0;
  int64_t samples_ = 0;
  bool in_epoch_ = false;
};

// Note [How a trial's memory is measured]: as the batch-size finder does (its Note of the same
// name). Before the trial, the device cache is emptied (CUDA), malloc_trim hands the allocator's
// free pages back to the kernel, and the peak counters are reset; the baseline is the RSS (CUDA:
// reserved bytes) then. The MemoryMonitor attached to the trial's Trainer resets the peak again
// at fit start and reads the kernel's high-water mark (VmHWM; CUDA: the allocator's peaks), so
// the peak is a true peak, not a sample. The trial's figure is peak - baseline: the model, its
// optimizer state, activations, batches and everything else the run added. The data subset is
// made before the first trial and is not charged to any.
bool is_finite_number(double v) { return std::isfinite(v); }

void check_samples(const at::Tensor& data, const at::Tensor& targets, const char* data_name,
                   const char* targets_name) {
  FRUGAL_CHECK(data.defined() && data.dim() >= 1 && data.size(0) >= 1, "Trials::run: ", data_name,
               " must hold at least one sample along dim 0, got ",
               data.defined() ? c10::str("shape ", data.sizes()) : std::string("no tensor"));
  FRUGAL_CHECK(targets.defined() && targets.dim() >= 1 && targets.size(0) == data.size(0),
               "Trials::run: ", targets_name, " must have ", data.size(0), " rows like ", data_name,
               ", got ",
               targets.defined() ? c10::str("shape ", targets.sizes()) : std::string("no tensor"));
}

// ---- text output ----

// Shortest text that reads back as the same double; "" for NaN / infinity.
std::string csv_number(double v) { return is_finite_number(v) ? fmt::format("{}", v) : ""; }

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v) { return is_finite_number(v) ? fmt::format("{}", v) : "null"; }

std::string cell(double v, const char* format) {
  return is_finite_number(v) ? fmt::format(format, v) : std::string("-");
}

std::string limit_text(double v, bool bytes) {
  if (v <= 0) return "none";
  return bytes ? mib(v) : fmt::format("{:g} s", v);
}

// Median milliseconds of `repeats` calls of `f` after one warm-up call (device synchronized).
double median_ms(const std::function<void()>& f, int64_t repeats, c10::Device device) {
  f();
  synchronize(device);
  std::vector<double> ms;
  for (int64_t i = 0; i < repeats; ++i) {
    const Clock::time_point t0 = Clock::now();
    f();
    synchronize(device);
    ms.push_back(1000.0 * seconds_since(t0));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int64_t state_bytes(torch::nn::Module& m) {
  int64_t bytes = 0;
  for (const auto& t : m.parameters()) bytes += static_cast<int64_t>(t.nbytes());
  for (const auto& t : m.buffers()) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

// The trained model as a deployment would see it: size in fp32 and dynamic int8, and the
// eval-mode latency at batch 1 and 64 on the trial's device.
void measure_deployment(Task& task, const at::Tensor& val_x, c10::Device device,
                        const TrialsOptions& options, TrialResult& r) {
  torch::nn::Module& module = task.module();
  r.model_bytes = state_bytes(module);
  if (auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(&module)) {
    try {
      torch::nn::Sequential holder(
          std::dynamic_pointer_cast<torch::nn::SequentialImpl>(seq->shared_from_this()));
      torch::nn::Sequential int8 = quantize_dynamic(holder);
      r.model_bytes_int8 = state_bytes(*int8);
    } catch (const Error&) {
      r.model_bytes_int8 = -1;  // no quantization engine in this build
    }
  } else if (val_x.defined() && val_x.size(0) > 0) {
    // Any other model the exporter walks (the zoo): its graph with int8 Linear layers.
    try {
      r.model_bytes_int8 =
          quantize_dynamic_graph(module, val_x.narrow(0, 0, 1).to(at::kCPU).to(at::kFloat))
              ->weight_bytes();
    } catch (const Error&) {
      r.model_bytes_int8 = -1;  // not exportable, or no quantization engine
    }
  }
  auto* classifier = dynamic_cast<Classifier*>(&task);
  if (classifier == nullptr) return;
  const bool was_training = module.is_training();
  module.eval();
  torch::NoGradGuard no_grad;
  const at::Tensor one = val_x.narrow(0, 0, 1).to(device);
  at::Tensor many = val_x.narrow(0, 0, std::min<int64_t>(64, val_x.size(0)));
  while (many.size(0) < 64) {
    many = at::cat({many, many.narrow(0, 0, std::min<int64_t>(64 - many.size(0), many.size(0)))});
  }
  many = many.to(device);
  r.latency_b1_ms = median_ms([&] { classifier->forward(one); }, options.latency_repeats(), device);
  r.latency_b64_ms =
      median_ms([&] { classifier->forward(many); }, options.latency_repeats(), device);
  module.train(was_training);
}

// Note [The trial score]: among the candidates that ran within the limits, each criterion is
// scored relative to the best of them, as best / this of a smaller-is-better quantity:
//   memory    m = max(peak memory growth, 1 MiB)            term = min(m) / m
//   speed     t = 1 / (training samples per second)         term = min(t) / t  (= speed / fastest)
//   accuracy  e = clamp(1 - accuracy, 0.001, 1) (the error)  term = min(e) / e
//   latency   l = max(batch-1 latency, 0.001 ms)            term = min(l) / l
//   size      b = max(fp32 model bytes, 1 KiB)               term = min(b) / b
// and score = (w_m * memory + w_s * speed + w_a * accuracy + w_l * latency + w_b * size) / (sum of
// the weights), in (0, 1]; 1 is
// the best on every weighted criterion. Ratios, not min-max scaling: a candidate within noise of
// the best loses almost nothing, while min-max would put the worst at 0 however close it is. The
// floors keep a near-zero measurement (a tiny model's memory, a perfect accuracy) from dividing
// by zero. A term whose weight is 0 is reported but does not count.
double memory_measure(const TrialResult& r) {
  return r.peak_bytes >= 0 ? std::max(static_cast<double>(r.peak_bytes), kMiB) : NAN;
}
double time_measure(const TrialResult& r) { return 1.0 / r.samples_per_second; }
double error_measure(const TrialResult& r) {
  return std::isfinite(r.val_acc) ? std::clamp(1.0 - r.val_acc, 1e-3, 1.0) : NAN;
}
double latency_measure(const TrialResult& r) {
  return std::isfinite(r.latency_b1_ms) ? std::max(r.latency_b1_ms, 1e-3) : NAN;
}
double size_measure(const TrialResult& r) {
  return r.model_bytes >= 0 ? std::max(static_cast<double>(r.model_bytes), 1024.0) : NAN;
}

void score(std::vector<TrialResult*>& ranked, const TrialsOptions& options) {
  double best_memory = INFINITY;
  double best_time = INFINITY;
  double best_error = INFINITY;
  double best_latency = INFINITY;
  double best_size = INFINITY;
  for (const TrialResult* r : ranked) {
    best_memory = std::min(best_memory, memory_measure(*r));
    best_time = std::min(best_time, time_measure(*r));
    best_error = std::min(best_error, error_measure(*r));
    best_latency = std::min(best_latency, latency_measure(*r));
    best_size = std::min(best_size, size_measure(*r));
  }
  const double total = options.weight_memory() + options.weight_speed() +
                       options.weight_accuracy() + options.weight_latency() + options.weight_size();
  for (TrialResult* r : ranked) {
    r->memory_term = best_memory / memory_measure(*r);
    r->speed_term = best_time / time_measure(*r);
    r->accuracy_term = best_error / error_measure(*r);
    r->latency_term = best_latency / latency_measure(*r);
    r->size_term = best_size / size_measure(*r);
    double sum = 0.0;
    if (options.weight_memory() > 0) sum += options.weight_memory() * r->memory_term;
    if (options.weight_speed() > 0) sum += options.weight_speed() * r->speed_term;
    if (options.weight_accuracy() > 0) sum += options.weight_accuracy() * r->accuracy_term;
    if (options.weight_latency() > 0) sum += options.weight_latency() * r->latency_term;
    if (options.weight_size() > 0) sum += options.weight_size() * r->size_term;
    r->score = sum / total;
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const TrialResult* a, const TrialResult* b) { return a->score > b->score; });
  for (size_t i = 0; i < ranked.size(); ++i) ranked[i]->rank = static_cast<int64_t>(i) + 1;
}

}  // namespace

// ---- configuration ----

std::string TrialConfig::describe() const {
  return fmt::format("{} {} micro-batch {} x {} lr {:g}", model, to_string(precision), micro_batch,
                     accumulate, lr);
}

const char* to_string(TrialResult::Status status) {
  switch (status) {
    case TrialResult::Status::kRanked:
      return "ranked";
    case TrialResult::Status::kOverLimit:
      return "over limit";
    case TrialResult::Status::kFailed:
      return "failed";
  }
  return "?";
}

void TrialsOptions::validate() const {
  FRUGAL_CHECK(data_fraction_ > 0.0 && data_fraction_ <= 1.0,
               "TrialsOptions: data_fraction must be in (0, 1], got ", data_fraction_);
  FRUGAL_CHECK(epochs_ >= 1, "TrialsOptions: epochs must be >= 1, got ", epochs_);
  FRUGAL_CHECK(seed_ >= 0, "TrialsOptions: seed must be >= 0, got ", seed_);
  FRUGAL_CHECK(accelerator_ == "auto" || accelerator_ == "cpu" || accelerator_ == "cuda" ||
                   accelerator_ == "gpu",
               "TrialsOptions: accelerator must be \"auto\", \"cpu\" or \"cuda\", got \"",
               accelerator_, "\"");
  for (const auto& [name, w] : {std::pair<const char*, double>{"weight_memory", weight_memory_},
                                {"weight_speed", weight_speed_},
                                {"weight_accuracy", weight_accuracy_},
                                {"weight_latency", weight_latency_},
                                {"weight_size", weight_size_}}) {
    FRUGAL_CHECK(std::isfinite(w) && w >= 0.0, "TrialsOptions: ", name,
                 " must be a finite number >= 0, got ", w);
  }
  FRUGAL_CHECK(
      weight_memory_ + weight_speed_ + weight_accuracy_ + weight_latency_ + weight_size_ > 0.0,
      "TrialsOptions: weight_memory, weight_speed, weight_accuracy, weight_latency and "
      "weight_size are all 0; give at least one a positive weight");
  FRUGAL_CHECK(measure_deployment_ || (weight_latency_ == 0.0 && weight_size_ == 0.0),
               "TrialsOptions: weight_latency and weight_size need measure_deployment");
  FRUGAL_CHECK(latency_repeats_ >= 1, "TrialsOptions: latency_repeats must be >= 1, got ",
               latency_repeats_);
  FRUGAL_CHECK(std::isfinite(max_memory_bytes_) && max_memory_bytes_ >= 0.0,
               "TrialsOptions: max_memory_bytes must be >= 0 (0: no limit), got ",
               max_memory_bytes_);
  FRUGAL_CHECK(std::isfinite(max_epoch_seconds_) && max_epoch_seconds_ >= 0.0,
               "TrialsOptions: max_epoch_seconds must be >= 0 (0: no limit), got ",
               max_epoch_seconds_);
  FRUGAL_CHECK(val_batch_size_ >= 0,
               "TrialsOptions: val_batch_size must be >= 1 (or 0: the micro-batch), got ",
               val_batch_size_);
  FRUGAL_CHECK(weight_accuracy_ == 0.0 || !accuracy_metric_.empty(),
               "TrialsOptions: accuracy_metric must name a validation metric (e.g. \"val/acc\") "
               "while weight_accuracy > 0");
  FRUGAL_CHECK(trainer_.effective_batch_size() == 0 && trainer_.memory_budget() == 0.0,
               "TrialsOptions: trainer options must not use budget mode (memory_budget / "
               "effective_batch_size): each candidate sets its own micro-batch and accumulation");
  FRUGAL_CHECK(trainer_.accumulation_schedule().empty(),
               "TrialsOptions: trainer options must not set an accumulation_schedule: each "
               "candidate sets accumulate_grad_batches");
  FRUGAL_CHECK(!trainer_.oom_recovery(),
               "TrialsOptions: trainer options must not set oom_recovery: a candidate that runs "
               "out of memory is reported as such, not measured at a smaller micro-batch");
  FRUGAL_CHECK(trainer_.fast_dev_run() == 0,
               "TrialsOptions: trainer options must not set fast_dev_run (got ",
               trainer_.fast_dev_run(), "); use data_fraction and epochs for short trials");
  trainer_.validate();
}

Trials::Trials(TrialsOptions options) : options_(std::move(options)) { options_.validate(); }

Trials& Trials::add_model(const std::string& name, TaskFactory factory) {
  FRUGAL_CHECK(!name.empty(), "Trials::add_model: the model name must not be empty");
  FRUGAL_CHECK(factory != nullptr, "Trials::add_model: the factory of \"", name, "\" is empty");
  for (const auto& [existing, unused] : models_) {
    FRUGAL_CHECK(existing != name, "Trials::add_model: a model named \"", name,
                 "\" was already added");
  }
  models_.emplace_back(name, std::move(factory));
  return *this;
}

Trials& Trials::add_candidate(TrialConfig config) {
  const bool known = std::any_of(models_.begin(), models_.end(),
                                 [&](const auto& m) { return m.first == config.model; });
  if (!known) {
    std::string names;
    for (const auto& m : models_) names += (names.empty() ? "" : ", ") + m.first;
    FRUGAL_CHECK(false, "Trials::add_candidate: unknown model \"", config.model,
                 "\" (added: ", names.empty() ? std::string("none") : names,
                 "); add it with add_model or add_classifier first");
  }
  FRUGAL_CHECK(config.micro_batch >= 1, "Trials::add_candidate: micro_batch must be >= 1, got ",
               config.micro_batch, " (", config.model, ")");
  FRUGAL_CHECK(config.accumulate >= 1, "Trials::add_candidate: accumulate must be >= 1, got ",
               config.accumulate, " (", config.model, ")");
  FRUGAL_CHECK(std::isfinite(config.lr) && config.lr > 0.0,
               "Trials::add_candidate: lr must be a finite number > 0, got ", config.lr, " (",
               config.model, ")");
  candidates_.push_back(std::move(config));
  return *this;
}

Trials& Trials::add_grid(const TrialGrid& grid) {
  FRUGAL_CHECK(!grid.precisions().empty(), "TrialGrid: precisions must not be empty");
  FRUGAL_CHECK(!grid.micro_batches().empty(), "TrialGrid: micro_batches must not be empty");
  FRUGAL_CHECK(!grid.accumulates().empty(), "TrialGrid: accumulates must not be empty");
  FRUGAL_CHECK(!grid.lrs().empty(), "TrialGrid: lrs must not be empty");
  std::vector<std::string> models = grid.models();
  if (models.empty()) {
    for (const auto& m : models_) models.push_back(m.first);
  }
  FRUGAL_CHECK(!models.empty(), "TrialGrid: no models; add some with add_model or add_classifier");
  for (const auto& model : models) {
    for (Precision precision : grid.precisions()) {
      for (int64_t micro_batch : grid.micro_batches()) {
        for (int64_t accumulate : grid.accumulates()) {
          for (double lr : grid.lrs()) {
            add_candidate(TrialConfig{model, precision, micro_batch, accumulate, lr});
          }
        }
      }
    }
  }
  return *this;
}

TrainerOptions Trials::trainer_options(const TrialConfig& config) const {
  TrainerOptions o = options_.trainer();
  o.max_epochs(options_.epochs())
      .seed(options_.seed())
      .precision(config.precision)
      .accumulate_grad_batches(config.accumulate)
      .accelerator(options_.accelerator())
      .strategy("single_device")
      .enable_progress_bar(false)
      .logger(false)
      .num_sanity_val_steps(0)
      .cpu_malloc_tuning(false);  // trials measure memory under the allocator the caller set up
  return o;
}

at::Tensor Trials::subset_indices(int64_t num_samples) const {
  FRUGAL_CHECK(num_samples >= 1, "Trials::subset_indices: num_samples must be >= 1, got ",
               num_samples);
  const int64_t n = std::clamp<int64_t>(
      std::llround(options_.data_fraction() * static_cast<double>(num_samples)), 1, num_samples);
  at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(options_.seed()));
  const at::Tensor perm = at::randperm(num_samples, gen, at::TensorOptions().dtype(at::kLong));
  return std::get<0>(perm.narrow(0, 0, n).sort());
}

// ---- running ----

namespace {

struct Subset {
  at::Tensor train_x;
  at::Tensor train_y;
  at::Tensor val_x;
  at::Tensor val_y;
};

// One trial: a fresh Trainer, the task from the factory, the subset; everything it measures goes
// into `r`. Throws what the run throws.
void run_trial(const TrialsOptions& options, const TrainerOptions& trainer_options,
               const TaskFactory& factory, const Subset& data, c10::Device device,
               int64_t full_train_samples, TrialResult& r) {
  const TrialConfig& config = r.config;
  FRUGAL_CHECK(config.micro_batch <= data.train_x.size(0), "micro_batch ", config.micro_batch,
               " is more than the ", data.train_x.size(0),
               " samples of the trial subset (data_fraction ", options.data_fraction(),
               "); raise data_fraction or lower micro_batch");
  auto monitor = std::make_shared<MemoryMonitor>(MemoryMonitorOptions().print_summary(false));
  auto clock = std::make_shared<TrialClock>();
  detail::PeakMemoryMeter meter(device);
  const Clock::time_point start = Clock::now();
  const bool measurable = meter.start();
  {
    Trainer trainer(trainer_options, {monitor, clock});
    FRUGAL_CHECK(trainer.device() == device, "the trial's Trainer runs on ", trainer.device(),
                 ", the trials on ", device);
    torch::manual_seed(static_cast<uint64_t>(options.seed()));
    std::unique_ptr<Task> task;
    try {
      task = factory(config);
    } catch (const std::exception& e) {
      throw Error(std::string("task factory: ") + e.what());
    }
    FRUGAL_CHECK(task != nullptr, "task factory: returned no task");
    auto train = std::make_shared<TensorLoader>(data.train_x, data.train_y,
                                                TensorLoaderOptions(config.micro_batch)
                                                    .shuffle(true)
                                                    .seed(static_cast<uint64_t>(options.seed())));
    auto val = std::make_shared<TensorLoader>(
        data.val_x, data.val_y,
        TensorLoaderOptions(options.val_batch_size() > 0 ? options.val_batch_size()
                                                         : config.micro_batch));
    trainer.fit(*task, train, val);
    r.epochs = trainer.state().epoch;
    r.seconds = seconds_since(start);  // the deployment measurements below are not the trial's
    if (options.measure_deployment() && r.epochs >= options.epochs()) {
      measure_deployment(*task, data.val_x, device, options, r);
    }
    if (r.epochs < options.epochs()) {
      throw Error(fmt::format("stopped after {} of {} epochs: {}", r.epochs, options.epochs(),
                              trainer.state().stop_reason.empty() ? std::string("no reason given")
                                                                  : trainer.state().stop_reason));
    }
    if (!options.accuracy_metric().empty()) {
      r.val_acc = trainer.metrics().get(options.accuracy_metric()).value_or(NAN);
    }
    if (!options.loss_metric().empty()) {
      r.val_loss = trainer.metrics().get(options.loss_metric()).value_or(NAN);
    }
  }
  if (measurable) {
    r.peak_bytes = meter.growth(monitor->peak());
    r.peak_allocated_bytes = meter.allocated_growth(monitor->peak());
  }
  r.epoch_seconds = clock->seconds() / static_cast<double>(std::max<int64_t>(1, r.epochs));
  r.samples_per_second = static_cast<double>(clock->samples()) / std::max(clock->seconds(), 1e-9);
  r.full_epoch_seconds = static_cast<double>(full_train_samples) / r.samples_per_second;
  FRUGAL_CHECK(options.weight_accuracy() == 0.0 || std::isfinite(r.val_acc), "metric \"",
               options.accuracy_metric(),
               "\" was not logged in validation; set TrialsOptions::accuracy_metric to a metric "
               "the task logs (or weight_accuracy to 0)");
}

// Hard limits; "" when within them.
std::string limit_breaks(const TrialResult& r, const TrialsOptions& options,
                         int64_t full_train_samples) {
  std::string why;
  if (options.max_memory_bytes() > 0 &&
      static_cast<double>(r.peak_bytes) > options.max_memory_bytes()) {
    why = fmt::format("peak memory {} > limit {}", mib(static_cast<double>(r.peak_bytes)),
                      mib(options.max_memory_bytes()));
  }
  if (options.max_epoch_seconds() > 0 && r.full_epoch_seconds > options.max_epoch_seconds()) {
    why += fmt::format("{}epoch time {:.1f} s (estimated for {} samples) > limit {:g} s",
                       why.empty() ? "" : "; ", r.full_epoch_seconds, full_train_samples,
                       options.max_epoch_seconds());
  }
  return why;
}

}  // namespace

TrialsReport Trials::run(const at::Tensor& train_data, const at::Tensor& train_targets,
                         const at::Tensor& val_data, const at::Tensor& val_targets) {
  FRUGAL_CHECK(!candidates_.empty(),
               "Trials::run: no candidates; add some with add_candidate or add_grid");
  check_samples(train_data, train_targets, "train_data", "train_targets");
  check_samples(val_data, val_targets, "val_data", "val_targets");

  TrialsReport report;
  report.options = options_;
  report.options.out(nullptr);
  const c10::Device device = [&] {
    TrainerOptions probe = trainer_options(candidates_.front());
    probe.precision(Precision::k32).accumulate_grad_batches(1);
    return Trainer(probe).device();
  }();
  report.device = device.str();
  const bool cuda = device.is_cuda();
  if (!cuda && (options_.max_memory_bytes() > 0 || options_.weight_memory() > 0)) {
    detail::PeakMemoryMeter probe(device);
    FRUGAL_CHECK(probe.start(),
                 "Trials: the peak RSS cannot be reset in this process (writing "
                 "/proc/self/clear_refs was refused), so the memory limit and weight cannot be "
                 "measured; set max_memory_bytes and weight_memory to 0");
  }

  Subset data;
  const at::Tensor index = subset_indices(train_data.size(0));
  data.train_x = train_data.index_select(0, index.to(train_data.device()));
  data.train_y = train_targets.index_select(0, index.to(train_targets.device()));
  data.val_x = val_data;
  data.val_y = val_targets;
  report.full_train_samples = train_data.size(0);
  report.train_samples = data.train_x.size(0);
  report.val_samples = val_data.size(0);

  std::ostream* out = options_.out();
  auto say = [&](const std::string& line) {
    if (out != nullptr) *out << line << std::flush;
  };
  say(fmt::format(
      "trials: {} candidates on {}, {} of {} training samples, {} epoch{} each, {} validation "
      "samples\n",
      candidates_.size(), report.device, report.train_samples, report.full_train_samples,
      options_.epochs(), options_.epochs() == 1 ? "" : "s", report.val_samples));

  auto factory_of = [&](const std::string& model) -> const TaskFactory& {
    for (const auto& m : models_) {
      if (m.first == model) return m.second;
    }
    FRUGAL_CHECK(false, "Trials: unknown model \"", model, "\"");
    return models_.front().second;
  };

  if (options_.warmup()) {
    // Unmeasured: two training batches and one validation batch of the first candidate that
    // runs at all (a failing one warms nothing up; the measured trials report it).
    TrialsOptions warm = options_;
    warm.epochs(1);
    for (const TrialConfig& config : candidates_) {
      TrialResult ignored;
      ignored.config = config;
      TrainerOptions trainer = trainer_options(config);
      trainer.max_epochs(1).limit_train_batches(2).limit_val_batches(1);
      try {
        run_trial(warm, trainer, factory_of(config.model), data, device, report.full_train_samples,
                  ignored);
        break;
      } catch (const std::exception&) {
        compat::empty_device_cache(device);
      }
    }
  }

  std::vector<TrialResult> results;
  std::string interrupted;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    TrialResult r;
    r.config = candidates_[i];
    say(fmt::format("trial {}/{}: {} ... ", i + 1, candidates_.size(), r.config.describe()));
    if (!interrupted.empty()) {
      r.reason = "not run: the trials were interrupted (" + interrupted + ")";
      say(r.reason + "\n");
      results.push_back(std::move(r));
      continue;
    }
    try {
      run_trial(options_, trainer_options(r.config), factory_of(r.config.model), data, device,
                report.full_train_samples, r);
      r.reason = limit_breaks(r, options_, report.full_train_samples);
      r.status = r.reason.empty() ? TrialResult::Status::kRanked : TrialResult::Status::kOverLimit;
    } catch (const std::exception& e) {
      r.status = TrialResult::Status::kFailed;
      r.reason = compat::is_out_of_memory(e) ? std::string("out of memory: ") + e.what() : e.what();
      compat::empty_device_cache(device);
      if (r.reason.find(": received SIG") != std::string::npos) interrupted = r.reason;
    } catch (...) {
      r.status = TrialResult::Status::kFailed;
      r.reason = "threw something that is not a std::exception";
    }
    if (r.status == TrialResult::Status::kFailed) {
      say("failed: " + first_line(r.reason) + "\n");
    } else {
      say(fmt::format("{:.1f} s, {:.0f} samples/s, peak {}, {} {}{}\n", r.seconds,
                      r.samples_per_second,
                      r.peak_bytes >= 0 ? mib(static_cast<double>(r.peak_bytes)) : "-",
                      options_.accuracy_metric(), cell(r.val_acc, "{:.4f}"),
                      r.reason.empty() ? "" : "; over limit: " + r.reason));
    }
    results.push_back(std::move(r));
  }

  std::vector<TrialResult*> ranked;
  for (auto& r : results) {
    if (r.status == TrialResult::Status::kRanked) ranked.push_back(&r);
  }
  score(ranked, options_);
  for (TrialResult* r : ranked) report.results.push_back(*r);
  for (auto status : {TrialResult::Status::kOverLimit, TrialResult::Status::kFailed}) {
    for (const auto& r : results) {
      if (r.status == status) report.results.push_back(r);
    }
  }

  say("\n" + report.table());
  if (!options_.output_dir().empty()) {
    std::filesystem::create_directories(options_.output_dir());
    const std::string csv = (std::filesystem::path(options_.output_dir()) / "trials.csv").string();
    const std::string json =
        (std::filesystem::path(options_.output_dir()) / "trials.json").string();
    const std::string html =
        (std::filesystem::path(options_.output_dir()) / "report.html").string();
    report.write_csv(csv);
    report.write_json(json);
    detail::write_file_atomically(html, render_trials_report(report));
    say(fmt::format("wrote {}, {} and {}\n", csv, json, html));
  }
  return report;
}

// ---- the report ----

const TrialResult* TrialsReport::best() const {
  for (const auto& r : results) {
    if (r.status == TrialResult::Status::kRanked && r.rank == 1) return &r;
  }
  return nullptr;
}

namespace {
// Bytes as "12.3" MB (10^6), "-" when not measured.
std::string megabytes(int64_t bytes) {
  return bytes >= 0 ? fmt::format("{:.2f}", static_cast<double>(bytes) / 1e6) : "-";
}
}  // namespace

std::string TrialsReport::table() const {
  size_t model_width = 5;
  for (const auto& r : results) model_width = std::max(model_width, r.config.model.size());
  const std::string row_format = fmt::format(
      "{{:>4}}  {{:<{}}}  {{:<10}}  {{:>5}}  {{:>5}}  {{:>8}}  {{:>9}}  {{:>9}}  "
      "{{:>8}}  {{:>10}}  {{:>7}}  {{:>8}}  {{:>8}}  {{:>9}}  {{:>7}}  {{:>7}}  {{:>5}}  {{}}\n",
      model_width);
  std::string text = fmt::format(
      "Trials on {}: {} of {} training samples (data_fraction {:g}, seed {}), {} epoch{}, {} "
      "validation samples; limits: memory {}, epoch {}; weights: memory {:g}, speed {:g}, "
      "accuracy {:g}, latency {:g}, size {:g}\n",
      device, train_samples, full_train_samples, options.data_fraction(), options.seed(),
      options.epochs(), options.epochs() == 1 ? "" : "s", val_samples,
      limit_text(options.max_memory_bytes(), true), limit_text(options.max_epoch_seconds(), false),
      options.weight_memory(), options.weight_speed(), options.weight_accuracy(),
      options.weight_latency(), options.weight_size());
  text += fmt::format(fmt::runtime(row_format), "rank", "model", "precision", "micro", "accum",
                      "lr", "peak MiB", "samples/s", "epoch s", "full ep. s", "val acc", "val loss",
                      "lat1 ms", "lat64 ms", "MB", "int8 MB", "score", "status");
  for (const auto& r : results) {
    std::string status = "ok";
    if (r.status == TrialResult::Status::kOverLimit) status = "over limit: " + r.reason;
    if (r.status == TrialResult::Status::kFailed) status = "failed: " + first_line(r.reason);
    text += fmt::format(
        fmt::runtime(row_format), r.rank > 0 ? std::to_string(r.rank) : std::string("-"),
        r.config.model, to_string(r.config.precision), r.config.micro_batch, r.config.accumulate,
        fmt::format("{:g}", r.config.lr),
        r.peak_bytes >= 0 ? fmt::format("{:.1f}", static_cast<double>(r.peak_bytes) / kMiB) : "-",
        cell(r.samples_per_second, "{:.0f}"), cell(r.epoch_seconds, "{:.2f}"),
        cell(r.full_epoch_seconds, "{:.1f}"), cell(r.val_acc, "{:.4f}"), cell(r.val_loss, "{:.4f}"),
        cell(r.latency_b1_ms, "{:.2f}"), cell(r.latency_b64_ms, "{:.1f}"), megabytes(r.model_bytes),
        megabytes(r.model_bytes_int8), cell(r.score, "{:.3f}"), status);
  }
  text += fmt::format(
      "peak MiB: peak {} growth over the trial's start; epoch s: one training epoch over the "
      "subset; full ep. s: estimated for all {} samples; lat1/lat64 ms: eval forward of 1/64 "
      "samples; MB / int8 MB: the model's size in fp32 / with int8 Linear layers; score: "
      "docs/trials.md\n",
      device.rfind("cuda", 0) == 0 ? "reserved CUDA memory" : "RSS", full_train_samples);
  return text;
}

std::string TrialsReport::to_csv() const {
  std::string text =
      "rank,model,precision,micro_batch,accumulate,lr,status,reason,score,memory_term,speed_term,"
      "accuracy_term,epochs,seconds,epoch_seconds,samples_per_second,full_epoch_seconds,"
      "peak_bytes,peak_allocated_bytes,val_acc,val_loss,latency_term,size_term,latency_b1_ms,"
      "latency_b64_ms,model_bytes,model_bytes_int8\n";
  for (const auto& r : results) {
    text += fmt::format(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        r.rank > 0 ? std::to_string(r.rank) : std::string(), detail::csv_cell(r.config.model),
        to_string(r.config.precision), r.config.micro_batch, r.config.accumulate,
        csv_number(r.config.lr), detail::csv_cell(to_string(r.status)), detail::csv_cell(r.reason),
        csv_number(r.score), csv_number(r.memory_term), csv_number(r.speed_term),
        csv_number(r.accuracy_term), r.epochs, csv_number(r.seconds), csv_number(r.epoch_seconds),
        csv_number(r.samples_per_second), csv_number(r.full_epoch_seconds),
        r.peak_bytes >= 0 ? std::to_string(r.peak_bytes) : std::string(),
        r.peak_allocated_bytes >= 0 ? std::to_string(r.peak_allocated_bytes) : std::string(),
        csv_number(r.val_acc), csv_number(r.val_loss), csv_number(r.latency_term),
        csv_number(r.size_term), csv_number(r.latency_b1_ms), csv_number(r.latency_b64_ms),
        r.model_bytes >= 0 ? std::to_string(r.model_bytes) : std::string(),
        r.model_bytes_int8 >= 0 ? std::to_string(r.model_bytes_int8) : std::string());
  }
  return text;
}

std::string TrialsReport::to_json() const {
  auto optional_int = [](int64_t v) { return v >= 0 ? std::to_string(v) : std::string("null"); };
  std::string text = "{\n";
  text += fmt::format("  \"device\": {},\n", json_string(device));
  text += fmt::format(
      "  \"train_samples\": {},\n  \"full_train_samples\": {},\n  \"val_samples\": {},\n",
      train_samples, full_train_samples, val_samples);
  text += fmt::format(
      "  \"options\": {{\"data_fraction\": {}, \"epochs\": {}, \"seed\": {}, \"accelerator\": {}, "
      "\"weight_memory\": {}, \"weight_speed\": {}, \"weight_accuracy\": {}, "
      "\"weight_latency\": {}, \"weight_size\": {}, "
      "\"max_memory_bytes\": {}, \"max_epoch_seconds\": {}, \"accuracy_metric\": {}, "
      "\"loss_metric\": {}}},\n",
      json_number(options.data_fraction()), options.epochs(), options.seed(),
      json_string(options.accelerator()), json_number(options.weight_memory()),
      json_number(options.weight_speed()), json_number(options.weight_accuracy()),
      json_number(options.weight_latency()), json_number(options.weight_size()),
      json_number(options.max_memory_bytes()), json_number(options.max_epoch_seconds()),
      json_string(options.accuracy_metric()), json_string(options.loss_metric()));
  text += "  \"results\": [";
  for (size_t i = 0; i < results.size(); ++i) {
    const TrialResult& r = results[i];
    text += fmt::format(
        "{}\n    {{\"rank\": {}, \"model\": {}, \"precision\": {}, \"micro_batch\": {}, "
        "\"accumulate\": {}, \"lr\": {}, \"status\": {}, \"reason\": {}, \"score\": {}, "
        "\"memory_term\": {}, \"speed_term\": {}, \"accuracy_term\": {}, \"epochs\": {}, "
        "\"seconds\": {}, \"epoch_seconds\": {}, \"samples_per_second\": {}, "
        "\"full_epoch_seconds\": {}, \"peak_bytes\": {}, \"peak_allocated_bytes\": {}, "
        "\"val_acc\": {}, \"val_loss\": {}, \"latency_term\": {}, \"size_term\": {}, "
        "\"latency_b1_ms\": {}, \"latency_b64_ms\": {}, \"model_bytes\": {}, "
        "\"model_bytes_int8\": {}}}",
        i == 0 ? "" : ",", r.rank > 0 ? std::to_string(r.rank) : std::string("null"),
        json_string(r.config.model), json_string(to_string(r.config.precision)),
        r.config.micro_batch, r.config.accumulate, json_number(r.config.lr),
        json_string(to_string(r.status)), json_string(r.reason), json_number(r.score),
        json_number(r.memory_term), json_number(r.speed_term), json_number(r.accuracy_term),
        r.epochs, json_number(r.seconds), json_number(r.epoch_seconds),
        json_number(r.samples_per_second), json_number(r.full_epoch_seconds),
        optional_int(r.peak_bytes), optional_int(r.peak_allocated_bytes), json_number(r.val_acc),
        json_number(r.val_loss), json_number(r.latency_term), json_number(r.size_term),
        json_number(r.latency_b1_ms), json_number(r.latency_b64_ms), optional_int(r.model_bytes),
        optional_int(r.model_bytes_int8));
  }
  text += results.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return text;
}

void TrialsReport::write_csv(const std::string& path) const {
  detail::write_file_atomically(path, to_csv());
}

void TrialsReport::write_json(const std::string& path) const {
  detail::write_file_atomically(path, to_json());
}

}  // namespace frugal

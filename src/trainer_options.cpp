// TrainerOptions: parsing and validation. Every bad value is refused here, once, with a message
// that names the option, the value and what is allowed.
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "frugal/error.h"
#include "frugal/trainer.h"

namespace frugal {

BatchLimit BatchLimit::parse(const std::string& text) {
  char* end = nullptr;
  if (text.find_first_of(".eE") != std::string::npos) {
    double v = std::strtod(text.c_str(), &end);
    FRUGAL_CHECK(end && *end == '\0' && !text.empty(),
                 "expected a fraction (e.g. 0.25) or a batch count (e.g. 100), got \"", text, "\"");
    return BatchLimit(v);
  }
  long long v = std::strtoll(text.c_str(), &end, 10);
  FRUGAL_CHECK(end && *end == '\0' && !text.empty(),
               "expected a fraction (e.g. 0.25) or a batch count (e.g. 100), got \"", text, "\"");
  return BatchLimit(static_cast<int64_t>(v));
}

int64_t BatchLimit::resolve(int64_t available) const {
  if (is_fraction) return static_cast<int64_t>(std::floor(value * static_cast<double>(available)));
  return std::min<int64_t>(static_cast<int64_t>(value), available);
}

std::string BatchLimit::str() const {
  return is_fraction ? fmt::format("{}", value) : fmt::format("{}", static_cast<int64_t>(value));
}

TrainerOptions& TrainerOptions::max_time(const std::string& text) {
  // "DD:HH:MM:SS" as Lightning; fewer fields count from the right ("HH:MM:SS", "MM:SS", "SS").
  std::vector<double> parts;
  std::stringstream in(text);
  std::string field;
  while (std::getline(in, field, ':')) {
    char* end = nullptr;
    double v = std::strtod(field.c_str(), &end);
    FRUGAL_CHECK(!field.empty() && end && *end == '\0' && v >= 0,
                 "max_time must look like \"DD:HH:MM:SS\" with non-negative numbers, got \"", text,
                 "\"");
    parts.push_back(v);
  }
  FRUGAL_CHECK(!parts.empty() && parts.size() <= 4,
               "max_time must look like \"DD:HH:MM:SS\", got \"", text, "\"");
  static const double kUnit[] = {1.0, 60.0, 3600.0, 86400.0};
  double seconds = 0;
  for (size_t i = 0; i < parts.size(); ++i) seconds += parts[parts.size() - 1 - i] * kUnit[i];
  max_time_seconds_ = seconds;
  return *this;
}

namespace {
void check_limit(const char* name, const BatchLimit& limit) {
  if (limit.is_fraction) {
    FRUGAL_CHECK(limit.value >= 0.0 && limit.value <= 1.0, name,
                 " as a fraction must be in [0, 1], got ", limit.value,
                 " (pass an integer for a batch count)");
  } else {
    FRUGAL_CHECK(limit.value >= 0, name, " as a batch count must be >= 0, got ",
                 static_cast<int64_t>(limit.value));
  }
}
}  // namespace

void TrainerOptions::validate() const {
  FRUGAL_CHECK(max_epochs_ >= -1, "max_epochs must be >= 0 (or -1 for the default), got ",
               max_epochs_);
  FRUGAL_CHECK(min_epochs_ >= 0, "min_epochs must be >= 0, got ", min_epochs_);
  FRUGAL_CHECK(max_epochs_ == -1 || min_epochs_ <= max_epochs_, "min_epochs (", min_epochs_,
               ") must not exceed max_epochs (", max_epochs_, ")");
  FRUGAL_CHECK(max_steps_ >= -1, "max_steps must be >= 0 (or -1 for no limit), got ", max_steps_);
  FRUGAL_CHECK(min_steps_ >= 0, "min_steps must be >= 0, got ", min_steps_);
  FRUGAL_CHECK(max_steps_ == -1 || min_steps_ <= max_steps_, "min_steps (", min_steps_,
               ") must not exceed max_steps (", max_steps_, ")");
  FRUGAL_CHECK(std::isfinite(max_time_seconds_) && max_time_seconds_ >= 0,
               "max_time must be >= 0 seconds, got ", max_time_seconds_);
  check_limit("limit_train_batches", limit_train_batches_);
  check_limit("limit_val_batches", limit_val_batches_);
  check_limit("limit_test_batches", limit_test_batches_);
  FRUGAL_CHECK(fast_dev_run_ >= 0, "fast_dev_run must be >= 0 (0 = off), got ", fast_dev_run_);
  if (val_check_interval_.is_fraction) {
    FRUGAL_CHECK(val_check_interval_.value > 0.0 && val_check_interval_.value <= 1.0,
                 "val_check_interval as a fraction of an epoch must be in (0, 1], got ",
                 val_check_interval_.value);
  } else {
    FRUGAL_CHECK(val_check_interval_.value >= 1,
                 "val_check_interval as a batch count must be >= 1, got ",
                 static_cast<int64_t>(val_check_interval_.value));
  }
  FRUGAL_CHECK(check_val_every_n_epoch_ >= 0,
               "check_val_every_n_epoch must be >= 1 (or 0 to validate by batch count only), got ",
               check_val_every_n_epoch_);
  FRUGAL_CHECK(check_val_every_n_epoch_ > 0 || !val_check_interval_.is_fraction,
               "check_val_every_n_epoch=0 needs val_check_interval as a batch count, got the "
               "fraction ",
               val_check_interval_.value);
  FRUGAL_CHECK(num_sanity_val_steps_ >= -1,
               "num_sanity_val_steps must be >= 0 (or -1 for all), got ", num_sanity_val_steps_);
  FRUGAL_CHECK(log_every_n_steps_ >= 1, "log_every_n_steps must be >= 1, got ", log_every_n_steps_);
  FRUGAL_CHECK(accelerator_ == "auto" || accelerator_ == "cpu" || accelerator_ == "cuda" ||
                   accelerator_ == "gpu",
               "accelerator must be \"auto\", \"cpu\" or \"cuda\", got \"", accelerator_, "\"");
  FRUGAL_CHECK(devices_ == -1 || devices_ >= 1, "devices must be >= 1 (or -1 for auto), got ",
               devices_);
  FRUGAL_CHECK(strategy_ == "auto" || strategy_ == "single_device" || strategy_ == "ddp",
               "strategy must be \"auto\", \"single_device\" or \"ddp\", got \"", strategy_, "\"");
  FRUGAL_CHECK(std::isfinite(process_group_timeout_seconds_) && process_group_timeout_seconds_ > 0,
               "process_group_timeout_seconds must be > 0, got ", process_group_timeout_seconds_);
  FRUGAL_CHECK(std::isfinite(ddp_bucket_cap_mb_) && ddp_bucket_cap_mb_ > 0,
               "ddp_bucket_cap_mb must be > 0, got ", ddp_bucket_cap_mb_);
  FRUGAL_CHECK(accumulate_grad_batches_ >= 1, "accumulate_grad_batches must be >= 1, got ",
               accumulate_grad_batches_);
  if (!accumulation_schedule_.empty()) {
    FRUGAL_CHECK(accumulate_grad_batches_ == 1,
                 "accumulation_schedule and accumulate_grad_batches=", accumulate_grad_batches_,
                 " both set: use one of them");
    for (const auto& [epoch, k] : accumulation_schedule_) {
      FRUGAL_CHECK(epoch >= 0, "accumulation_schedule: epochs must be >= 0, got ", epoch);
      FRUGAL_CHECK(k >= 1, "accumulation_schedule: the factor for epoch ", epoch,
                   " must be >= 1, got ", k);
    }
  }
  FRUGAL_CHECK(std::isfinite(gradient_clip_val_) && gradient_clip_val_ >= 0,
               "gradient_clip_val must be >= 0 (0 = no clipping), got ", gradient_clip_val_);
  FRUGAL_CHECK(gradient_clip_algorithm_ == "norm" || gradient_clip_algorithm_ == "value",
               "gradient_clip_algorithm must be \"norm\" or \"value\", got \"",
               gradient_clip_algorithm_, "\"");
  FRUGAL_CHECK(!default_root_dir_.empty(), "default_root_dir must not be empty");
  FRUGAL_CHECK(memory_budget_ >= 0, "memory_budget must be >= 0 bytes, got ", memory_budget_);
  FRUGAL_CHECK(effective_batch_size_ >= 0, "effective_batch_size must be >= 1 (0: off), got ",
               effective_batch_size_);
  FRUGAL_CHECK((memory_budget_ > 0) == (effective_batch_size_ > 0),
               "memory_budget and effective_batch_size go together, got memory_budget=",
               memory_budget_, " and effective_batch_size=", effective_batch_size_);
  FRUGAL_CHECK(num_threads_ >= -1,
               "num_threads must be >= 1 (0: decided from the CPUs this process may use, -1: "
               "leave LibTorch's setting), got ",
               num_threads_);
  FRUGAL_CHECK(effective_batch_size_ == 0 ||
                   (accumulate_grad_batches_ == 1 && accumulation_schedule_.empty()),
               "effective_batch_size sets accumulate_grad_batches itself; leave "
               "accumulate_grad_batches at 1 and accumulation_schedule empty, got "
               "accumulate_grad_batches=",
               accumulate_grad_batches_);
}

int64_t TrainerOptions::accumulation_for_epoch(int64_t epoch) const {
  int64_t k = accumulate_grad_batches_;
  for (const auto& [from, factor] : accumulation_schedule_) {
    if (from <= epoch) k = factor;  // the map is ordered: the last one that started wins
  }
  return k;
}

std::map<std::string, std::string> TrainerOptions::to_map() const {
  auto b = [](bool v) { return std::string(v ? "true" : "false"); };
  auto s = [](auto v) { return fmt::format("{}", v); };
  std::string schedule;
  for (const auto& [epoch, k] : accumulation_schedule_) {
    schedule += (schedule.empty() ? "" : ",") + fmt::format("{}:{}", epoch, k);
  }
  const char* nan_policy = nan_loss_ == NanLossPolicy::kRaise  ? "raise"
                           : nan_loss_ == NanLossPolicy::kSkip ? "skip"
                                                               : "ignore";
  return {
      {"max_epochs", s(max_epochs_)},
      {"min_epochs", s(min_epochs_)},
      {"max_steps", s(max_steps_)},
      {"min_steps", s(min_steps_)},
      {"max_time_seconds", s(max_time_seconds_)},
      {"limit_train_batches", limit_train_batches_.str()},
      {"limit_val_batches", limit_val_batches_.str()},
      {"limit_test_batches", limit_test_batches_.str()},
      {"fast_dev_run", s(fast_dev_run_)},
      {"val_check_interval", val_check_interval_.str()},
      {"check_val_every_n_epoch", s(check_val_every_n_epoch_)},
      {"num_sanity_val_steps", s(num_sanity_val_steps_)},
      {"log_every_n_steps", s(log_every_n_steps_)},
      {"enable_progress_bar", b(enable_progress_bar_)},
      {"logger", b(logger_)},
      {"default_root_dir", default_root_dir_},
      {"seed", s(seed_)},
      {"deterministic", b(deterministic_)},
      {"accelerator", accelerator_},
      {"devices", s(devices_)},
      {"strategy", strategy_},
      {"process_group_timeout_seconds", s(process_group_timeout_seconds_)},
      {"ddp_bucket_cap_mb", s(ddp_bucket_cap_mb_)},
      {"find_unused_parameters", b(find_unused_parameters_)},
      {"precision", to_string(precision_)},
      {"accumulate_grad_batches", s(accumulate_grad_batches_)},
      {"accumulation_schedule", schedule},
      {"gradient_clip_val", s(gradient_clip_val_)},
      {"gradient_clip_algorithm", gradient_clip_algorithm_},
      {"nan_loss", nan_policy},
      {"memory_budget", s(memory_budget_)},
      {"effective_batch_size", s(effective_batch_size_)},
      {"oom_recovery", b(oom_recovery_)},
      {"cpu_malloc_tuning", b(cpu_malloc_tuning_)},
      {"verify_checkpoints", b(verify_checkpoints_)},
      {"num_threads", s(num_threads_)},
      {"channels_last", b(channels_last_)},
  };
}

}  // namespace frugal

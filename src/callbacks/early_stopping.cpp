#include "frugal/callbacks/early_stopping.h"

#include <fmt/format.h>
#include <torch/nn/module.h>

#include <cmath>
#include <iostream>
#include <limits>
#include <map>

#include "frugal/error.h"
#include "frugal/trainer.h"

namespace frugal {

namespace {

constexpr const char* kBestWeightsPrefix = "best_weights/";

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out.empty() ? "(none)" : out;
}

const c10::IValue* find_entry(const StateDict& state, const std::string& key) {
  auto it = state.find(key);
  return it == state.end() ? nullptr : &it->second;
}

int64_t int_entry(const StateDict& state, const std::string& key, std::optional<int64_t> fallback) {
  const c10::IValue* v = find_entry(state, key);
  if (v == nullptr && fallback) return *fallback;
  FRUGAL_CHECK(v != nullptr && v->isInt(), "EarlyStopping: checkpoint state has no '", key,
               "' (an integer)");
  return v->toInt();
}

}  // namespace

EarlyStopping::EarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
  const EarlyStoppingOptions& o = options_;
  FRUGAL_CHECK(!o.monitor().empty(),
               "EarlyStopping: monitor must name a logged metric (e.g. \"val/loss\"), got \"\"");
  FRUGAL_CHECK(o.mode() == "min" || o.mode() == "max",
               "EarlyStopping: mode must be \"min\" or \"max\", got \"", o.mode(), "\"");
  FRUGAL_CHECK(o.patience() >= 0, "EarlyStopping: patience must be >= 0, got ", o.patience());
  FRUGAL_CHECK(o.min_delta() >= 0.0, "EarlyStopping: min_delta must be >= 0, got ", o.min_delta());
  FRUGAL_CHECK(!o.stopping_threshold() || !std::isnan(*o.stopping_threshold()),
               "EarlyStopping: stopping_threshold must be a number, got nan");
  FRUGAL_CHECK(!o.divergence_threshold() || !std::isnan(*o.divergence_threshold()),
               "EarlyStopping: divergence_threshold must be a number, got nan");
  maximize_ = o.mode() == "max";
  best_score_ = maximize_ ? -std::numeric_limits<double>::infinity()
                          : std::numeric_limits<double>::infinity();
}

std::string EarlyStopping::state_key() const {
  return fmt::format("EarlyStopping{{monitor={}, mode={}}}", options_.monitor(), options_.mode());
}

StateDict EarlyStopping::state_dict() const {
  StateDict state{{"wait_count", wait_count_},       {"stopped_epoch", stopped_epoch_},
                  {"best_score", best_score_},       {"best_epoch", best_epoch_},
                  {"patience", options_.patience()}, {"stopping_reason", stopping_reason_}};
  for (const auto& [name, tensor] : best_weights_) {
    state[kBestWeightsPrefix + name] = tensor.to(at::kCPU);
  }
  return state;
}

void EarlyStopping::load_state_dict(const StateDict& state) {
  wait_count_ = int_entry(state, "wait_count", std::nullopt);
  stopped_epoch_ = int_entry(state, "stopped_epoch", std::nullopt);
  best_epoch_ = int_entry(state, "best_epoch", -1);
  const c10::IValue* best = find_entry(state, "best_score");
  FRUGAL_CHECK(best != nullptr && best->isDouble(),
               "EarlyStopping: checkpoint state has no 'best_score' (a double)");
  best_score_ = best->toDouble();
  const c10::IValue* reason = find_entry(state, "stopping_reason");
  stopping_reason_ = reason != nullptr && reason->isString() ? reason->toStringRef() : "";
  // The saved "patience" is informational: the configured one wins, so a resumed run can be
  // given more (or less) patience.
  best_weights_.clear();
  if (!options_.restore_best_weights()) return;
  const std::string prefix = kBestWeightsPrefix;
  for (const auto& [key, value] : state) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    FRUGAL_CHECK(value.isTensor(), "EarlyStopping: checkpoint entry '", key, "' is not a tensor");
    best_weights_.emplace_back(key.substr(prefix.size()), value.toTensor());
  }
}

void EarlyStopping::on_train_epoch_end(Trainer& trainer, Task& task) {
  if (check_at_train_epoch_end(trainer)) run_check(trainer, task);
}

void EarlyStopping::on_validation_end(Trainer& trainer, Task& task) {
  if (!check_at_train_epoch_end(trainer)) run_check(trainer, task);
}

void EarlyStopping::on_fit_end(Trainer&, Task& task) {
  restored_ = false;
  if (!options_.restore_best_weights() || best_weights_.empty()) return;
  std::map<std::string, const at::Tensor*> saved;
  for (const auto& [name, tensor] : best_weights_) saved[name] = &tensor;
  torch::nn::Module& module = task.module();
  std::vector<std::pair<at::Tensor, const at::Tensor*>> targets;
  for (const auto& entries : {module.named_parameters(true), module.named_buffers(true)}) {
    for (const auto& item : entries) {
      const at::Tensor& target = item.value();
      if (!target.defined()) continue;
      auto it = saved.find(item.key());
      FRUGAL_CHECK(it != saved.end(), "EarlyStopping: the best weights have no entry for '",
                   item.key(), "'; was the module changed after they were saved?");
      FRUGAL_CHECK(it->second->sizes() == target.sizes(), "EarlyStopping: the best weights of '",
                   item.key(), "' have shape ", it->second->sizes(), ", the module's ",
                   target.sizes());
      targets.emplace_back(target, it->second);
    }
  }
  // Everything is checked before anything is written, so a mismatch leaves the module as it was.
  at::NoGradGuard no_grad;
  for (auto& [target, source] : targets) target.copy_(*source);
  restored_ = true;
  say(fmt::format("restored the weights of epoch {} ({} = {:.6g})", best_epoch_, options_.monitor(),
                  best_score_));
}

bool EarlyStopping::check_at_train_epoch_end(const Trainer& trainer) const {
  if (options_.check_on_train_epoch_end()) return *options_.check_on_train_epoch_end();
  // Lightning's default: validation, if any, ran just before this epoch end, so checking here
  // sees both its metrics and the training epoch's.
  const TrainerOptions& o = trainer.options();
  return o.val_check_interval().is_fraction && o.val_check_interval().value == 1.0 &&
         o.check_val_every_n_epoch() == 1;
}

bool EarlyStopping::should_skip(const Trainer& trainer) const {
  const TrainerState& s = trainer.state();
  return s.fn != TrainerFn::kFit || s.sanity_checking || trainer.options().fast_dev_run() > 0;
}

void EarlyStopping::run_check(Trainer& trainer, Task& task) {
  if (should_skip(trainer)) return;
  const std::string& monitor = options_.monitor();
  const std::optional<double> value = trainer.metrics().get(monitor);
  if (!value) {
    const std::string message =
        fmt::format("EarlyStopping could not find the monitored metric \"{}\"; logged metrics: {}",
                    monitor, join_names(trainer.metrics().names()));
    FRUGAL_CHECK(!options_.strict(), message,
                 " (set strict(false) to skip the check while it is missing)");
    if (!warned_missing_) say("warning: " + message + "; skipping the check");
    warned_missing_ = true;
    return;
  }

  // Lightning's _evaluate_stopping_criteria, in its order.
  const double current = *value;
  const int64_t epoch = trainer.state().epoch;
  const char* better_op = maximize_ ? ">" : "<";
  const char* worse_op = maximize_ ? "<" : ">";
  auto better = [this](double a, double b) { return maximize_ ? a > b : a < b; };
  std::string reason;
  if (options_.check_finite() && !std::isfinite(current)) {
    reason = fmt::format("Monitored metric {} = {} is not finite. Previous best value was {:.6g}.",
                         monitor, current, best_score_);
  } else if (options_.stopping_threshold() && better(current, *options_.stopping_threshold())) {
    reason = fmt::format("Stopping threshold reached: {} = {:.6g} {} {:.6g}.", monitor, current,
                         better_op, *options_.stopping_threshold());
  } else if (options_.divergence_threshold() && better(*options_.divergence_threshold(), current)) {
    reason = fmt::format("Divergence threshold reached: {} = {:.6g} {} {:.6g}.", monitor, current,
                         worse_op, *options_.divergence_threshold());
  } else if (better(maximize_ ? current - options_.min_delta() : current + options_.min_delta(),
                    best_score_)) {
    const std::string message =
        std::isfinite(best_score_)
            ? fmt::format(
                  "Metric {} improved by {:.6g} >= min_delta = {:.6g}. New best score: "
                  "{:.6g}",
                  monitor, std::abs(best_score_ - current), options_.min_delta(), current)
            : fmt::format("Metric {} improved. New best score: {:.6g}", monitor, current);
    best_score_ = current;
    best_epoch_ = epoch;
    wait_count_ = 0;
    if (options_.restore_best_weights()) snapshot(task);
    say(message);
    return;
  } else {
    ++wait_count_;
    if (wait_count_ < options_.patience()) return;
    reason = fmt::format(
        "Monitored metric {} did not improve in the last {} checks. Best score: "
        "{:.6g} (epoch {}).",
        monitor, wait_count_, best_score_, best_epoch_);
  }
  stopped_epoch_ = epoch;
  stopping_reason_ = reason;
  trainer.request_stop("EarlyStopping: " + reason);
  say(reason + " Signaling Trainer to stop.");
}

void EarlyStopping::snapshot(Task& task) {
  at::NoGradGuard no_grad;
  torch::nn::Module& module = task.module();
  best_weights_.clear();
  for (const auto& entries : {module.named_parameters(true), module.named_buffers(true)}) {
    for (const auto& item : entries) {
      if (item.value().defined()) best_weights_.emplace_back(item.key(), item.value().clone());
    }
  }
}

void EarlyStopping::say(const std::string& line) const {
  if (!options_.verbose()) return;
  std::ostream& out = options_.log_stream() != nullptr ? *options_.log_stream() : std::cerr;
  out << "EarlyStopping: " << line << "\n";
}

}  // namespace frugal

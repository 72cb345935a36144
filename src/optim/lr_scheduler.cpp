// Closed-form learning-rate schedulers with the formulas of torch.optim.lr_scheduler.
//
// Note [Closed form instead of PyTorch's chained form]
// PyTorch's step() updates each LR from the previous one ("chainable" form); we compute every LR
// from the base LRs and the step count. The two agree to rounding (tests compare PyTorch's own
// sequences to 1e-9 relative), and the closed form makes a restored scheduler continue exactly
// from its step count, whatever the optimizer's LR was when the state was loaded.
#include "frugal/optim/lr_scheduler.h"

#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "frugal/error.h"

namespace frugal {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<double> read_lrs(const torch::optim::Optimizer& optimizer) {
  std::vector<double> lrs;
  const auto& groups = optimizer.param_groups();
  lrs.reserve(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    FRUGAL_CHECK(groups[i].has_options(), "LRScheduler: parameter group ", i,
                 " of the optimizer has no options (no learning rate)");
    try {
      lrs.push_back(groups[i].options().get_lr());
    } catch (const c10::Error&) {
      FRUGAL_CHECK(false, "LRScheduler: the options of parameter group ", i,
                   " do not expose a learning rate (OptimizerOptions::get_lr() is not "
                   "implemented for this optimizer)");
    }
  }
  return lrs;
}

// PyTorch's cosine annealing between `start` (pct = 0) and `end` (pct = 1).
double anneal_cos(double start, double end, double pct) {
  return end + (start - end) / 2.0 * (std::cos(kPi * pct) + 1.0);
}

const c10::IValue& require(const StateDict& state, const std::string& key) {
  auto it = state.find(key);
  FRUGAL_CHECK(it != state.end(), "LRScheduler::load_state_dict: the state has no '", key,
               "' entry");
  return it->second;
}

int64_t require_int(const StateDict& state, const std::string& key) {
  const auto& value = require(state, key);
  FRUGAL_CHECK(value.isInt(), "LRScheduler::load_state_dict: '", key, "' must be an integer, got ",
               value.tagKind());
  return value.toInt();
}

double require_double(const StateDict& state, const std::string& key) {
  const auto& value = require(state, key);
  if (value.isInt()) return static_cast<double>(value.toInt());
  FRUGAL_CHECK(value.isDouble(), "LRScheduler::load_state_dict: '", key, "' must be a number, got ",
               value.tagKind());
  return value.toDouble();
}

// Accepts a typed double list or a generic list of numbers (what an unpickled list may be).
std::vector<double> require_doubles(const StateDict& state, const std::string& key) {
  const auto& value = require(state, key);
  if (value.isDoubleList()) return value.toDoubleVector();
  FRUGAL_CHECK(value.isList(), "LRScheduler::load_state_dict: '", key,
               "' must be a list of numbers, got ", value.tagKind());
  std::vector<double> out;
  for (const c10::IValue& item : value.toListRef()) {
    FRUGAL_CHECK(item.isDouble() || item.isInt(), "LRScheduler::load_state_dict: '", key,
                 "' must be a list of numbers, found a ", item.tagKind());
    out.push_back(item.isDouble() ? item.toDouble() : static_cast<double>(item.toInt()));
  }
  return out;
}

void check_group_count(const std::string& key, size_t in_state, size_t in_optimizer) {
  FRUGAL_CHECK(in_state == in_optimizer, "LRScheduler::load_state_dict: '", key, "' has ", in_state,
               " parameter group(s) but the optimizer has ", in_optimizer);
}

}  // namespace

// ---- LRScheduler ----

LRScheduler::LRScheduler(torch::optim::Optimizer& optimizer)
    : optimizer_(optimizer), base_lrs_(read_lrs(optimizer)), last_lrs_(base_lrs_) {}

void LRScheduler::step() {
  ++last_epoch_;
  try {
    apply(compute_lr());
  } catch (...) {
    --last_epoch_;  // a refused step (OneCycleLR past total_steps) leaves the state unchanged
    throw;
  }
}

void LRScheduler::step(double /*metric*/) { step(); }

std::vector<double> LRScheduler::get_last_lr() const { return last_lrs_; }

StateDict LRScheduler::state_dict() const {
  StateDict state;
  state["last_epoch"] = last_epoch_;
  state["base_lrs"] = base_lrs_;
  return state;
}

void LRScheduler::load_state_dict(const StateDict& state) {
  const int64_t last_epoch = require_int(state, "last_epoch");
  std::vector<double> base_lrs = require_doubles(state, "base_lrs");
  check_group_count("base_lrs", base_lrs.size(), optimizer_.param_groups().size());
  FRUGAL_CHECK(last_epoch >= 0, "LRScheduler::load_state_dict: last_epoch must be >= 0, got ",
               last_epoch);
  const int64_t saved_epoch = last_epoch_;
  std::vector<double> saved_base = base_lrs_;
  last_epoch_ = last_epoch;
  base_lrs_ = std::move(base_lrs);
  try {
    apply(compute_lr());
  } catch (...) {  // e.g. a OneCycleLR state past this scheduler's total_steps
    last_epoch_ = saved_epoch;
    base_lrs_ = std::move(saved_base);
    throw;
  }
}

void LRScheduler::apply(const std::vector<double>& lrs) {
  auto& groups = optimizer_.param_groups();
  FRUGAL_CHECK(lrs.size() == groups.size(), "LRScheduler: the scheduler has ", lrs.size(),
               " learning rate(s) but the optimizer has ", groups.size(),
               " parameter group(s); was a group added after the scheduler was made?");
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(lrs[i]);
  last_lrs_ = lrs;
}

void LRScheduler::initialize() { apply(compute_lr()); }

// ---- StepLR ----

StepLR::StepLR(torch::optim::Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  FRUGAL_CHECK(step_size >= 1, "StepLR: step_size must be >= 1, got ", step_size);
  FRUGAL_CHECK(std::isfinite(gamma) && gamma > 0, "StepLR: gamma must be > 0, got ", gamma);
  initialize();
}

std::vector<double> StepLR::compute_lr() const {
  const double factor = std::pow(gamma_, static_cast<double>(last_epoch_ / step_size_));
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * factor);
  return lrs;
}

// ---- MultiStepLR ----

MultiStepLR::MultiStepLR(torch::optim::Optimizer& optimizer, std::vector<int64_t> milestones,
                         double gamma)
    : LRScheduler(optimizer), milestones_(std::move(milestones)), gamma_(gamma) {
  for (int64_t m : milestones_) {
    FRUGAL_CHECK(m >= 0, "MultiStepLR: milestones must be >= 0, got ", m);
  }
  FRUGAL_CHECK(std::isfinite(gamma) && gamma > 0, "MultiStepLR: gamma must be > 0, got ", gamma);
  // As PyTorch: any order, and a repeated milestone applies gamma once per repetition.
  std::sort(milestones_.begin(), milestones_.end());
  initialize();
}

std::vector<double> MultiStepLR::compute_lr() const {
  const auto passed =
      std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin();
  const double factor = std::pow(gamma_, static_cast<double>(passed));
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * factor);
  return lrs;
}

// ---- CosineAnnealingLR ----

CosineAnnealingLR::CosineAnnealingLR(torch::optim::Optimizer& optimizer, int64_t t_max,
                                     double eta_min)
    : LRScheduler(optimizer), t_max_(t_max), eta_min_(eta_min) {
  FRUGAL_CHECK(t_max >= 1, "CosineAnnealingLR: t_max must be >= 1, got ", t_max);
  FRUGAL_CHECK(std::isfinite(eta_min) && eta_min >= 0,
               "CosineAnnealingLR: eta_min must be >= 0, got ", eta_min);
  initialize();
}

std::vector<double> CosineAnnealingLR::compute_lr() const {
  const double cos_term =
      1.0 + std::cos(kPi * static_cast<double>(last_epoch_) / static_cast<double>(t_max_));
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(eta_min_ + (base - eta_min_) * cos_term / 2.0);
  return lrs;
}

// ---- LinearWarmupLR ----

LinearWarmupLR::LinearWarmupLR(torch::optim::Optimizer& optimizer, int64_t total_iters,
                               double start_factor, double end_factor)
    : LRScheduler(optimizer),
      total_iters_(total_iters),
      start_factor_(start_factor),
      end_factor_(end_factor) {
  FRUGAL_CHECK(total_iters >= 1, "LinearWarmupLR: total_iters must be >= 1, got ", total_iters);
  // PyTorch 1.13 allows [0, 1] for both; its chained form divides by zero for start_factor 0,
  // the closed form does not.
  FRUGAL_CHECK(start_factor >= 0 && start_factor <= 1,
               "LinearWarmupLR: start_factor must be in [0, 1], got ", start_factor);
  FRUGAL_CHECK(end_factor >= 0 && end_factor <= 1,
               "LinearWarmupLR: end_factor must be in [0, 1], got ", end_factor);
  initialize();
}

std::vector<double> LinearWarmupLR::compute_lr() const {
  const double t = static_cast<double>(std::min(last_epoch_, total_iters_));
  const double factor =
      start_factor_ + (end_factor_ - start_factor_) * t / static_cast<double>(total_iters_);
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * factor);
  return lrs;
}

// ---- OneCycleLR ----

OneCycleLR::OneCycleLR(torch::optim::Optimizer& optimizer, double max_lr, int64_t total_steps,
                       double pct_start, double div_factor, double final_div_factor)
    : LRScheduler(optimizer),
      max_lr_(max_lr),
      total_steps_(total_steps),
      pct_start_(pct_start),
      div_factor_(div_factor),
      final_div_factor_(final_div_factor) {
  FRUGAL_CHECK(std::isfinite(max_lr) && max_lr > 0, "OneCycleLR: max_lr must be > 0, got ", max_lr);
  FRUGAL_CHECK(total_steps >= 1, "OneCycleLR: total_steps must be >= 1, got ", total_steps);
  FRUGAL_CHECK(pct_start >= 0 && pct_start <= 1, "OneCycleLR: pct_start must be in [0, 1], got ",
               pct_start);
  FRUGAL_CHECK(std::isfinite(div_factor) && div_factor > 0,
               "OneCycleLR: div_factor must be > 0, got ", div_factor);
  FRUGAL_CHECK(std::isfinite(final_div_factor) && final_div_factor > 0,
               "OneCycleLR: final_div_factor must be > 0, got ", final_div_factor);
  // As PyTorch's group['initial_lr']: the schedule starts at max_lr / div_factor.
  base_lrs_.assign(base_lrs_.size(), max_lr_ / div_factor_);
  initialize();
}

std::vector<double> OneCycleLR::compute_lr() const {
  FRUGAL_CHECK(last_epoch_ <= total_steps_, "OneCycleLR: cannot step past total_steps (",
               total_steps_, "): this would be step ", last_epoch_,
               "; make total_steps at least the number of optimizer steps of the run");
  const double initial_lr = max_lr_ / div_factor_;
  const double min_lr = initial_lr / final_div_factor_;
  const double step = static_cast<double>(last_epoch_);
  // PyTorch's two phases: [0, up_end] up from initial_lr to max_lr, then down to min_lr at
  // total_steps - 1 (and, like PyTorch, a little past it on the last allowed step).
  const double up_end = pct_start_ * static_cast<double>(total_steps_) - 1.0;
  const double down_end = static_cast<double>(total_steps_) - 1.0;
  double start = 0, end = 0, from = 0, to = 0;
  if (step <= up_end) {
    start = 0.0, end = up_end, from = initial_lr, to = max_lr_;
  } else {
    start = up_end, end = down_end, from = max_lr_, to = min_lr;
  }
  // A phase of zero length (where PyTorch divides by zero) is at its end.
  const double pct = end > start ? (step - start) / (end - start) : 1.0;
  return std::vector<double>(base_lrs_.size(), anneal_cos(from, to, pct));
}

// ---- LambdaLR ----

LambdaLR::LambdaLR(torch::optim::Optimizer& optimizer, std::function<double(int64_t)> factor)
    : LRScheduler(optimizer), factor_(std::move(factor)) {
  FRUGAL_CHECK(static_cast<bool>(factor_),
               "LambdaLR: factor must be a callable, got an empty "
               "std::function");
  initialize();
}

std::vector<double> LambdaLR::compute_lr() const {
  const double factor = factor_(last_epoch_);
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * factor);
  return lrs;
}

// ---- ReduceLROnPlateau ----

ReduceLROnPlateau::ReduceLROnPlateau(torch::optim::Optimizer& optimizer,
                                     ReduceLROnPlateauOptions options)
    : LRScheduler(optimizer), options_(std::move(options)) {
  const auto& o = options_;
  FRUGAL_CHECK(o.mode() == "min" || o.mode() == "max",
               "ReduceLROnPlateau: mode must be \"min\" or \"max\", got \"", o.mode(), "\"");
  FRUGAL_CHECK(o.threshold_mode() == "rel" || o.threshold_mode() == "abs",
               "ReduceLROnPlateau: threshold_mode must be \"rel\" or \"abs\", got \"",
               o.threshold_mode(), "\"");
  FRUGAL_CHECK(o.factor() >= 0 && o.factor() < 1,
               "ReduceLROnPlateau: factor must be in [0, 1), got ", o.factor());
  FRUGAL_CHECK(o.patience() >= 0, "ReduceLROnPlateau: patience must be >= 0, got ", o.patience());
  FRUGAL_CHECK(o.cooldown() >= 0, "ReduceLROnPlateau: cooldown must be >= 0, got ", o.cooldown());
  FRUGAL_CHECK(o.threshold() >= 0, "ReduceLROnPlateau: threshold must be >= 0, got ",
               o.threshold());
  FRUGAL_CHECK(o.min_lr() >= 0, "ReduceLROnPlateau: min_lr must be >= 0, got ", o.min_lr());
  FRUGAL_CHECK(o.eps() >= 0, "ReduceLROnPlateau: eps must be >= 0, got ", o.eps());
  best_ = o.mode() == "min" ? std::numeric_limits<double>::infinity()
                            : -std::numeric_limits<double>::infinity();
  current_lrs_ = base_lrs_;
  initialize();
}

void ReduceLROnPlateau::step() {
  FRUGAL_CHECK(false,
               "ReduceLROnPlateau: step() needs the monitored metric; call step(metric) (in a "
               "Task, set OptimizerConfig.monitor, e.g. \"val/loss\")");
}

bool ReduceLROnPlateau::is_better(double value) const {
  const double t = options_.threshold();
  if (options_.mode() == "min") {
    return options_.threshold_mode() == "rel" ? value < best_ * (1.0 - t) : value < best_ - t;
  }
  return options_.threshold_mode() == "rel" ? value > best_ * (1.0 + t) : value > best_ + t;
}

void ReduceLROnPlateau::step(double metric) {
  ++last_epoch_;
  if (is_better(metric)) {  // NaN is never better: it counts as a bad epoch, as in PyTorch
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    ++num_bad_epochs_;
  }
  if (cooldown_counter_ > 0) {
    --cooldown_counter_;
    num_bad_epochs_ = 0;  // bad epochs during cooldown do not count
  }
  // Like PyTorch, reduce from the optimizer's current LR, whoever set it.
  std::vector<double> lrs = read_lrs(optimizer_);
  if (num_bad_epochs_ > options_.patience()) {
    for (double& lr : lrs) {
      const double reduced = std::max(lr * options_.factor(), options_.min_lr());
      if (lr - reduced > options_.eps()) lr = reduced;
    }
    cooldown_counter_ = options_.cooldown();
    num_bad_epochs_ = 0;
  }
  current_lrs_ = lrs;
  apply(current_lrs_);
}

std::vector<double> ReduceLROnPlateau::compute_lr() const { return current_lrs_; }

StateDict ReduceLROnPlateau::state_dict() const {
  StateDict state = LRScheduler::state_dict();
  state["best"] = best_;
  state["num_bad_epochs"] = num_bad_epochs_;
  state["cooldown_counter"] = cooldown_counter_;
  state["current_lrs"] = current_lrs_;
  return state;
}

void ReduceLROnPlateau::load_state_dict(const StateDict& state) {
  // Read everything first so that a bad state changes nothing.
  const double best = require_double(state, "best");
  const int64_t num_bad_epochs = require_int(state, "num_bad_epochs");
  const int64_t cooldown_counter = require_int(state, "cooldown_counter");
  std::vector<double> current_lrs = require_doubles(state, "current_lrs");
  check_group_count("current_lrs", current_lrs.size(), optimizer_.param_groups().size());
  std::vector<double> saved = std::move(current_lrs_);
  current_lrs_ = std::move(current_lrs);
  try {
    LRScheduler::load_state_dict(state);  // applies compute_lr(), i.e. current_lrs_
  } catch (...) {
    current_lrs_ = std::move(saved);
    throw;
  }
  best_ = best;
  num_bad_epochs_ = num_bad_epochs;
  cooldown_counter_ = cooldown_counter;
}

// ---- SequentialLR ----

SequentialLR::SequentialLR(torch::optim::Optimizer& optimizer,
                           std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones)
    : LRScheduler(optimizer),
      schedulers_(std::move(schedulers)),
      milestones_(std::move(milestones)) {
  FRUGAL_CHECK(!schedulers_.empty(), "SequentialLR: schedulers must not be empty");
  FRUGAL_CHECK(milestones_.size() == schedulers_.size() - 1,
               "SequentialLR: needs one milestone fewer than schedulers, got ", schedulers_.size(),
               " scheduler(s) and ", milestones_.size(), " milestone(s)");
  for (size_t i = 0; i < schedulers_.size(); ++i) {
    FRUGAL_CHECK(schedulers_[i] != nullptr, "SequentialLR: scheduler ", i, " is null");
    FRUGAL_CHECK(&schedulers_[i]->optimizer_ == &optimizer_, "SequentialLR: scheduler ", i,
                 " belongs to a different optimizer");
    FRUGAL_CHECK(!schedulers_[i]->needs_metric(), "SequentialLR: scheduler ", i,
                 " needs a metric (ReduceLROnPlateau); only closed-form schedulers can be chained");
  }
  for (size_t i = 0; i < milestones_.size(); ++i) {
    const int64_t previous = i == 0 ? 0 : milestones_[i - 1];
    FRUGAL_CHECK(milestones_[i] > previous,
                 "SequentialLR: milestones must be >= 1 and strictly increasing, got ",
                 milestones_[i], " at index ", i);
  }
  // As PyTorch (every part starts from group['initial_lr']): all parts share the base LRs of the
  // first, which was made before the others changed the optimizer's LR.
  base_lrs_ = schedulers_.front()->base_lrs_;
  initialize();
}

std::vector<double> SequentialLR::compute_lr() const {
  const auto idx = static_cast<size_t>(
      std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin());
  LRScheduler& part = *schedulers_[idx];
  // The part follows our base LRs (restored ones too) and keeps its step count in step with ours.
  part.base_lrs_ = base_lrs_;
  part.last_epoch_ = idx == 0 ? last_epoch_ : last_epoch_ - milestones_[idx - 1];
  std::vector<double> lrs = part.compute_lr();
  part.last_lrs_ = lrs;
  return lrs;
}

}  // namespace frugal

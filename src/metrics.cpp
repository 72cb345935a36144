#include "frugal/metrics.h"

#include <torch/torch.h>

#include "frugal/error.h"

namespace frugal {

const char* to_string(Stage stage) {
  switch (stage) {
    case Stage::kTrain:
      return "train";
    case Stage::kValidate:
      return "validate";
    case Stage::kTest:
      return "test";
  }
  return "?";
}

Metrics::Metrics() = default;
Metrics::~Metrics() = default;

void Metrics::set_context(Stage stage, int64_t batch_size) {
  stage_ = stage;
  batch_size_ = batch_size > 0 ? batch_size : 1;
}

void Metrics::log(const std::string& name, const at::Tensor& value, const LogOptions& options) {
  FRUGAL_CHECK(!name.empty(), "log: the metric name must not be empty");
  FRUGAL_CHECK(value.defined(), "log(\"", name, "\"): the value is an undefined tensor");
  FRUGAL_CHECK(value.numel() == 1, "log(\"", name,
               "\"): expected a scalar (one element), got shape ", value.sizes());
  // Note [Metrics stay on device]: a logged value is kept as a detached 0-dim tensor on its own
  // device and in its own dtype; the epoch accumulator, in double, is updated with one small
  // device op (add/maximum/minimum promote the value to double). Host copies happen only in
  // get()/callback_metrics()/take_*(), i.e. when someone needs the number, and read it as a
  // double. Each operator here is a dispatcher call per step (a few microseconds on LibTorch 2.x):
  // none is made that would change nothing, and no value is converted that is only stored.
  at::NoGradGuard no_grad;
  at::Tensor v = value.requires_grad() ? value.detach() : value;
  if (v.dim() != 0) v = v.reshape({});
  const bool training = stage_ == Stage::kTrain;
  const bool on_step = options.on_step().value_or(training);
  const bool on_epoch = options.on_epoch().value_or(!training);
  FRUGAL_CHECK(on_step || on_epoch, "log(\"", name,
               "\"): on_step and on_epoch are both false, so the value would go nowhere");
  if (on_step) {
    const std::string step_name = on_epoch ? name + "_step" : name;
    callback_[step_name] = v;
    if (options.logger()) pending_step_[step_name] = v;
    if (options.prog_bar()) progress_[step_name] = v;
  }
  if (on_epoch) {
    const int64_t weight = options.batch_size() > 0 ? options.batch_size() : batch_size_;
    auto it = accumulators_.find(name);
    if (it == accumulators_.end() || it->second.stage != stage_ || it->second.weight == 0) {
      Accumulator acc;
      acc.options = options;
      acc.stage = stage_;
      acc.epoch_name = on_step ? name + "_epoch" : name;
      acc.also_plain = on_step;
      const at::Tensor as_double = v.scalar_type() == at::kDouble ? v : v.to(at::kDouble);
      acc.value =
          options.reduce() == Reduce::kMean ? as_double * static_cast<double>(weight) : as_double;
      acc.weight = weight;
      accumulators_[name] = std::move(acc);
      return;
    }
    Accumulator& acc = it->second;
    switch (options.reduce()) {
      case Reduce::kMean:
        // Out of place (snapshots share the old tensor), one op: value + weight * v.
        acc.value = at::add(acc.value, v, static_cast<double>(weight));
        break;
      case Reduce::kSum:
        // The plain sum of the logged values, as Lightning's reduce_fx="sum" (not weighted by the
        // batch size: a logged count adds up to the epoch's count; tests/conformance checks it).
        acc.value = at::add(acc.value, v);
        break;
      case Reduce::kMax:
        acc.value = at::maximum(acc.value, v);
        break;
      case Reduce::kMin:
        acc.value = at::minimum(acc.value, v);
        break;
    }
    acc.weight += weight;
  }
}

Metrics::Snapshot Metrics::snapshot() const {
  return Snapshot{callback_, progress_, pending_step_, pending_epoch_, accumulators_};
}

void Metrics::rollback(const Snapshot& snapshot) {
  callback_ = snapshot.callback;
  progress_ = snapshot.progress;
  pending_step_ = snapshot.pending_step;
  pending_epoch_ = snapshot.pending_epoch;
  accumulators_ = snapshot.accumulators;
}

void Metrics::log(const std::string& name, double value, const LogOptions& options) {
  log(name, at::scalar_tensor(value, at::kDouble), options);
}

std::optional<double> Metrics::get(const std::string& name) const {
  auto it = callback_.find(name);
  if (it == callback_.end()) return std::nullopt;
  return it->second.item<double>();
}

bool Metrics::contains(const std::string& name) const { return callback_.count(name) > 0; }

namespace {
std::map<std::string, double> to_host(const std::map<std::string, at::Tensor>& values) {
  std::map<std::string, double> out;
  for (const auto& [name, value] : values) out[name] = value.item<double>();
  return out;
}
}  // namespace

std::map<std::string, double> Metrics::callback_metrics() const { return to_host(callback_); }

std::vector<std::string> Metrics::names() const {
  std::vector<std::string> out;
  for (const auto& kv : callback_) out.push_back(kv.first);
  return out;
}

std::map<std::string, double> Metrics::progress_bar_metrics() const { return to_host(progress_); }

void Metrics::begin_epoch(Stage stage) {
  for (auto it = accumulators_.begin(); it != accumulators_.end();) {
    it = it->second.stage == stage ? accumulators_.erase(it) : std::next(it);
  }
}

std::vector<std::string> Metrics::end_epoch(
    Stage stage, const std::function<void(std::vector<at::Tensor>&)>& reduce_across_ranks) {
  at::NoGradGuard no_grad;
  std::vector<std::string> produced;
  for (auto it = accumulators_.begin(); it != accumulators_.end();) {
    Accumulator& acc = it->second;
    if (acc.stage != stage) {
      ++it;
      continue;
    }
    at::Tensor value = acc.value;
    if (reduce_across_ranks && acc.options.sync_dist()) {
      std::vector<at::Tensor> pair{
          at::stack({value, at::scalar_tensor(static_cast<double>(acc.weight), value.options())})};
      reduce_across_ranks(pair);
      value = pair[0][0];
      if (acc.options.reduce() == Reduce::kMean) value = value / pair[0][1];
    } else if (acc.options.reduce() == Reduce::kMean) {
      value = value / static_cast<double>(acc.weight);
    }
    callback_[acc.epoch_name] = value;
    produced.push_back(acc.epoch_name);
    if (acc.also_plain) callback_[it->first] = value;
    if (acc.options.logger()) pending_epoch_[acc.epoch_name] = value;
    if (acc.options.prog_bar()) progress_[acc.epoch_name] = value;
    it = accumulators_.erase(it);
  }
  return produced;
}

std::map<std::string, double> Metrics::take_step_metrics() {
  auto out = to_host(pending_step_);
  pending_step_.clear();
  return out;
}

std::map<std::string, double> Metrics::take_epoch_metrics() {
  auto out = to_host(pending_epoch_);
  pending_epoch_.clear();
  return out;
}

void Metrics::reset() {
  callback_.clear();
  progress_.clear();
  pending_step_.clear();
  pending_epoch_.clear();
  accumulators_.clear();
}

namespace {
c10::IValue tensor_map(const std::map<std::string, at::Tensor>& values) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [k, v] : values) d.insert(k, v.to(at::kCPU));
  return d;
}
std::map<std::string, at::Tensor> tensor_map(const c10::IValue& value, c10::Device device) {
  std::map<std::string, at::Tensor> out;
  for (const auto& e : value.toGenericDict()) {
    out[e.key().toStringRef()] = e.value().toTensor().to(device);
  }
  return out;
}
}  // namespace

std::map<std::string, c10::IValue> Metrics::state_dict() const {
  c10::impl::GenericDict accs(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [name, acc] : accumulators_) {
    c10::impl::GenericDict a(c10::StringType::get(), c10::AnyType::get());
    a.insert("value", acc.value.to(at::kCPU));
    a.insert("device", acc.value.device().str());
    a.insert("weight", acc.weight);
    a.insert("stage", static_cast<int64_t>(acc.stage));
    a.insert("epoch_name", acc.epoch_name);
    a.insert("also_plain", acc.also_plain);
    a.insert("on_step", acc.options.on_step().value_or(false));
    a.insert("prog_bar", acc.options.prog_bar());
    a.insert("logger", acc.options.logger());
    a.insert("reduce", static_cast<int64_t>(acc.options.reduce()));
    a.insert("sync_dist", acc.options.sync_dist());
    accs.insert(name, a);
  }
  return {{"accumulators", accs},
          {"callback", tensor_map(callback_)},
          {"progress", tensor_map(progress_)}};
}

void Metrics::load_state_dict(const std::map<std::string, c10::IValue>& state) {
  FRUGAL_CHECK(state.count("accumulators") && state.count("callback") && state.count("progress"),
               "metrics state is incomplete (needs accumulators, callback, progress)");
  reset();
  for (const auto& e : state.at("accumulators").toGenericDict()) {
    auto a = e.value().toGenericDict();
    Accumulator acc;
    const c10::Device device(a.at("device").toStringRef());
    acc.value = a.at("value").toTensor().to(device);
    acc.weight = a.at("weight").toInt();
    acc.stage = static_cast<Stage>(a.at("stage").toInt());
    acc.epoch_name = a.at("epoch_name").toStringRef();
    acc.also_plain = a.at("also_plain").toBool();
    acc.options.on_step(a.at("on_step").toBool())
        .on_epoch(true)
        .prog_bar(a.at("prog_bar").toBool())
        .logger(a.at("logger").toBool())
        .reduce(static_cast<Reduce>(a.at("reduce").toInt()))
        .sync_dist(a.at("sync_dist").toBool());
    accumulators_[e.key().toStringRef()] = std::move(acc);
  }
  const c10::Device here =
      accumulators_.empty() ? c10::Device(c10::kCPU) : accumulators_.begin()->second.value.device();
  callback_ = tensor_map(state.at("callback"), here);
  progress_ = tensor_map(state.at("progress"), here);
}

}  // namespace frugal

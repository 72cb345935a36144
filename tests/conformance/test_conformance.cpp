// Conformance with PyTorch Lightning: every scenario of scenarios.json runs through Lightning
// (lightning_driver.py, in the test's own run) and through frugal's Trainer, and the two records
// must agree: stop epoch, global step and reason, hook counts, validation points, checkpoint file
// names, best path/score, LR at every step, metrics.csv rows, hparams.yaml, version folders.
// A scenario may list paths where frugal differs on purpose ("frugal_differs", each naming the
// Lightning issue; docs/lightning_differences.md): there the records must differ, everything else
// must match. Without Lightning importable the tests are skipped, saying why.
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kDir = FRUGAL_CONFORMANCE_DIR;
const std::string kPython = FRUGAL_CONFORMANCE_PYTHON;

json read_json(const std::string& path) { return json::parse(frugal::testing::read_text(path)); }

const json& scenarios() {
  static const json s = read_json(kDir + "/scenarios.json")["scenarios"];
  return s;
}

std::vector<std::string> scenario_names() {
  std::vector<std::string> names;
  for (const auto& s : scenarios()) names.push_back(s["name"].get<std::string>());
  return names;
}

/// Lightning's record of every scenario, made once per test program; `why` says why not.
struct Oracle {
  json record;
  std::string why;
};

const Oracle& oracle() {
  static const Oracle o = [] {
    Oracle out;
    if (!fs::exists(kPython)) {
      out.why = "no Python at " + kPython +
                " (make .deps/venv with pytorch-lightning==2.6.6: scripts/python-requirements.txt)";
      return out;
    }
    const std::string dir = frugal::testing::temp_dir("conformance_lightning");
    const std::string args = frugal::testing::shell_quote(kDir + "/lightning_driver.py") + " " +
                             frugal::testing::shell_quote(kDir + "/scenarios.json") + " " +
                             frugal::testing::shell_quote(dir + "/lightning.json") + " " +
                             frugal::testing::shell_quote(dir + "/work");
    const auto run = frugal::testing::run_program(kPython, args, dir, "driver");
    if (run.exit_code == 3) {
      out.why = "pytorch-lightning is not importable by " + kPython + ": " + run.err;
      return out;
    }
    if (run.exit_code != 0) {
      out.why = "FAILED: lightning_driver.py: " + run.describe();
      return out;
    }
    out.record = read_json(dir + "/lightning.json");
    return out;
  }();
  return o;
}

// ---------------------------------------------------------------------------------------------
// frugal's side of a scenario

double number(const json& v) {
  if (v.is_string()) return std::stod(v.get<std::string>());  // "nan", "inf", "-inf"
  return v.get<double>();
}

json to_json_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

frugal::BatchLimit limit(const json& v) {
  if (v.is_number_integer()) return frugal::BatchLimit(v.get<int64_t>());
  return frugal::BatchLimit(v.get<double>());
}

struct ScriptedTask : frugal::Task {
  explicit ScriptedTask(const json& spec) : spec(spec) {
    torch::manual_seed(0);
    net = torch::nn::Linear(4, 1);
  }
  torch::nn::Module& module() override { return *net; }
  at::Tensor training_step(const frugal::Batch& b, frugal::StepContext& ctx) override {
    const at::Tensor loss = net->forward(b.data).pow(2).mean();
    last_raw_loss = loss.detach();
    const int64_t epoch = ctx.trainer().state().epoch;
    if (ctx.batch_idx() == 0 && spec.contains("train_metrics")) {
      for (const auto& [name, seq] : spec["train_metrics"].items()) {
        ctx.log(name, scripted(seq, epoch), frugal::LogOptions().on_step(false).on_epoch(true));
      }
    }
    if (spec.value("step_metric", false)) {
      const double value = static_cast<double>(epoch * 100 + ctx.batch_idx());
      ctx.log("m", value, frugal::LogOptions().on_step(true).on_epoch(true));
      ctx.log("s", value / 4.0);
      ctx.log("n", value,
              frugal::LogOptions().on_step(false).on_epoch(true).reduce(frugal::Reduce::kSum));
    }
    return loss;
  }
  void validation_step(const frugal::Batch&, frugal::StepContext& ctx) override {
    if (ctx.trainer().state().sanity_checking || ctx.batch_idx() != 0) return;
    const int64_t index = val_runs++;
    if (!spec.contains("val_metrics")) return;
    for (const auto& [name, seq] : spec["val_metrics"].items()) {
      ctx.log(name, scripted(seq, index), frugal::LogOptions().on_step(false).on_epoch(true));
    }
  }
  frugal::OptimizerConfig configure_optimizers() override {
    frugal::OptimizerFactory sgd = frugal::SGD(spec.value("lr", 0.1));
    if (!spec.contains("scheduler")) return sgd(*net);
    const json sch = spec["scheduler"];
    const std::string type = sch["type"];
    auto make = [sch, type](torch::optim::Optimizer& opt) -> std::shared_ptr<frugal::LRScheduler> {
      if (type == "StepLR") {
        return std::make_shared<frugal::StepLR>(opt, sch["step_size"], sch.value("gamma", 0.1));
      }
      if (type == "MultiStepLR") {
        return std::make_shared<frugal::MultiStepLR>(
            opt, sch["milestones"].get<std::vector<int64_t>>(), sch.value("gamma", 0.1));
      }
      if (type == "CosineAnnealingLR") {
        return std::make_shared<frugal::CosineAnnealingLR>(opt, sch["t_max"],
                                                           sch.value("eta_min", 0.0));
      }
      if (type == "LinearWarmupLR") {
        return std::make_shared<frugal::LinearWarmupLR>(opt, sch["total_iters"],
                                                        sch["start_factor"].get<double>(),
                                                        sch.value("end_factor", 1.0));
      }
      if (type == "OneCycleLR") {
        return std::make_shared<frugal::OneCycleLR>(
            opt, sch["max_lr"].get<double>(), sch["total_steps"], sch.value("pct_start", 0.3),
            sch.value("div_factor", 25.0), sch.value("final_div_factor", 1e4));
      }
      if (type == "ReduceLROnPlateau") {
        return std::make_shared<frugal::ReduceLROnPlateau>(
            opt, frugal::ReduceLROnPlateauOptions()
                     .mode(sch.value("mode", "min"))
                     .factor(sch.value("factor", 0.1))
                     .patience(sch.value("patience", 10))
                     .threshold(sch.value("threshold", 1e-4))
                     .cooldown(sch.value("cooldown", 0))
                     .min_lr(sch.value("min_lr", 0.0)));
      }
      throw std::runtime_error("unknown scheduler " + type);
    };
    frugal::OptimizerConfig config =
        frugal::with_scheduler(sgd, make,
                               sch.value("interval", "epoch") == "step" ? frugal::Interval::kStep
                                                                        : frugal::Interval::kEpoch,
                               sch.value("monitor", ""))(*net);
    config.frequency = sch.value("frequency", 1);
    return config;
  }
  std::map<std::string, std::string> hparams() const override {
    std::map<std::string, std::string> out;
    if (spec.contains("hparams")) {
      for (const auto& [k, v] : spec["hparams"].items()) {
        out[k] = v.is_string() ? v.get<std::string>() : v.dump();
      }
    }
    return out;
  }
  static double scripted(const json& seq, int64_t index) {
    return number(seq[std::min<size_t>(static_cast<size_t>(index), seq.size() - 1)]);
  }

  json spec;
  torch::nn::Linear net{nullptr};
  int64_t val_runs = 0;
  at::Tensor last_raw_loss;
};

struct Recorder : frugal::Callback {
  std::map<std::string, int64_t> hooks{{"train_epoch_start", 0}, {"train_epoch_end", 0},
                                       {"train_batch_start", 0}, {"val_runs", 0},
                                       {"val_batches", 0},       {"sanity_val_batches", 0},
                                       {"optimizer_steps", 0},   {"backward", 0}};
  std::vector<int64_t> epoch_end_steps;
  std::vector<std::vector<int64_t>> val_points;
  std::vector<double> lrs;
  std::vector<double> backward_scale;

  std::string state_key() const override { return "ConformanceRecorder"; }
  void on_train_epoch_start(frugal::Trainer&, frugal::Task&) override {
    ++hooks["train_epoch_start"];
  }
  void on_train_epoch_end(frugal::Trainer& t, frugal::Task&) override {
    ++hooks["train_epoch_end"];
    epoch_end_steps.push_back(t.state().global_step);
  }
  void on_train_batch_start(frugal::Trainer&, frugal::Task&, const frugal::Batch&,
                            int64_t) override {
    ++hooks["train_batch_start"];
  }
  void on_validation_start(frugal::Trainer& t, frugal::Task&) override {
    if (!t.state().sanity_checking) ++hooks["val_runs"];
  }
  void on_validation_end(frugal::Trainer& t, frugal::Task&) override {
    if (!t.state().sanity_checking) val_points.push_back({t.state().epoch, t.state().global_step});
  }
  void on_validation_batch_start(frugal::Trainer& t, frugal::Task&, const frugal::Batch&,
                                 int64_t) override {
    ++hooks[t.state().sanity_checking ? "sanity_val_batches" : "val_batches"];
  }
  void on_before_backward(frugal::Trainer&, frugal::Task& task, const at::Tensor& loss) override {
    ++hooks["backward"];
    // What backward runs on, over the step's loss: 1/k inside accumulation windows.
    const double scale =
        (loss.detach() / dynamic_cast<ScriptedTask&>(task).last_raw_loss).item<double>();
    backward_scale.push_back(std::round(scale * 1e6) / 1e6);
  }
  void on_before_optimizer_step(frugal::Trainer&, frugal::Task&,
                                torch::optim::Optimizer& opt) override {
    ++hooks["optimizer_steps"];
    lrs.push_back(opt.param_groups()[0].options().get_lr());
  }
};

std::string es_reason(const std::string& reason) {
  if (reason.empty()) return "NOT_STOPPED";
  if (reason.find("is not finite") != std::string::npos) return "NON_FINITE_METRIC";
  if (reason.rfind("Stopping threshold", 0) == 0) return "STOPPING_THRESHOLD";
  if (reason.rfind("Divergence threshold", 0) == 0) return "DIVERGENCE_THRESHOLD";
  return "PATIENCE_EXHAUSTED";
}

std::vector<std::string> rel_files(const std::string& root) {
  std::vector<std::string> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file() || e.is_symlink()) {
      out.push_back(fs::relative(e.path(), root).string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

json read_metrics_csv(const std::string& path, json& columns) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> header = split_csv_line(line);
  std::vector<std::string> sorted = header;
  std::sort(sorted.begin(), sorted.end());
  columns = sorted;
  json rows = json::array();
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto cells = split_csv_line(line);
    json row = json::object();
    for (size_t i = 0; i < header.size(); ++i) row[header[i]] = i < cells.size() ? cells[i] : "";
    rows.push_back(row);
  }
  return rows;
}

/// Each column's non-empty values in row order, the step column left out: what the rows say
/// apart from when and how they were grouped.
json column_values(const json& rows) {
  json out = json::object();
  for (const auto& row : rows) {
    for (const auto& [column, value] : row.items()) {
      if (column == "step") continue;
      if (!out.contains(column)) out[column] = json::array();
      if (!(value.is_string() && value.get<std::string>().empty())) out[column].push_back(value);
    }
  }
  return out;
}

json read_yaml_map(const std::string& path) {
  if (!fs::exists(path)) return nullptr;
  json out = json::object();
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(": ");
    if (colon == std::string::npos || line[0] == ' ') continue;
    std::string value = line.substr(colon + 2);
    if (value.size() >= 2 && (value.front() == '\'' || value.front() == '"')) {
      value = value.substr(1, value.size() - 2);
    }
    out[line.substr(0, colon)] = value;
  }
  return out;
}

json run_once(const json& spec, const std::string& root) {
  const json t = spec.value("trainer", json::object());
  frugal::TrainerOptions o = frugal::testing::quiet_options(root);
  o.max_epochs(t.value("max_epochs", -1)).max_steps(t.value("max_steps", -1));
  o.min_epochs(t.value("min_epochs", 0)).min_steps(t.value("min_steps", 0));
  if (t.contains("limit_train_batches")) o.limit_train_batches(limit(t["limit_train_batches"]));
  if (t.contains("limit_val_batches")) o.limit_val_batches(limit(t["limit_val_batches"]));
  if (t.contains("val_check_interval")) o.val_check_interval(limit(t["val_check_interval"]));
  if (t.contains("check_val_every_n_epoch")) {
    o.check_val_every_n_epoch(
        t["check_val_every_n_epoch"].is_null() ? 0 : t["check_val_every_n_epoch"].get<int64_t>());
  }
  o.num_sanity_val_steps(t.value("num_sanity_val_steps", 2));
  o.accumulate_grad_batches(t.value("accumulate_grad_batches", 1));
  o.log_every_n_steps(t.value("log_every_n_steps", 50));

  auto rec = std::make_shared<Recorder>();
  std::vector<std::shared_ptr<frugal::Callback>> callbacks{rec};
  std::shared_ptr<frugal::EarlyStopping> es;
  std::shared_ptr<frugal::ModelCheckpoint> mc;
  if (spec.contains("early_stopping")) {
    const json e = spec["early_stopping"];
    frugal::EarlyStoppingOptions eo(e["monitor"].get<std::string>());
    eo.patience(e.value("patience", 3)).min_delta(e.value("min_delta", 0.0));
    eo.mode(e.value("mode", "min")).check_finite(e.value("check_finite", true)).verbose(false);
    if (e.contains("stopping_threshold")) eo.stopping_threshold(number(e["stopping_threshold"]));
    if (e.contains("divergence_threshold")) {
      eo.divergence_threshold(number(e["divergence_threshold"]));
    }
    if (e.contains("check_on_train_epoch_end")) {
      eo.check_on_train_epoch_end(e["check_on_train_epoch_end"].get<bool>());
    }
    es = std::make_shared<frugal::EarlyStopping>(eo);
    callbacks.push_back(es);
  }
  if (spec.contains("checkpoint")) {
    const json c = spec["checkpoint"];
    frugal::ModelCheckpointOptions mo;
    mo.dirpath(root + "/ckpt");
    if (c.contains("filename")) mo.filename(c["filename"]);
    mo.monitor(c.value("monitor", "")).mode(c.value("mode", "min"));
    mo.save_top_k(c.value("save_top_k", 1)).save_last(c.value("save_last", false));
    mo.every_n_train_steps(c.value("every_n_train_steps", 0));
    mo.every_n_epochs(c.value("every_n_epochs", 0));
    mo.auto_insert_metric_name(c.value("auto_insert_metric_name", true));
    mo.enable_version_counter(c.value("enable_version_counter", true));
    mc = std::make_shared<frugal::ModelCheckpoint>(mo);
    callbacks.push_back(mc);
  }
  std::vector<std::shared_ptr<frugal::Logger>> loggers;
  if (spec.value("logger", false)) {
    loggers.push_back(
        std::make_shared<frugal::CSVLogger>(frugal::CSVLoggerOptions(root).name("logs")));
  }
  frugal::Trainer trainer(o, callbacks, loggers);
  ScriptedTask task(spec);
  auto make = [](int64_t n, int64_t batch_size, uint64_t seed) {
    torch::manual_seed(seed);
    return std::make_shared<frugal::TensorLoader>(torch::randn({n, 4}),
                                                  torch::zeros({n}, torch::kLong),
                                                  frugal::TensorLoaderOptions(batch_size));
  };
  auto train = make(spec["train_samples"], spec["batch_size"], 1);
  std::shared_ptr<frugal::TensorLoader> val;
  if (spec.value("val_samples", 0) > 0) {
    val = make(spec["val_samples"], spec.value("val_batch_size", spec["batch_size"].get<int>()), 2);
  }
  trainer.fit(task, train, val);

  json out;
  out["final"] = {{"epoch", trainer.state().epoch}, {"global_step", trainer.state().global_step}};
  out["hooks"] = rec->hooks;
  out["epoch_end_steps"] = rec->epoch_end_steps;
  out["val_points"] = rec->val_points;
  if (spec.contains("scheduler")) out["lrs"] = rec->lrs;
  if (t.value("accumulate_grad_batches", 1) > 1) out["backward_scale"] = rec->backward_scale;
  if (es) {
    const bool stopped = !es->stopping_reason().empty();
    out["early_stopping"] = {{"stopped", stopped},
                             {"stopped_epoch", stopped ? json(es->stopped_epoch()) : json()},
                             {"reason", es_reason(es->stopping_reason())},
                             {"wait_count", es->wait_count()},
                             {"best_score", to_json_number(es->best_score())}};
  }
  if (mc) {
    const std::string d = root + "/ckpt";
    auto rel = [&](const std::string& p) {
      return p.empty() ? std::string() : fs::relative(p, d).string();
    };
    out["checkpoint"] = {{"files", rel_files(d)},
                         {"best", rel(mc->best_model_path())},
                         {"best_score", mc->best_model_path().empty() || !mc->best_model_score()
                                            ? json()
                                            : to_json_number(*mc->best_model_score())},
                         {"last", rel(mc->last_model_path())}};
  }
  return out;
}

json run_frugal(const json& spec, const std::string& root) {
  json out = run_once(spec, root);
  if (spec.value("logger", false)) {
    run_once(spec, root);  // a second fit: the next version_N
    const std::string logs = root + "/logs";
    json versions = json::array();
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(logs)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    json columns;
    json rows = read_metrics_csv(logs + "/version_0/metrics.csv", columns);
    // frugal writes the Trainer's options beside the task's hparams (docs/logging.md): those
    // are compared apart, as "hparams_trainer_options".
    json hparams = read_yaml_map(logs + "/version_0/hparams.yaml");
    json task_hparams = json::object(), trainer_options = json::object();
    const auto option_names = frugal::TrainerOptions().to_map();
    for (const auto& [k, v] : hparams.items()) {
      const bool from_task = spec.contains("hparams") && spec["hparams"].contains(k);
      (option_names.count(k) && !from_task ? trainer_options : task_hparams)[k] = v;
    }
    out["logger"] = {{"versions", names},
                     {"columns", columns},
                     {"rows", rows},
                     {"hparams", task_hparams.empty() ? json() : task_hparams},
                     {"hparams_trainer_options", trainer_options.size()}};
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// comparison

bool as_number(const json& v, double& out) {
  if (v.is_number()) {
    out = v.get<double>();
    return true;
  }
  if (!v.is_string()) return false;
  const std::string s = v.get<std::string>();
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

/// Appends "path: lightning X, frugal Y" for every difference.
void compare(const json& want, const json& got, const std::string& path,
             std::vector<std::pair<std::string, std::string>>& diffs) {
  double a = 0, b = 0;
  if (as_number(want, a) && as_number(got, b)) {
    const bool same = (std::isnan(a) && std::isnan(b)) || a == b ||
                      std::fabs(a - b) <= 1e-6 * std::max(1.0, std::fabs(a));
    if (!same) diffs.push_back({path, "lightning " + want.dump() + ", frugal " + got.dump()});
    return;
  }
  if (want.is_object() && got.is_object()) {
    std::set<std::string> keys;
    for (const auto& [k, v] : want.items()) keys.insert(k);
    for (const auto& [k, v] : got.items()) keys.insert(k);
    for (const auto& k : keys) {
      if (!want.contains(k)) {
        diffs.push_back({path + "/" + k, "only frugal has it: " + got[k].dump()});
      } else if (!got.contains(k)) {
        diffs.push_back({path + "/" + k, "only lightning has it: " + want[k].dump()});
      } else {
        compare(want[k], got[k], path + "/" + k, diffs);
      }
    }
    return;
  }
  if (want.is_array() && got.is_array() && want.size() == got.size()) {
    for (size_t i = 0; i < want.size(); ++i) {
      compare(want[i], got[i], path + "/" + std::to_string(i), diffs);
    }
    return;
  }
  if (want != got) diffs.push_back({path, "lightning " + want.dump() + ", frugal " + got.dump()});
}

class Conformance : public ::testing::TestWithParam<std::string> {};

TEST_P(Conformance, FrugalDoesWhatLightningDoes) {
  const Oracle& o = oracle();
  if (!o.why.empty()) {
    if (o.why.rfind("FAILED", 0) == 0) FAIL() << o.why;
    GTEST_SKIP() << o.why;
  }
  const std::string name = GetParam();
  json spec;
  for (const auto& s : scenarios()) {
    if (s["name"] == name) spec = s;
  }
  const json& want = o.record["scenarios"][name];
  ASSERT_FALSE(want.contains("error")) << "Lightning failed on " << name << ": " << want.dump();
  const std::string root = frugal::testing::temp_dir("conformance_" + name);
  json got;
  try {
    got = run_frugal(spec, root);
  } catch (const std::exception& e) {
    FAIL() << "frugal failed on " << name << ": " << e.what();
  }
  std::vector<std::pair<std::string, std::string>> diffs;
  compare(want, got, "", diffs);
  // The rows may differ on purpose (the step column, Lightning #13163, and how rows are grouped),
  // but never the values: each column's non-empty values, in order, must be Lightning's.
  if (want.contains("logger") && got.contains("logger")) {
    compare(column_values(want["logger"]["rows"]), column_values(got["logger"]["rows"]),
            "/logger/values", diffs);
  }
  const json allowed = spec.value("frugal_differs", json::object());
  std::set<std::string> seen;
  for (const auto& [path, what] : diffs) {
    bool deliberate = false;
    for (const auto& [prefix, why] : allowed.items()) {
      if (path.rfind(prefix, 0) == 0) {
        deliberate = true;
        seen.insert(prefix);
      }
    }
    if (!deliberate) ADD_FAILURE() << name << ": " << path << ": " << what;
  }
  for (const auto& [prefix, why] : allowed.items()) {
    EXPECT_TRUE(seen.count(prefix))
        << name << ": the deliberate difference at " << prefix << " (" << why.dump()
        << ") no longer shows: update scenarios.json and docs/lightning_differences.md";
  }
  if (HasFailure()) {
    std::cerr << "lightning: " << want.dump() << "\nfrugal:    " << got.dump() << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Lightning, Conformance, ::testing::ValuesIn(scenario_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace

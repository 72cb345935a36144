#include "frugal/callbacks/model_checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h from fmt 11 on)

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <system_error>

#include "frugal/error.h"
#include "frugal/io/checkpoint.h"
#include "frugal/io/weights.h"
#include "frugal/trainer.h"

namespace fs = std::filesystem;

namespace frugal {

namespace {

constexpr const char* kLastName = "last";
constexpr const char* kExceptionName = "on_exception";
constexpr const char* kExtension = ".ckpt";

/// One piece of a filename template: literal text, or a `{name:spec}` field.
struct Piece {
  std::string text;  // literal text, or the field's name
  std::string spec;
  bool field = false;
};

std::vector<Piece> parse_template(const std::string& tpl) {
  std::vector<Piece> pieces;
  std::string literal;
  for (size_t i = 0; i < tpl.size(); ++i) {
    const char c = tpl[i];
    if (c == '}') {
      FRUGAL_CHECK(false, "ModelCheckpointOptions: filename \"", tpl,
                   "\" has a '}' without '{' at ", i);
    }
    if (c != '{') {
      literal += c;
      continue;
    }
    const size_t close = tpl.find('}', i + 1);
    FRUGAL_CHECK(close != std::string::npos, "ModelCheckpointOptions: filename \"", tpl,
                 "\" has a '{' without '}' at ", i);
    const std::string inside = tpl.substr(i + 1, close - i - 1);
    FRUGAL_CHECK(inside.find('{') == std::string::npos, "ModelCheckpointOptions: filename \"", tpl,
                 "\" has a '{' inside a field");
    const size_t colon = inside.find(':');
    Piece field;
    field.field = true;
    field.text = inside.substr(0, colon);
    field.spec = colon == std::string::npos ? "" : inside.substr(colon + 1);
    FRUGAL_CHECK(!field.text.empty(), "ModelCheckpointOptions: filename \"", tpl,
                 "\" has a field without a name ('{' at ", i, ")");
    if (!literal.empty()) pieces.push_back({literal, "", false});
    literal.clear();
    pieces.push_back(field);
    i = close;
  }
  if (!literal.empty()) pieces.push_back({literal, "", false});
  return pieces;
}

template <typename T>
std::string format_value(const std::string& spec, T value) {
  return fmt::format(fmt::runtime("{:" + spec + "}"), value);
}

/// `path` made absolute and normalized, without a trailing separator.
std::string normalize_dir(const std::string& path) {
  fs::path p = fs::absolute(fs::path(path)).lexically_normal();
  std::string text = p.string();
  while (text.size() > 1 && text.back() == '/') text.pop_back();
  return text;
}

bool is_inside(const std::string& dir, const std::string& path) {
  if (dir.empty()) return false;
  const fs::path rel = fs::path(path).lexically_normal().lexically_relative(dir);
  return !rel.empty() && *rel.begin() != ".." && rel != ".";
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::string describe(std::optional<double> value) {
  return value ? fmt::format("{:.5f}", *value) : std::string("none");
}

}  // namespace

/// What a filename and the monitor may refer to: the callback metrics plus epoch and step.
struct ModelCheckpoint::Candidates {
  std::map<std::string, double> metrics;
  int64_t epoch = 0;
  int64_t step = 0;

  std::optional<double> get(const std::string& name) const {
    auto it = metrics.find(name);
    if (it != metrics.end()) return it->second;
    if (name == "epoch") return static_cast<double>(epoch);
    if (name == "step") return static_cast<double>(step);
    return std::nullopt;
  }
};

ModelCheckpoint::ModelCheckpoint(ModelCheckpointOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  FRUGAL_CHECK(o.mode() == "min" || o.mode() == "max",
               "ModelCheckpointOptions: mode must be \"min\" or \"max\", got \"", o.mode(), "\"");
  FRUGAL_CHECK(o.save_top_k() >= -1,
               "ModelCheckpointOptions: save_top_k must be >= -1 (-1: all, 0: none, k: best k), "
               "got ",
               o.save_top_k());
  FRUGAL_CHECK(
      !o.monitor().empty() || o.save_top_k() == -1 || o.save_top_k() == 0 || o.save_top_k() == 1,
      "ModelCheckpointOptions: save_top_k=", o.save_top_k(),
      " needs a monitor to rank checkpoints by; without one, save_top_k must be -1, 0 "
      "or 1");
  FRUGAL_CHECK(o.every_n_epochs() >= 0, "ModelCheckpointOptions: every_n_epochs must be >= 0, got ",
               o.every_n_epochs());
  FRUGAL_CHECK(o.every_n_train_steps() >= 0,
               "ModelCheckpointOptions: every_n_train_steps must be >= 0, got ",
               o.every_n_train_steps());
  FRUGAL_CHECK(
      o.train_time_interval_seconds() >= 0 && std::isfinite(o.train_time_interval_seconds()),
      "ModelCheckpointOptions: train_time_interval_seconds must be >= 0, got ",
      o.train_time_interval_seconds());
  std::vector<std::string> triggers;
  if (o.every_n_epochs() > 0)
    triggers.push_back(fmt::format("every_n_epochs={}", o.every_n_epochs()));
  if (o.every_n_train_steps() > 0) {
    triggers.push_back(fmt::format("every_n_train_steps={}", o.every_n_train_steps()));
  }
  if (o.train_time_interval_seconds() > 0) {
    triggers.push_back(
        fmt::format("train_time_interval_seconds={:g}", o.train_time_interval_seconds()));
  }
  FRUGAL_CHECK(triggers.size() <= 1,
               "ModelCheckpointOptions: set at most one of every_n_epochs, "
               "every_n_train_steps and train_time_interval_seconds, got ",
               fmt::format("{}", fmt::join(triggers, ", ")));
  if (triggers.empty()) options_.every_n_epochs(1);
  FRUGAL_CHECK(!o.filename().empty(), "ModelCheckpointOptions: filename must not be empty");
  parse_template(o.filename());  // refuses a malformed template now, not at the first save
  kth_value_ = o.mode() == "min" ? std::numeric_limits<double>::infinity()
                                 : -std::numeric_limits<double>::infinity();
  if (!o.dirpath().empty()) save_dir_ = normalize_dir(o.dirpath());
}

std::ostream& ModelCheckpoint::out() const { return options_.out() ? *options_.out() : std::cerr; }

// ---------------------------------------------------------------------------------------------
// names

std::string ModelCheckpoint::format_checkpoint_name(const std::map<std::string, double>& metrics,
                                                    int64_t epoch, int64_t step,
                                                    int64_t version) const {
  std::string name;
  for (const Piece& piece : parse_template(options_.filename())) {
    if (!piece.field) {
      name += piece.text;
      continue;
    }
    if (options_.auto_insert_metric_name()) {
      std::string label = piece.text;
      std::replace(label.begin(), label.end(), '/', '_');  // a "/" would make a folder
      name += label + "=";
    }
    auto it = metrics.find(piece.text);
    try {
      if (it == metrics.end() && (piece.text == "epoch" || piece.text == "step")) {
        name += format_value(piece.spec, piece.text == "epoch" ? epoch : step);
        continue;
      }
      if (it == metrics.end()) {
        std::vector<std::string> known{"epoch", "step"};
        for (const auto& [k, v] : metrics) known.push_back(k);
        FRUGAL_CHECK(
            false, "ModelCheckpoint: filename \"", options_.filename(), "\" uses \"", piece.text,
            "\", which was not logged; available: ", fmt::format("{}", fmt::join(known, ", ")));
      }
      const double value = it->second;
      try {
        name += format_value(piece.spec, value);
      } catch (const fmt::format_error&) {
        // An integral value with an integer spec ("{epoch:02d}" of a logged number).
        if (!std::isfinite(value) || value != std::trunc(value)) throw;
        name += format_value(piece.spec, static_cast<int64_t>(value));
      }
    } catch (const fmt::format_error& e) {
      FRUGAL_CHECK(false, "ModelCheckpoint: filename \"", options_.filename(), "\": format spec \"",
                   piece.spec, "\" does not fit \"", piece.text, "\" (", e.what(), ")");
    }
  }
  if (version > 0) name += fmt::format("-v{}", version);
  return name + kExtension;
}

std::string ModelCheckpoint::free_path(const Candidates& c, const std::string& may_reuse) const {
  auto path_of = [&](int64_t version) {
    return (fs::path(save_dir_) / format_checkpoint_name(c.metrics, c.epoch, c.step, version))
        .string();
  };
  std::string path = path_of(0);
  if (!options_.enable_version_counter()) return path;
  for (int64_t v = 1; file_exists(path) && path != may_reuse; ++v) path = path_of(v);
  return path;
}

// ---------------------------------------------------------------------------------------------
// state

std::map<std::string, double> ModelCheckpoint::best_k_models() const {
  return {best_k_.begin(), best_k_.end()};
}

std::string ModelCheckpoint::state_key() const {
  const auto& o = options_;
  return fmt::format(
      "ModelCheckpoint{{monitor={}, mode={}, every_n_train_steps={}, every_n_epochs={}, "
      "train_time_interval={}}}",
      o.monitor().empty() ? "None" : o.monitor(), o.mode(), o.every_n_train_steps(),
      o.every_n_epochs(),
      o.train_time_interval_seconds() > 0 ? fmt::format("{:g}", o.train_time_interval_seconds())
                                          : "None");
}

StateDict ModelCheckpoint::state_dict() const {
  std::vector<std::string> paths;
  std::vector<double> scores;
  for (const auto& [path, score] : best_k_) {
    paths.push_back(path);
    scores.push_back(score);
  }
  auto optional_value = [](std::optional<double> v) { return v ? c10::IValue(*v) : c10::IValue(); };
  return {
      {"monitor", options_.monitor()},
      {"dirpath", save_dir_},
      {"best_model_path", best_model_path_},
      {"best_model_score", optional_value(best_model_score_)},
      {"current_score", optional_value(current_score_)},
      {"best_k_models_paths", c10::IValue(paths)},
      {"best_k_models_scores", c10::IValue(scores)},
      {"kth_best_model_path", kth_best_model_path_},
      {"kth_value", kth_value_},
      {"last_model_path", last_model_path_},
      {"last_global_step_saved", last_global_step_saved_},
  };
}

void ModelCheckpoint::load_state_dict(const StateDict& state) {
  for (const char* key : {"dirpath", "best_model_path"}) {
    auto it = state.find(key);
    FRUGAL_CHECK(it != state.end() && it->second.isString(),
                 "ModelCheckpoint: checkpoint state has no '", key, "' (a string)");
  }
  if (save_dir_.empty()) {
    pending_state_ = state;  // compared with the folder once setup has resolved it
    return;
  }
  apply_state(state);
}

void ModelCheckpoint::apply_state(const StateDict& state) {
  auto string_at = [&](const char* key, std::string& into) {
    auto it = state.find(key);
    if (it == state.end()) return;
    FRUGAL_CHECK(it->second.isString(), "ModelCheckpoint: state '", key, "' must be a string");
    into = it->second.toStringRef();
  };
  auto optional_at = [&](const char* key, std::optional<double>& into) {
    auto it = state.find(key);
    if (it == state.end()) return;
    FRUGAL_CHECK(it->second.isNone() || it->second.isDouble(), "ModelCheckpoint: state '", key,
                 "' must be a number or None");
    into = it->second.isNone() ? std::nullopt : std::optional<double>(it->second.toDouble());
  };
  auto saved_step = state.find("last_global_step_saved");
  if (saved_step != state.end()) {
    FRUGAL_CHECK(saved_step->second.isInt(),
                 "ModelCheckpoint: state 'last_global_step_saved' must be an integer");
    last_global_step_saved_ = saved_step->second.toInt();  // no second file for that step
  }
  const std::string from = state.at("dirpath").toStringRef();
  if (from == save_dir_) {
    optional_at("best_model_score", best_model_score_);
    optional_at("current_score", current_score_);
    string_at("kth_best_model_path", kth_best_model_path_);
    string_at("last_model_path", last_model_path_);
    auto kth = state.find("kth_value");
    if (kth != state.end()) {
      FRUGAL_CHECK(kth->second.isDouble(), "ModelCheckpoint: state 'kth_value' must be a number");
      kth_value_ = kth->second.toDouble();
    }
    auto paths = state.find("best_k_models_paths");
    auto scores = state.find("best_k_models_scores");
    if (paths != state.end() && scores != state.end()) {
      const char* what =
          "ModelCheckpoint: state 'best_k_models_paths' / 'best_k_models_scores' must be a list "
          "of strings and a list of numbers of the same length";
      FRUGAL_CHECK(paths->second.isList() && scores->second.isList(), what);
      const auto path_list = paths->second.toListRef();
      const auto score_list = scores->second.toListRef();
      FRUGAL_CHECK(path_list.size() == score_list.size(), what);
      best_k_.clear();
      for (size_t i = 0; i < path_list.size(); ++i) {
        FRUGAL_CHECK(path_list[i].isString() && score_list[i].isDouble(), what);
        best_k_.emplace_back(path_list[i].toStringRef(), score_list[i].toDouble());
      }
    }
  } else {
    out() << fmt::format(
        "frugal: ModelCheckpoint: the checkpoint folder changed from \"{}\" to \"{}\"; "
        "best_model_score, best_k_models, kth_best_model_path, kth_value and last_model_path "
        "are not restored, only best_model_path\n",
        from, save_dir_);
  }
  string_at("best_model_path", best_model_path_);
}

// ---------------------------------------------------------------------------------------------
// hooks

void ModelCheckpoint::setup(Trainer& trainer, Task& task, TrainerFn fn) {
  module_ = &task.module();
  if (options_.dirpath().empty()) save_dir_ = normalize_dir(trainer.log_dir() + "/checkpoints");
  if (fn == TrainerFn::kFit) {
    // A folder that cannot take files is an error now, not at the first save hours later.
    if (trainer.is_global_zero())
      detail::ensure_writable_dir(save_dir_, /*create=*/false, "ModelCheckpoint");
    last_global_step_saved_ = 0;
    defer_until_validation_ = false;
    validated_this_epoch_ = false;
    validated_this_fit_ = false;
    warned_missing_monitor_ = false;
  }
  if (pending_state_) {
    StateDict state = std::move(*pending_state_);
    pending_state_.reset();
    apply_state(state);
  }
}

void ModelCheckpoint::on_train_start(Trainer&, Task&) { last_time_check_ = Clock::now(); }

void ModelCheckpoint::on_train_epoch_start(Trainer&, Task&) { validated_this_epoch_ = false; }

void ModelCheckpoint::on_train_batch_start(Trainer& trainer, Task&, const Batch&, int64_t) {
  step_before_batch_ = trainer.state().global_step;
}

bool ModelCheckpoint::should_skip(const Trainer& trainer) const {
  const TrainerState& s = trainer.state();
  return trainer.options().fast_dev_run() > 0 || s.fn != TrainerFn::kFit || s.sanity_checking ||
         s.global_step == last_global_step_saved_;
}

ModelCheckpoint::Candidates ModelCheckpoint::candidates(const Trainer& trainer) const {
  Candidates c;
  c.metrics = trainer.callback_metrics();
  c.epoch = trainer.state().epoch;
  c.step = trainer.state().global_step;
  return c;
}

// Note [Step and time triggers run after optimizer steps only]: with gradient accumulation,
// on_train_batch_end runs for every micro-batch, but the triggers count optimizer steps; so both
// look only at the micro-batch that completed a step: one save per step, at a step boundary.
void ModelCheckpoint::on_train_batch_end(Trainer& trainer, Task&, const at::Tensor&, const Batch&,
                                         int64_t) {
  const int64_t step = trainer.state().global_step;
  if (step == step_before_batch_ || should_skip(trainer)) return;
  const int64_t n = options_.every_n_train_steps();
  const bool step_due = n > 0 && step % n == 0;
  bool time_due = false;
  if (options_.train_time_interval_seconds() > 0) {
    const auto now = Clock::now();
    time_due = std::chrono::duration<double>(now - last_time_check_).count() >=
               options_.train_time_interval_seconds();
    if (time_due) last_time_check_ = now;
  }
  if (!step_due && !time_due) return;
  Candidates c = candidates(trainer);
  if (!options_.monitor().empty() && options_.save_top_k() != 0 && !c.get(options_.monitor())) {
    defer_until_validation_ = true;  // e.g. a validation metric: save once validation has run
    return;
  }
  save_at_trigger(trainer, c);
}

void ModelCheckpoint::on_validation_end(Trainer& trainer, Task&) {
  const TrainerState& s = trainer.state();
  if (s.fn != TrainerFn::kFit || s.sanity_checking) return;
  validated_this_epoch_ = true;
  validated_this_fit_ = true;
  if (should_skip(trainer)) return;
  if (defer_until_validation_) {
    defer_until_validation_ = false;
    save_at_trigger(trainer, candidates(trainer));
    return;
  }
  const int64_t n = options_.every_n_epochs();
  if (n > 0 && (s.epoch + 1) % n == 0) save_at_trigger(trainer, candidates(trainer));
}

void ModelCheckpoint::on_train_epoch_end(Trainer& trainer, Task&) {
  // With validation in this epoch the epoch trigger ran at its end (on_validation_end).
  if (validated_this_epoch_ || should_skip(trainer)) return;
  const int64_t n = options_.every_n_epochs();
  if (n > 0 && (trainer.state().epoch + 1) % n == 0) {
    save_at_trigger(trainer, candidates(trainer));
  }
}

void ModelCheckpoint::on_exception(Trainer& trainer, Task&, const std::exception& error) {
  if (!options_.save_on_exception()) return;
  try {
    if (trainer.state().fn != TrainerFn::kFit || trainer.options().fast_dev_run() > 0) return;
    const std::string dir =
        save_dir_.empty() ? normalize_dir(trainer.log_dir() + "/checkpoints") : save_dir_;
    const std::string path = (fs::path(dir) / (std::string(kExceptionName) + kExtension)).string();
    fs::create_directories(dir);
    trainer.save_checkpoint(path, options_.save_weights_only());
    out() << fmt::format("frugal: ModelCheckpoint: training failed ({}); saved {}\n", error.what(),
                         path);
  } catch (const std::exception& e) {
    out() << "frugal: ModelCheckpoint: could not save the on_exception checkpoint: " << e.what()
          << "\n";
  } catch (...) {
    out() << "frugal: ModelCheckpoint: could not save the on_exception checkpoint\n";
  }
}

// ---------------------------------------------------------------------------------------------
// saving

void ModelCheckpoint::save_at_trigger(Trainer& trainer, const Candidates& c) {
  const bool saved = save_topk(trainer, c);
  // Note [last.ckpt follows the saved checkpoints]: as Lightning 2.6, last.ckpt is written only
  // together with a top-k file (so with a monitored top-1 it is a copy of the best), or at every
  // trigger when save_top_k is 0 and it is the only file.
  if (options_.save_last() && (saved || options_.save_top_k() == 0)) save_last(trainer, c);
  if (saved && options_.save_best_safetensors() && module_ != nullptr &&
      !best_model_path_.empty() && best_model_path_ != safetensors_for_) {
    const auto path = fs::path(best_model_path_).parent_path() / "best.safetensors";
    save_safetensors(*module_, path.string(),
                     {{"checkpoint", fs::path(best_model_path_).filename().string()},
                      {"monitor", options_.monitor()},
                      {"epoch", std::to_string(c.epoch)},
                      {"step", std::to_string(c.step)}});
    safetensors_for_ = best_model_path_;
    if (options_.verbose())
      out() << fmt::format("frugal: ModelCheckpoint: wrote {}\n", path.string());
  }
}

bool ModelCheckpoint::better(double a, double b) const {
  if (std::isnan(a)) return false;  // NaN never ranks above anything
  if (std::isnan(b)) return true;
  return options_.mode() == "min" ? a < b : a > b;
}

void ModelCheckpoint::update_ranks() {
  // The worst kept file (first of equals, as Python's max over an insertion-ordered dict) and the
  // best one among non-NaN scores.
  const int64_t k = options_.save_top_k();
  if (!best_k_.empty() && (k == -1 || static_cast<int64_t>(best_k_.size()) >= k)) {
    const auto* worst = &best_k_.front();
    for (const auto& e : best_k_) {
      if (better(worst->second, e.second)) worst = &e;
    }
    kth_best_model_path_ = worst->first;
    kth_value_ = worst->second;
  }
  const std::pair<std::string, double>* best = nullptr;
  for (const auto& e : best_k_) {
    if (std::isnan(e.second)) continue;
    if (best == nullptr || better(e.second, best->second)) best = &e;
  }
  best_model_path_ = best ? best->first : std::string();
  best_model_score_ = best ? std::optional<double>(best->second) : std::nullopt;
}

bool ModelCheckpoint::save_topk(Trainer& trainer, const Candidates& c) {
  const int64_t k = options_.save_top_k();
  if (k == 0) return false;
  if (options_.monitor().empty()) {
    // Without a monitor the latest file is the "best"; top-1 replaces it, top -1 keeps all.
    const std::string previous = best_model_path_;
    const std::string path = free_path(c, k == 1 ? previous : std::string());
    best_model_path_ = path;  // before writing: it is part of the saved state
    write(trainer, path);
    if (k == 1 && !previous.empty()) remove_if_ours(trainer, previous, path);
    return true;
  }

  const std::optional<double> current = c.get(options_.monitor());
  if (!current) {
    std::vector<std::string> known;
    for (const auto& [name, v] : c.metrics) known.push_back(name);
    const std::string message = fmt::format(
        "ModelCheckpoint(monitor=\"{}\") found no such metric; logged: {}", options_.monitor(),
        known.empty() ? std::string("(none)") : fmt::format("{}", fmt::join(known, ", ")));
    // Before any validation a validation metric cannot exist yet: say so once and go on.
    FRUGAL_CHECK(!validated_this_fit_, message);
    if (!warned_missing_monitor_) out() << "frugal: " << message << "; not saving\n";
    warned_missing_monitor_ = true;
    return false;
  }

  const bool keep_all = k == -1;
  const bool room = keep_all || static_cast<int64_t>(best_k_.size()) < k;
  if (!room && !better(*current, kth_value_)) {
    if (options_.verbose()) {
      out() << fmt::format("Epoch {}, global step {}: \"{}\" was not in top {}\n", c.epoch, c.step,
                           options_.monitor(), k);
    }
    return false;
  }
  std::string replaced;
  if (!room) {
    replaced = kth_best_model_path_;
    best_k_.erase(std::find_if(best_k_.begin(), best_k_.end(),
                               [&](const auto& e) { return e.first == replaced; }));
  }
  const std::string path = free_path(c, replaced);
  current_score_ = *current;
  best_k_.emplace_back(path, *current);
  update_ranks();
  if (options_.verbose()) {
    out() << fmt::format(
        "Epoch {}, global step {}: \"{}\" reached {:.5f} (best {}), saving model to \"{}\" as top "
        "{}\n",
        c.epoch, c.step, options_.monitor(), *current, describe(best_model_score_), path,
        keep_all ? static_cast<int64_t>(best_k_.size()) : k);
  }
  write(trainer, path);
  if (!replaced.empty()) remove_if_ours(trainer, replaced, path);
  return true;
}

void ModelCheckpoint::save_last(Trainer& trainer, const Candidates&) {
  const std::string path = (fs::path(save_dir_) / (std::string(kLastName) + kExtension)).string();
  const std::string previous = last_model_path_;
  last_model_path_ = path;
  write(trainer, path);
  if (!previous.empty()) remove_if_ours(trainer, previous, path);
}

void ModelCheckpoint::write(Trainer& trainer, const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  last_global_step_saved_ = trainer.state().global_step;
  trainer.save_checkpoint(path, options_.save_weights_only());
  if (options_.verbose() && options_.monitor().empty()) {
    out() << fmt::format("Epoch {}, global step {}: saving model to \"{}\"\n",
                         trainer.state().epoch, trainer.state().global_step, path);
  }
}

void ModelCheckpoint::remove_if_ours(const Trainer& trainer, const std::string& previous,
                                     const std::string& current) {
  // Only files in this callback's folder: a best path restored from another folder stays, and so
  // does the checkpoint this fit resumed from (as Lightning's _should_remove_checkpoint).
  if (previous == current || !is_inside(save_dir_, previous)) return;
  std::error_code ec;
  if (!trainer.ckpt_path().empty() && fs::equivalent(previous, trainer.ckpt_path(), ec)) return;
  ec.clear();
  fs::remove(previous, ec);
  if (ec) {
    out() << fmt::format("frugal: ModelCheckpoint: could not remove {}: {}\n", previous,
                         ec.message());
  }
}

// ---------------------------------------------------------------------------------------------
// resume

std::string ModelCheckpoint::resolve_ckpt_path(const std::string& which) const {
  if (which == "best") return best_model_path_;
  FRUGAL_CHECK(which == "last",
               "ModelCheckpoint::resolve_ckpt_path: expected \"last\" or \"best\", "
               "got \"",
               which, "\"");
  if (save_dir_.empty()) return "";
  const std::string last = (fs::path(save_dir_) / (std::string(kLastName) + kExtension)).string();
  if (file_exists(last)) return last;
  std::error_code ec;
  if (!fs::is_directory(save_dir_, ec)) return "";
  std::string newest;
  fs::file_time_type newest_time{};
  for (auto it = fs::recursive_directory_iterator(save_dir_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->path().extension() != kExtension) continue;
    const auto time = it->last_write_time(ec);
    if (ec) continue;
    if (newest.empty() || time > newest_time) {
      newest = it->path().string();
      newest_time = time;
    }
  }
  return newest;
}

}  // namespace frugal

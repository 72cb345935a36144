// ModelCheckpoint: saves checkpoints during fit (Lightning's ModelCheckpoint): the best k by a
// monitored metric, the latest ones, a "last.ckpt", and one when training fails. Files are written
// by Trainer::save_checkpoint (atomically); names come from a template such as
// "{epoch:02d}-{val/acc:.4f}" -> "epoch=03-val_acc=0.9123.ckpt". Its own state (best paths and
// scores) goes into every checkpoint, so a resumed run keeps ranking against the old files.
// docs/checkpointing.md says when each trigger fires.
//
//   auto ckpt = std::make_shared<frugal::ModelCheckpoint>(frugal::ModelCheckpointOptions()
//       .monitor("val/acc").mode_max().save_top_k(3).save_last(true));
//   frugal::Trainer trainer(frugal::TrainerOptions().max_epochs(20), {ckpt});
//   trainer.fit(task, train, val);
//   frugal::load_weights(*net, ckpt->best_model_path());
#pragma once

#include <frugal/callback.h>
#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace frugal {

struct ModelCheckpointOptions {
  /// Folder of the checkpoints; empty: <trainer.log_dir()>/checkpoints, resolved at setup.
  TORCH_ARG(std::string, dirpath) = "";
  /// Name template without ".ckpt": `{epoch}`, `{step}` and logged metric names, each with an
  /// optional fmt format spec (`{epoch:02d}`, `{val/loss:.4f}`). With auto_insert_metric_name,
  /// `{val/loss:.2f}` becomes `val_loss=0.32` ("/" in the inserted name turns into "_").
  TORCH_ARG(std::string, filename) = "{epoch}-{step}";
  /// Metric ranking the top-k files; empty: none (save_top_k 1 keeps only the latest file).
  TORCH_ARG(std::string, monitor) = "";
  /// "min" or "max": whether a smaller or a larger monitored value is better.
  TORCH_ARG(std::string, mode) = "min";
  /// -1: keep every file; 0: none (only last.ckpt, if save_last); k: the best k by monitor.
  TORCH_ARG(int64_t, save_top_k) = 1;
  /// Also write "last.ckpt" (a full checkpoint) whenever a top-k file is written; with
  /// save_top_k 0, at every trigger.
  TORCH_ARG(bool, save_last) = false;
  /// The three triggers exclude each other; none set: every_n_epochs = 1.
  /// Save after every n-th epoch (at validation end, or at train epoch end without validation).
  TORCH_ARG(int64_t, every_n_epochs) = 0;
  /// Save after every n-th optimizer step.
  TORCH_ARG(int64_t, every_n_train_steps) = 0;
  /// Save after the first optimizer step at least this many seconds after the previous save.
  TORCH_ARG(double, train_time_interval_seconds) = 0.0;
  /// Write the model weights only (Trainer::save_checkpoint(path, true)).
  TORCH_ARG(bool, save_weights_only) = false;
  /// Also write the best model's weights as <dirpath>/best.safetensors (rewritten whenever the
  /// best changes; readable by Python's safetensors package, see docs/weights.md).
  TORCH_ARG(bool, save_best_safetensors) = false;
  /// When fit throws, write <dirpath>/on_exception.ckpt (errors while writing are printed).
  TORCH_ARG(bool, save_on_exception) = false;
  /// Write `name=` before each value of the template.
  TORCH_ARG(bool, auto_insert_metric_name) = true;
  /// A name that exists already gets "-v1", "-v2", ... instead of being overwritten.
  TORCH_ARG(bool, enable_version_counter) = true;
  /// Say what was saved (and what was not in the top k).
  TORCH_ARG(bool, verbose) = false;
  // An alias, not `std::ostream*`: TORCH_ARG spells `const type&`.
  using StreamPtr = std::ostream*;
  /// Where verbose lines and warnings go; null: std::cerr.
  TORCH_ARG(StreamPtr, out) = nullptr;

 public:
  ModelCheckpointOptions& mode_min() {
    mode_ = "min";
    return *this;
  }
  ModelCheckpointOptions& mode_max() {
    mode_ = "max";
    return *this;
  }
  template <typename Rep, typename Period>
  ModelCheckpointOptions& train_time_interval(std::chrono::duration<Rep, Period> d) {
    train_time_interval_seconds_ = std::chrono::duration<double>(d).count();
    return *this;
  }
};

class ModelCheckpoint : public Callback {
 public:
  /// Checks the options; throws frugal::Error naming the bad option and its value.
  explicit ModelCheckpoint(ModelCheckpointOptions options = {});

  /// The options, with the default trigger resolved (every_n_epochs 1 when none was set).
  const ModelCheckpointOptions& options() const { return options_; }
  /// The configured folder (may be empty: then the trainer's default, see save_dir()).
  const std::string& dirpath() const { return options_.dirpath(); }
  /// The folder this callback writes to, absolute; empty before setup if dirpath was not set.
  const std::string& save_dir() const { return save_dir_; }

  /// For Trainer::fit's ckpt_path: "last" -> <save_dir>/last.ckpt if it exists, else the newest
  /// *.ckpt under save_dir (by modification time), else ""; "best" -> best_model_path() or "".
  std::string resolve_ckpt_path(const std::string& which) const;

  /// The file name (relative to save_dir(), with ".ckpt") the template gives for these values.
  /// `version` > 0 appends "-v<version>". Throws naming the missing metric and the known ones.
  std::string format_checkpoint_name(const std::map<std::string, double>& metrics, int64_t epoch,
                                     int64_t step, int64_t version = 0) const;

  /// Best checkpoint so far by monitor/mode (NaN scores never are); without a monitor, the latest
  /// top-k file. Empty when none.
  const std::string& best_model_path() const { return best_model_path_; }
  std::optional<double> best_model_score() const { return best_model_score_; }
  /// The files kept by top-k and their scores (NaN kept as NaN, ranked worst).
  std::map<std::string, double> best_k_models() const;
  /// The worst kept top-k file once k are kept (the next to be replaced; with save_top_k -1, the
  /// worst of all), and its score.
  const std::string& kth_best_model_path() const { return kth_best_model_path_; }
  double kth_value() const { return kth_value_; }
  const std::string& last_model_path() const { return last_model_path_; }
  /// The monitored value of the latest top-k candidate.
  std::optional<double> current_score() const { return current_score_; }

  /// "ModelCheckpoint{monitor=..., mode=..., every_n_train_steps=..., every_n_epochs=...,
  /// train_time_interval=...}": two differently configured instances keep separate state.
  std::string state_key() const override;
  StateDict state_dict() const override;
  /// Restores the best/last paths and scores if the checkpoint was written to the same folder;
  /// otherwise warns and restores only best_model_path (as Lightning).
  void load_state_dict(const StateDict& state) override;

  void setup(Trainer&, Task&, TrainerFn) override;
  void on_train_start(Trainer&, Task&) override;
  void on_train_epoch_start(Trainer&, Task&) override;
  void on_train_batch_start(Trainer&, Task&, const Batch&, int64_t) override;
  void on_train_batch_end(Trainer&, Task&, const at::Tensor&, const Batch&, int64_t) override;
  void on_train_epoch_end(Trainer&, Task&) override;
  void on_validation_end(Trainer&, Task&) override;
  void on_exception(Trainer&, Task&, const std::exception&) override;

 private:
  torch::nn::Module* module_ = nullptr;  // the task's module (set at setup)
  std::string safetensors_for_;          // best_model_path() when best.safetensors was written
  struct Candidates;
  using Clock = std::chrono::steady_clock;

  bool should_skip(const Trainer& trainer) const;
  Candidates candidates(const Trainer& trainer) const;
  /// Top-k then last.ckpt, as one trigger asks.
  void save_at_trigger(Trainer& trainer, const Candidates& c);
  bool save_topk(Trainer& trainer, const Candidates& c);
  void save_last(Trainer& trainer, const Candidates& c);
  std::string free_path(const Candidates& c, const std::string& may_reuse) const;
  void write(Trainer& trainer, const std::string& path);
  void remove_if_ours(const Trainer& trainer, const std::string& previous,
                      const std::string& current);
  bool better(double a, double b) const;
  void update_ranks();
  void apply_state(const StateDict& state);
  std::ostream& out() const;

  ModelCheckpointOptions options_;
  std::string save_dir_;
  std::string best_model_path_;
  std::optional<double> best_model_score_;
  std::optional<double> current_score_;
  std::vector<std::pair<std::string, double>> best_k_;  // insertion order (ties: first wins)
  std::string kth_best_model_path_;
  double kth_value_;
  std::string last_model_path_;
  std::optional<StateDict> pending_state_;  // loaded before the folder was known

  int64_t last_global_step_saved_ = 0;  // as Lightning: nothing is saved before the first step
  int64_t step_before_batch_ = 0;
  Clock::time_point last_time_check_;
  bool defer_until_validation_ = false;
  bool validated_this_epoch_ = false;
  bool validated_this_fit_ = false;
  bool warned_missing_monitor_ = false;
};

}  // namespace frugal

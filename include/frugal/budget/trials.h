// Trials: quick runs of candidate configurations before the real run. Each candidate (model x
// precision x micro-batch x accumulation x learning rate) trains with a fresh, real Trainer for a
// few epochs on a seeded fraction of the training data; Trials measures its wall time,
// samples/s, peak memory and validation accuracy, and ranks the candidates by a weighted score
// under hard limits. Failures and limit breakers are listed with the reason. See docs/trials.md.
//
//   frugal::Trials trials(frugal::TrialsOptions().max_memory_bytes(512 << 20).output_dir("plan"));
//   trials.add_classifier("cnn", [] { return frugal::models::SmallCnn(); })
//         .add_classifier("mlp", [] { return frugal::models::Mlp(); })
//         .add_grid(frugal::TrialGrid().micro_batches({32, 128}).lrs({1e-3, 3e-3}));
//   auto report = trials.run(train_x, train_y, val_x, val_y);
//   std::cout << report.table();
#pragma once

#include <ATen/core/Tensor.h>
#include <frugal/classifier.h>
#include <frugal/optim/optimizers.h>
#include <frugal/task.h>
#include <frugal/trainer.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace frugal {

/// One candidate: which model (by the name it was added under) and how to train it.
struct TrialConfig {
  std::string model;
  Precision precision = Precision::k32;
  int64_t micro_batch = 64;
  int64_t accumulate = 1;
  double lr = 1e-3;
  /// "cnn 32 micro-batch 64 x 1 lr 0.001"
  std::string describe() const;
};

/// Builds the Task of one candidate. Called right after torch::manual_seed(seed), so the initial
/// weights are the same in every trial of a model (and in a run that repeats the trial).
using TaskFactory = std::function<std::unique_ptr<Task>(const TrialConfig&)>;

/// The candidates of a grid: every combination, models outermost, learning rates innermost.
struct TrialGrid {
  /// Names of added models; empty: every model added so far, in the order added.
  TORCH_ARG(std::vector<std::string>, models);
  TORCH_ARG(std::vector<Precision>, precisions) = {Precision::k32};
  TORCH_ARG(std::vector<int64_t>, micro_batches) = {64};
  TORCH_ARG(std::vector<int64_t>, accumulates) = {1};
  TORCH_ARG(std::vector<double>, lrs) = {1e-3};
};

struct TrialsOptions {
  /// Share of the training samples each trial trains on (a seeded random subset, the same for
  /// every candidate), in (0, 1].
  TORCH_ARG(double, data_fraction) = 0.1;
  /// Epochs per trial.
  TORCH_ARG(int64_t, epochs) = 2;
  /// Seeds the subset, the model's initial weights (before each factory call), the Trainer and
  /// the shuffle of the training batches. >= 0.
  TORCH_ARG(int64_t, seed) = 42;
  /// "auto", "cpu" or "cuda" (as TrainerOptions::accelerator).
  TORCH_ARG(std::string, accelerator) = "auto";
  /// Score weights (>= 0, not all 0): see Note [The trial score] in trials.cpp / docs/trials.md.
  TORCH_ARG(double, weight_memory) = 1.0;
  TORCH_ARG(double, weight_speed) = 1.0;
  TORCH_ARG(double, weight_accuracy) = 1.0;
  /// Deployment's weights (the article's decision matrix gives it 20%): inference latency at
  /// batch 1, and the fp32 model size. 0 (default): measured and reported, not scored.
  TORCH_ARG(double, weight_latency) = 0.0;
  TORCH_ARG(double, weight_size) = 0.0;
  /// After each trial, measure the trained model for deployment: eval-mode forward latency at
  /// batch 1 and 64 on the trial's device (Classifier tasks; median of `latency_repeats` after a
  /// warm-up), and its size in fp32 and after dynamic int8 quantization of its Linear layers
  /// (frugal::quantize_dynamic for a Sequential, quantize_dynamic_graph for any other model the
  /// ONNX exporter walks, e.g. the zoo).
  TORCH_ARG(bool, measure_deployment) = true;
  TORCH_ARG(int64_t, latency_repeats) = 5;
  /// Hard limit on a trial's peak memory growth in bytes (CPU: peak RSS growth; CUDA: peak
  /// reserved growth); 0: none.
  TORCH_ARG(double, max_memory_bytes) = 0.0;
  /// Hard limit on the seconds one training epoch over the *whole* training set would take,
  /// estimated from the trial's measured samples/s; 0: none.
  TORCH_ARG(double, max_epoch_seconds) = 0.0;
  /// Batch size of the validation loader; 0: the candidate's micro-batch, so that validation
  /// (no gradients) does not set a peak the training configuration would not.
  TORCH_ARG(int64_t, val_batch_size) = 0;
  /// Metrics read after each trial: an accuracy in [0, 1] (higher is better) and a loss.
  TORCH_ARG(std::string, accuracy_metric) = "val/acc";
  TORCH_ARG(std::string, loss_metric) = "val/loss";
  /// Before the first trial, train the first candidate for two batches unmeasured, so one-time
  /// allocations (thread pools, kernel caches) are not charged to the first trial.
  TORCH_ARG(bool, warmup) = true;
  /// Folder for trials.csv, trials.json and report.html (the page of render_trials_report in
  /// frugal/loggers/report.h), written atomically, created if missing; "": none.
  TORCH_ARG(std::string, output_dir);
  /// Where progress lines and the final table go (nullptr: nowhere).
  using StreamPtr = std::ostream*;
  TORCH_ARG(StreamPtr, out) = nullptr;
  /// Every other Trainer option (gradient clipping, deterministic, ...). Trials sets max_epochs,
  /// seed, precision, accumulate_grad_batches, accelerator and strategy ("single_device") from
  /// the options and the candidate, and turns off the progress bar, the logger and the sanity
  /// validation steps.
  TORCH_ARG(TrainerOptions, trainer);

 public:
  /// Throws frugal::Error naming the first bad option and what is allowed.
  void validate() const;
};

/// What one trial measured, and where it stands.
struct TrialResult {
  enum class Status {
    kRanked,     ///< within the limits; has a score and a rank
    kOverLimit,  ///< ran, but broke a hard limit (see reason)
    kFailed      ///< threw (see reason), or could not run
  };
  TrialConfig config;
  Status status = Status::kFailed;
  /// Why the trial is over a limit or failed; "" when ranked.
  std::string reason;
  /// 1 = best; 0 when not ranked.
  int64_t rank = 0;
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  /// Weighted score in (0, 1]; NaN when not ranked.
  double score = kNaN;
  /// The score's terms (each in (0, 1], 1 = the best ranked candidate); NaN when not ranked.
  double memory_term = kNaN;
  double speed_term = kNaN;
  double accuracy_term = kNaN;
  double latency_term = kNaN;
  double size_term = kNaN;
  /// Epochs completed.
  int64_t epochs = 0;
  /// Wall seconds of the whole trial (model built, fit with validation).
  double seconds = kNaN;
  /// Mean seconds of one training epoch over the subset (validation excluded).
  double epoch_seconds = kNaN;
  /// Training samples per second (validation excluded).
  double samples_per_second = kNaN;
  /// Seconds one epoch over the whole training set would take at that speed.
  double full_epoch_seconds = kNaN;
  /// Peak memory growth over the trial's start, in bytes (CPU: RSS; CUDA: reserved); -1: not
  /// measured.
  int64_t peak_bytes = -1;
  /// CUDA: peak allocated growth in bytes; -1 on CPU.
  int64_t peak_allocated_bytes = -1;
  /// The accuracy and loss metrics after the last validation; NaN when not logged.
  double val_acc = kNaN;
  double val_loss = kNaN;
  /// Eval-mode forward time of the trained model for one sample and for 64, in milliseconds;
  /// NaN when not measured (not a Classifier, or measure_deployment off).
  double latency_b1_ms = kNaN;
  double latency_b64_ms = kNaN;
  /// Bytes of the model's parameters and buffers, as trained (fp32), and after dynamic int8
  /// quantization of its Linear layers (what frugal::quantize_dynamic stores, or
  /// QuantizedModel::weight_bytes for a non-Sequential model); -1: not measured (int8: no
  /// quantization engine, or a model neither a Sequential nor exportable).
  int64_t model_bytes = -1;
  int64_t model_bytes_int8 = -1;
};
const char* to_string(TrialResult::Status status);

struct TrialsReport {
  /// Ranked candidates in rank order, then those over a limit, then the failed ones (each group
  /// in the order run).
  std::vector<TrialResult> results;
  std::string device;
  /// Samples trained on per epoch (the subset), of how many; validation samples.
  int64_t train_samples = 0;
  int64_t full_train_samples = 0;
  int64_t val_samples = 0;
  /// The options the trials ran with (the output stream cleared).
  TrialsOptions options;

  /// The best ranked candidate, or nullptr when none passed.
  const TrialResult* best() const;
  /// The table, fixed-width columns, one line per candidate, with a header and a legend line.
  std::string table() const;
  std::string to_csv() const;
  std::string to_json() const;
  /// Atomic writes (temporary file, fsync, rename); the folder must exist.
  void write_csv(const std::string& path) const;
  void write_json(const std::string& path) const;
};

class Trials {
 public:
  explicit Trials(TrialsOptions options = {});

  /// Adds a model under `name` (unique, non-empty).
  Trials& add_model(const std::string& name, TaskFactory factory);
  /// Adds a model trained as a Classifier: `make_module()` returns anything Classifier takes (a
  /// torch::nn::Sequential, a TORCH_MODULE holder, an AnyModule); `make_optimizer(lr)` returns
  /// its OptimizerFactory (default: AdamW(lr)).
  template <typename MakeModule>
  Trials& add_classifier(const std::string& name, MakeModule make_module,
                         std::function<OptimizerFactory(double lr)> make_optimizer = {}) {
    if (!make_optimizer) make_optimizer = [](double lr) { return AdamW(lr); };
    return add_model(name, [make_module, make_optimizer](const TrialConfig& config) {
      return std::unique_ptr<Task>(
          std::make_unique<Classifier>(make_module(), make_optimizer(config.lr)));
    });
  }
  /// Adds one candidate; its model must have been added. Throws naming a bad field.
  Trials& add_candidate(TrialConfig config);
  /// Adds every combination of the grid.
  Trials& add_grid(const TrialGrid& grid);

  const std::vector<TrialConfig>& candidates() const { return candidates_; }
  const TrialsOptions& options() const { return options_; }

  /// Runs every candidate (samples along dim 0; targets with as many rows) and returns the
  /// report; prints progress and the table to options.out and writes options.output_dir's files.
  /// Throws only for bad input (no candidates, mismatched shapes, an unmeasurable limit);
  /// everything a candidate does wrong ends up in its row.
  TrialsReport run(const at::Tensor& train_data, const at::Tensor& train_targets,
                   const at::Tensor& val_data, const at::Tensor& val_targets);

  /// What a trial of `config` runs with, to repeat it as a real run: the Trainer's options, and
  /// the sample indices (int64, CPU, sorted) of the subset out of `num_samples`. The model is
  /// built right after torch::manual_seed(seed); the training loader is
  /// TensorLoaderOptions(micro_batch).shuffle(true).seed(seed) over the subset, the validation
  /// loader TensorLoaderOptions(val_batch_size, or micro_batch when 0) over the validation data.
  TrainerOptions trainer_options(const TrialConfig& config) const;
  at::Tensor subset_indices(int64_t num_samples) const;

 private:
  TrialsOptions options_;
  std::vector<std::pair<std::string, TaskFactory>> models_;
  std::vector<TrialConfig> candidates_;
};

}  // namespace frugal

// The command-line options the training examples share (named after TrainerOptions) and what
// they build: the TrainerOptions, the checkpoint callback, the loggers, AdamW with a cosine
// schedule, and a callback counting samples for samples/s. Each example adds its own options
// (data, model) and may change a default before add_trainer_options().
#pragma once

#include <frugal/frugal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace frugal_examples {

struct TrainerArgs {
  int64_t max_epochs = 10;
  int64_t max_steps = -1;
  int64_t batch_size = 64;
  double lr = 1e-3;
  double weight_decay = 1e-4;
  int64_t seed = 42;
  std::string limit_train_batches = "1.0";
  std::string limit_val_batches = "1.0";
  int64_t fast_dev_run = 0;
  std::string precision = "auto";
  int64_t accumulate_grad_batches = 1;
  double gradient_clip_val = 0.0;
  std::string default_root_dir = ".";
  std::string logger = "both";
  int64_t num_threads = 0;
  std::string metrics_json;
  bool no_progress_bar = false;
  bool deterministic = false;
  std::string accelerator = "auto";
  int64_t log_every_n_steps = 50;
  std::string ckpt_path;
  int64_t save_every_n_steps = 0;
  int64_t save_top_k = 1;
  std::string monitor = "val/acc";
  bool no_save_last = false;
  std::string max_time;
};

inline void add_trainer_options(CLI::App& app, TrainerArgs& a) {
  app.add_option("--max-epochs", a.max_epochs)->capture_default_str();
  app.add_option("--max-steps", a.max_steps, "optimizer steps (-1: no limit)")
      ->capture_default_str();
  app.add_option("--batch-size", a.batch_size)->capture_default_str();
  app.add_option("--lr", a.lr, "AdamW learning rate (cosine-annealed per epoch)")
      ->capture_default_str();
  app.add_option("--weight-decay", a.weight_decay)->capture_default_str();
  app.add_option("--seed", a.seed)->capture_default_str();
  app.add_option("--limit-train-batches", a.limit_train_batches, "fraction (0.1) or count (100)")
      ->capture_default_str();
  app.add_option("--limit-val-batches", a.limit_val_batches)->capture_default_str();
  app.add_option("--fast-dev-run", a.fast_dev_run, "run n batches of train/val/test")
      ->capture_default_str();
  app.add_option("--precision", a.precision, "auto, 32, bf16-mixed or 16-mixed")
      ->capture_default_str();
  app.add_option("--accumulate-grad-batches", a.accumulate_grad_batches)->capture_default_str();
  app.add_option("--gradient-clip-val", a.gradient_clip_val)->capture_default_str();
  app.add_option("--default-root-dir", a.default_root_dir)->capture_default_str();
  app.add_option("--logger", a.logger,
                 "files under DEFAULT_ROOT_DIR/frugal_logs/version_N: csv (metrics.csv, "
                 "hparams.yaml, report.html), tensorboard (event file), both or none")
      ->check(CLI::IsMember({"csv", "tensorboard", "both", "none"}))
      ->capture_default_str();
  app.add_option(
         "--num-threads", a.num_threads,
         "LibTorch intra-op threads (0: the CPUs this process may use; -1: LibTorch's own default)")
      ->capture_default_str();
  app.add_option("--accelerator", a.accelerator, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--log-every-n-steps", a.log_every_n_steps)->capture_default_str();
  app.add_option("--metrics-json", a.metrics_json, "write the final summary as JSON here");
  app.add_option("--ckpt-path", a.ckpt_path, "resume from a checkpoint: a path, last or best");
  app.add_option("--save-every-n-steps", a.save_every_n_steps,
                 "checkpoint every n optimizer steps (0: every epoch)")
      ->capture_default_str();
  app.add_option("--save-top-k", a.save_top_k, "keep the best k checkpoints (-1: all, 0: none)")
      ->capture_default_str();
  app.add_option("--monitor", a.monitor, "metric ranking checkpoints (\"\": none)")
      ->capture_default_str();
  app.add_flag("--no-save-last", a.no_save_last, "do not keep last.ckpt");
  app.add_option("--max-time", a.max_time, "wall-clock limit, DD:HH:MM:SS");
  app.add_flag("--no-progress-bar", a.no_progress_bar);
  app.add_flag("--deterministic", a.deterministic);
}

/// The TrainerOptions the flags name; refuses bad values naming the flag.
inline frugal::TrainerOptions trainer_options(const TrainerArgs& a) {
  FRUGAL_CHECK(a.num_threads >= -1, "--num-threads must be >= 0 (or -1), got ", a.num_threads);
  FRUGAL_CHECK(a.batch_size >= 1, "--batch-size must be >= 1, got ", a.batch_size);
  frugal::TrainerOptions options =
      frugal::TrainerOptions()
          .max_epochs(a.max_epochs)
          .max_steps(a.max_steps)
          .seed(a.seed)
          .deterministic(a.deterministic)
          .limit_train_batches(frugal::BatchLimit::parse(a.limit_train_batches))
          .limit_val_batches(frugal::BatchLimit::parse(a.limit_val_batches))
          .fast_dev_run(a.fast_dev_run)
          .precision(a.precision)
          .num_threads(a.num_threads)
          .accumulate_grad_batches(a.accumulate_grad_batches)
          .gradient_clip_val(a.gradient_clip_val)
          .default_root_dir(a.default_root_dir)
          .accelerator(a.accelerator)
          .log_every_n_steps(a.log_every_n_steps)
          .enable_progress_bar(!a.no_progress_bar);
  if (!a.max_time.empty()) options.max_time(a.max_time);
  return options;
}

/// Checkpoints under DEFAULT_ROOT_DIR/checkpoints, ranked by --monitor ("loss" in its name: lower
/// is better).
inline std::shared_ptr<frugal::ModelCheckpoint> checkpoint_callback(const TrainerArgs& a) {
  return std::make_shared<frugal::ModelCheckpoint>(
      frugal::ModelCheckpointOptions()
          .dirpath(a.default_root_dir + "/checkpoints")
          .filename(a.monitor.empty() ? "{epoch}-{step}" : "{epoch}-{step}-{" + a.monitor + ":.4f}")
          .monitor(a.monitor)
          .mode(a.monitor.find("loss") != std::string::npos ? "min" : "max")
          .save_top_k(a.save_top_k)
          .save_last(!a.no_save_last)
          .every_n_train_steps(a.save_every_n_steps));
}

/// The console logger and the files --logger asks for.
inline std::vector<std::shared_ptr<frugal::Logger>> loggers(const TrainerArgs& a) {
  std::vector<std::shared_ptr<frugal::Logger>> out = {std::make_shared<frugal::ConsoleLogger>()};
  for (auto& lg : frugal::make_file_loggers(a.logger, a.default_root_dir)) out.push_back(lg);
  return out;
}

/// AdamW(--lr, --weight-decay), its learning rate cosine-annealed over --max-epochs.
inline auto adamw_cosine(const TrainerArgs& a) {
  const int64_t epochs = std::max<int64_t>(1, a.max_epochs);
  return frugal::with_scheduler(frugal::AdamW(a.lr, a.weight_decay),
                                [epochs](torch::optim::Optimizer& opt) {
                                  return std::make_shared<frugal::CosineAnnealingLR>(opt, epochs);
                                });
}

/// Counts training samples, for samples/s.
struct SampleCounter : frugal::Callback {
  int64_t samples = 0;
  void on_train_batch_end(frugal::Trainer&, frugal::Task&, const at::Tensor&,
                          const frugal::Batch& batch, int64_t) override {
    samples += batch.size();
  }
};

}  // namespace frugal_examples

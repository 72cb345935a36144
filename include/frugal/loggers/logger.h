// Loggers: where metrics go. One small interface (as google/benchmark's reporters), several
// implementations, chosen by the user; the Trainer special-cases none of them.
//
//   frugal::Trainer trainer(options, callbacks,
//       {std::make_shared<frugal::CSVLogger>("runs"), std::make_shared<frugal::ConsoleLogger>()});
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace frugal {

class Logger {
 public:
  virtual ~Logger() = default;
  /// The run's hyper-parameters (trainer options, task hparams), once at the start of fit.
  virtual void log_hyperparams(const std::map<std::string, std::string>& /*params*/) {}
  /// Metrics of one step (training intervals) or one epoch end. `step` is the global step.
  virtual void log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                           int64_t epoch) = 0;
  /// Metrics of one epoch end (training epoch, validation, test). Default: log_metrics, so a
  /// logger that does not tell the two apart implements only log_metrics.
  virtual void log_epoch_metrics(const std::map<std::string, double>& metrics, int64_t step,
                                 int64_t epoch) {
    log_metrics(metrics, step, epoch);
  }
  /// Makes everything logged so far durable.
  virtual void flush() {}
  /// End of the run ("success", "failed", "interrupted"); flushes.
  virtual void finalize(const std::string& /*status*/) { flush(); }
  /// Folder the logger writes to, if any ("" for none).
  virtual std::string log_dir() const { return ""; }
};

/// Prints epoch-level metrics (and, if asked, step metrics) as plain lines, sorted by name:
/// `epoch 3 step 1200: train/acc=0.9123 val/loss=0.2501`. Default output: std::cout.
class ConsoleLogger : public Logger {
 public:
  explicit ConsoleLogger(std::ostream* out = nullptr, bool print_step_metrics = false);
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                   int64_t epoch) override;
  void log_epoch_metrics(const std::map<std::string, double>& metrics, int64_t step,
                         int64_t epoch) override;

 private:
  std::ostream* out_;
  bool print_step_metrics_;
};

struct CSVLoggerOptions {
  /* implicit */ CSVLoggerOptions(std::string save_dir = ".") : save_dir_(std::move(save_dir)) {}
  TORCH_ARG(std::string, save_dir);
  TORCH_ARG(std::string, name) = "frugal_logs";
  /// -1: next free version_N under save_dir/name.
  TORCH_ARG(int64_t, version) = -1;
  /// Rows are appended and flushed once this many global steps have passed since the last
  /// flush (Lightning: 100), and at every epoch end: a crash loses at most that interval.
  TORCH_ARG(int64_t, flush_logs_every_n_steps) = 100;
};

/// Writes `metrics.csv` (columns: epoch, step, then one per metric, as Lightning's CSVLogger) and
/// `hparams.yaml` into save_dir/name/version_N. Rows are flushed every few steps; when a new
/// metric appears the file is rewritten atomically with the wider header, so a crash never
/// leaves a half-written file.
class CSVLogger : public Logger {
 public:
  explicit CSVLogger(CSVLoggerOptions options = {});
  ~CSVLogger() override;
  void log_hyperparams(const std::map<std::string, std::string>& params) override;
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                   int64_t epoch) override;
  /// Epoch rows are flushed at once.
  void log_epoch_metrics(const std::map<std::string, double>& metrics, int64_t step,
                         int64_t epoch) override;
  void flush() override;
  std::string log_dir() const override { return dir_; }
  std::string metrics_path() const;
  /// N of the version_N folder.
  int64_t version() const { return version_; }

 private:
  void write_all();
  CSVLoggerOptions options_;
  std::string dir_;
  int64_t version_ = 0;
  std::vector<std::string> columns_;
  std::vector<std::map<std::string, std::string>> pending_;
  std::vector<std::map<std::string, std::string>> written_;
  std::map<std::string, std::string> hparams_;
  bool header_written_ = false;
  int64_t last_flush_step_ = 0;
  int64_t last_step_ = 0;
};

namespace detail {
/// Writes `content` to `path` atomically: temporary file in the same folder, fsync, rename,
/// fsync of the folder.
void write_file_atomically(const std::string& path, const std::string& content);
/// One CSV cell (RFC 4180): quoted when it holds a comma, quote or line break, quotes doubled.
std::string csv_cell(const std::string& text);
}  // namespace detail

}  // namespace frugal

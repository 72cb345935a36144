// TensorBoardLogger: scalars, hyper-parameters (the HParams tab) and text in TensorBoard's event
// file format, as Lightning's TensorBoardLogger writes them.
//
//   frugal::Trainer trainer(options, callbacks,
//       {std::make_shared<frugal::TensorBoardLogger>(frugal::TensorBoardLoggerOptions("runs"))});
//   // then: tensorboard --logdir runs
#pragma once

#include <frugal/loggers/logger.h>
#include <torch/arg.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace frugal {

struct TensorBoardLoggerOptions {
  /* implicit */ TensorBoardLoggerOptions(std::string save_dir = ".")
      : save_dir_(std::move(save_dir)) {}
  TORCH_ARG(std::string, save_dir);
  TORCH_ARG(std::string, name) = "frugal_logs";
  /// -1: next free version_N under save_dir/name (give the CSVLogger's version to share its
  /// folder; the Trainer's default loggers do).
  TORCH_ARG(int64_t, version) = -1;
};

/// Writes `events.out.tfevents.<time>.<host>.<pid>.<n>` into save_dir/name/version_N: TFRecord
/// framing, `Event` protobufs (`file_version` "brain.Event:2" first), one `simple_value` per
/// scalar, the hyper-parameters through the hparams plugin (session start at `log_hyperparams`,
/// experiment with the metric names and session end at `finalize`), text through the text plugin.
/// Every call's records are appended whole in one write and fsync'ed, so a crash loses at most
/// the records of the call in flight and never damages earlier ones.
class TensorBoardLogger : public Logger {
 public:
  explicit TensorBoardLogger(TensorBoardLoggerOptions options = {});
  ~TensorBoardLogger() override;
  void log_hyperparams(const std::map<std::string, std::string>& params) override;
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                   int64_t epoch) override;
  /// `text` under tag `<tag>/text_summary` (as torch.utils.tensorboard's add_text).
  void log_text(const std::string& tag, const std::string& text, int64_t step = 0);
  void flush() override;
  void finalize(const std::string& status) override;
  std::string log_dir() const override { return dir_; }
  /// The event file this logger appends to.
  const std::string& event_file() const { return path_; }

 private:
  void add_event(const std::string& event);
  TensorBoardLoggerOptions options_;
  std::string dir_;
  std::string path_;
  std::string pending_;  // whole records not yet on disk
  std::map<std::string, std::string> hparams_;
  std::vector<std::string> metric_tags_;  // in order of first appearance
  bool finalized_ = false;
};

/// The file loggers of `which` ("csv", "tensorboard", "both" or "none"; the examples' --logger)
/// under save_dir/frugal_logs/version_N, sharing one version folder: CSV first. Throws
/// frugal::Error naming the value and what is allowed, before creating anything. On a rank other
/// than 0 of a data-parallel launch (RANK, or SLURM_PROCID) it returns none: only rank 0 writes
/// logs. The Trainer's default loggers are make_file_loggers("both", default_root_dir).
std::vector<std::shared_ptr<Logger>> make_file_loggers(const std::string& which,
                                                       const std::string& save_dir);

namespace detail {
/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses: crc32c("123456789")
/// is 0xE3069283. `crc` continues an earlier value.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
/// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);
/// One TFRecord: u64 length (little-endian), masked CRC of the length, data, masked CRC of data.
std::string tfrecord(const std::string& data);

struct TFRecordFile {
  std::vector<std::string> records;  // every complete record, each CRC verified
  /// Bytes after the last complete record (a record cut short by a crash), 0 for a whole file.
  size_t trailing_bytes = 0;
};
/// Reads a TFRecord file: the complete records in order. Throws frugal::Error naming the file
/// and offset when a complete record's CRC does not match (corruption, not a cut).
TFRecordFile read_tfrecords(const std::string& path);
/// Next free version_N under `root` (0 when there is none), as CSVLogger and TensorBoardLogger
/// number their folders.
int64_t next_log_version(const std::string& root);
}  // namespace detail

}  // namespace frugal

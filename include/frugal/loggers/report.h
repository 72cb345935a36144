// The run report: one self-contained `report.html` (inline SVG plots, no script, no network) made
// from a run's `metrics.csv` and `hparams.yaml`. The Trainer writes it beside its CSV logs at the
// end of every fit; `frugal-report DIR` makes one for an existing run.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace frugal {

struct TrialsReport;

struct RunReportInfo {
  std::string title = "frugal run";
  /// Why training stopped ("" when it ran to max_epochs / max_steps or is unknown).
  std::string stop_reason;
  /// Vertical marks on the step plots: (global step, label), e.g. checkpoints, an early stop.
  std::vector<std::pair<int64_t, std::string>> marks;
  /// MemoryMonitor thresholds in MB drawn on the memory plot: (MB, label).
  std::vector<std::pair<double, std::string>> memory_thresholds_mb;
  /// Rows of the "Environment" table (hardware, LibTorch version, threads, ...).
  std::vector<std::pair<std::string, std::string>> environment;
};

/// This process's environment: CPU model and cores, memory, LibTorch version, intra-op threads,
/// CUDA devices.
std::vector<std::pair<std::string, std::string>> report_environment();

/// The HTML page for `metrics_csv` (the text of a CSVLogger's metrics.csv) and `hparams` (the
/// rows of its hparams.yaml, in order).
std::string render_run_report(const std::string& metrics_csv,
                              const std::vector<std::pair<std::string, std::string>>& hparams,
                              const RunReportInfo& info = {});

/// Reads `dir`/metrics.csv (required) and `dir`/hparams.yaml (optional), writes `dir`/report.html
/// atomically and returns its path. Throws frugal::Error naming the file when metrics.csv is
/// missing or malformed.
std::string write_run_report(const std::string& dir, const RunReportInfo& info = {});

/// The planner's page (`examples/plan` writes it as plan/report.html): accuracy against the
/// estimated seconds of a full epoch and against peak memory for every candidate that ran (scatter
/// charts, the limits as lines), and the table in rank order with the reasons candidates were left
/// out. Points are labelled with their row number in the table.
std::string render_trials_report(const TrialsReport& report);

namespace detail {
/// RFC 4180 rows (quoted cells, doubled quotes, line breaks inside quotes).
std::vector<std::vector<std::string>> parse_csv(const std::string& text);
/// `key: value` lines of a flat YAML map as CSVLogger writes it (plain or double-quoted scalars).
std::vector<std::pair<std::string, std::string>> parse_flat_yaml(const std::string& text);
}  // namespace detail

}  // namespace frugal

#include "frugal/loggers/report.h"

#include <fmt/format.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "frugal/budget/trials.h"
#include "frugal/error.h"
#include "frugal/loggers/logger.h"
#include "frugal/version.h"
#include "loggers/svg.h"

namespace frugal {

namespace fs = std::filesystem;

namespace detail {

std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string cell;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        cell += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cell += c;
      }
      continue;
    }
    any = true;
    if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(std::move(cell));
      cell.clear();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      row.push_back(std::move(cell));
      cell.clear();
      rows.push_back(std::move(row));
      row.clear();
      any = false;
    } else {
      cell += c;
    }
  }
  FRUGAL_CHECK(!quoted, "parse_csv: a quoted cell is not closed");
  if (any) {
    row.push_back(std::move(cell));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<std::pair<std::string, std::string>> parse_flat_yaml(const std::string& text) {
  auto unquote = [](std::string s) {
    if (s.size() < 2 || s.front() != '"' || s.back() != '"') return s;
    std::string out;
    for (size_t i = 1; i + 1 < s.size(); ++i) {
      if (s[i] == '\\' && i + 2 < s.size()) {
        const char n = s[++i];
        out += n == 'n' ? '\n' : n == 't' ? '\t' : n == 'r' ? '\r' : n;
      } else {
        out += s[i];
      }
    }
    return out;
  };
  std::vector<std::pair<std::string, std::string>> rows;
  std::istringstream in(text);
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    // The separator is the first ": " outside a quoted key.
    size_t sep = std::string::npos;
    if (line[0] == '"') {
      const size_t close = line.find("\": ");
      if (close != std::string::npos) sep = close + 1;
    } else {
      sep = line.find(": ");
    }
    FRUGAL_CHECK(sep != std::string::npos, "line ", number,
                 ": expected 'key: value' (a flat map, as CSVLogger writes), got '", line, "'");
    rows.emplace_back(unquote(line.substr(0, sep)), unquote(line.substr(sep + 2)));
  }
  return rows;
}

}  // namespace detail

namespace {

std::string esc(const std::string& s) { return svg::xml_escape(s); }

struct MetricTable {
  std::vector<std::string> names;  // metric columns (not epoch, step), in file order
  std::vector<int64_t> step, epoch;
  std::map<std::string, std::vector<double>> values;  // NaN where a row has no value
};

MetricTable read_metrics(const std::string& csv) {
  const auto rows = detail::parse_csv(csv);
  FRUGAL_CHECK(!rows.empty(),
               "run report: metrics.csv is empty (expected a header 'epoch,step,...')");
  const auto& header = rows[0];
  FRUGAL_CHECK(header.size() >= 2 && header[0] == "epoch" && header[1] == "step",
               "run report: metrics.csv must start with the columns 'epoch,step', got '",
               header.empty() ? "" : header[0], "'");
  MetricTable m;
  for (size_t c = 2; c < header.size(); ++c) m.names.push_back(header[c]);
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& row = rows[r];
    if (row.size() == 1 && row[0].empty()) continue;
    FRUGAL_CHECK(row.size() == header.size(), "run report: metrics.csv row ", r + 1, " has ",
                 row.size(), " cells, the header ", header.size());
    try {
      m.epoch.push_back(std::stoll(row[0]));
      m.step.push_back(std::stoll(row[1]));
    } catch (const std::exception&) {
      FRUGAL_CHECK(false, "run report: metrics.csv row ", r + 1, ": epoch '", row[0],
                   "' and step '", row[1], "' must be integers");
    }
    for (size_t c = 2; c < row.size(); ++c) {
      double v = std::nan("");
      if (!row[c].empty()) {
        char* end = nullptr;
        v = std::strtod(row[c].c_str(), &end);
        FRUGAL_CHECK(end && *end == '\0', "run report: metrics.csv row ", r + 1, ", column '",
                     header[c], "': '", row[c], "' is not a number");
      }
      m.values[header[c]].push_back(v);
    }
  }
  return m;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Which plot a metric belongs to.
std::string group_of(const std::string& name) {
  if (contains(name, "grad_norm")) return "grad";
  if (name.rfind("mem/", 0) == 0) return "memory";
  if (contains(name, "throughput") || contains(name, "per_sec") || contains(name, "/s")) {
    return "throughput";
  }
  if (name.rfind("lr", 0) == 0 || contains(name, "/lr") || contains(name, "learning_rate")) {
    return contains(name, "momentum") ? "other" : "lr";
  }
  if (contains(name, "loss")) return "loss";
  if (contains(name, "acc")) return "acc";
  return "other";
}

svg::Series by_step(const MetricTable& m, const std::string& name) {
  svg::Series s{name, {}};
  const auto& v = m.values.at(name);
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isfinite(v[i])) s.points.emplace_back(static_cast<double>(m.step[i]), v[i]);
  }
  return s;
}

// The last value of each epoch.
svg::Series by_epoch(const MetricTable& m, const std::string& name) {
  std::map<int64_t, double> last;
  const auto& v = m.values.at(name);
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isfinite(v[i])) last[m.epoch[i]] = v[i];
  }
  svg::Series s{name, {}};
  for (const auto& [e, value] : last) s.points.emplace_back(static_cast<double>(e), value);
  return s;
}

std::string table(const std::string& caption,
                  const std::vector<std::pair<std::string, std::string>>& rows) {
  std::string out = fmt::format("<table><caption>{}</caption>\n", esc(caption));
  for (const auto& [k, v] : rows) {
    out += fmt::format("<tr><th scope=\"row\">{}</th><td>{}</td></tr>\n", esc(k), esc(v));
  }
  return out + "</table>\n";
}

const char* kStyle = R"CSS(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:12px;
max-width:980px;color:#222;background:#fff}
h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px}
figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:4px;break-inside:avoid}
svg{display:block;max-width:100%;height:auto}
table{border-collapse:collapse;width:100%;margin:.5em 0;font-size:.9em}
caption{text-align:left;font-weight:bold;padding:.3em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top;word-break:break-word}
th{background:#f4f4f4;width:40%}
.wide{overflow-x:auto}.trials th{width:auto}.trials tr.out td{color:#666}
.trials th,.trials td{word-break:normal;white-space:nowrap}
.trials td:nth-child(3),.trials td:last-child{white-space:normal;min-width:10em}
.best{padding:.5em;background:#e8f4ea;border-left:4px solid #009e73}
.stop{padding:.5em;background:#fff4e5;border-left:4px solid #e69f00}
@media print{body{max-width:none;padding:0}.charts{display:block}figure{margin:0 0 8px;
page-break-inside:avoid}a{color:inherit;text-decoration:none}}
)CSS";

// The page up to its <h1>: no script, and a Content-Security-Policy that lets the page load
// nothing at all (only its inline style), so it works offline and leaks nothing when opened.
std::string page_head(const std::string& title) {
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src "
      "'unsafe-inline'\">\n<title>{0}</title>\n<style>{1}</style>\n</head>\n<body>\n<h1>{0}</h1>\n",
      esc(title), kStyle);
}
const char* const kPageEnd = "</body>\n</html>\n";

}  // namespace

std::vector<std::pair<std::string, std::string>> report_environment() {
  std::vector<std::pair<std::string, std::string>> env;
  std::string cpu;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  env.emplace_back("CPU", fmt::format("{} ({} logical cores)", cpu.empty() ? "unknown" : cpu,
                                      std::thread::hardware_concurrency()));
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) {
    env.emplace_back("Memory",
                     fmt::format("{:.1f} GiB", static_cast<double>(pages) * page / 1073741824.0));
  }
  env.emplace_back("CUDA devices", std::to_string(torch::cuda::device_count()));
  env.emplace_back("LibTorch", TORCH_VERSION);
  env.emplace_back("Intra-op threads", std::to_string(at::get_num_threads()));
  env.emplace_back("frugal", frugal::version());
  return env;
}

std::string render_run_report(const std::string& metrics_csv,
                              const std::vector<std::pair<std::string, std::string>>& hparams,
                              const RunReportInfo& info) {
  const MetricTable m = read_metrics(metrics_csv);
  std::map<std::string, std::vector<std::string>> groups;
  for (const auto& name : m.names) groups[group_of(name)].push_back(name);

  std::vector<svg::RefLine> marks;
  for (const auto& [step, label] : info.marks) {
    marks.push_back({label, static_cast<double>(step), true});
  }
  std::string charts;
  auto step_chart = [&](const std::string& group, const std::string& title,
                        const std::string& y_label, std::vector<svg::RefLine> extra = {}) {
    if (!groups.count(group)) return;
    svg::Chart c;
    c.title = title;
    c.x_label = "step";
    c.y_label = y_label;
    for (const auto& name : groups[group]) c.series.push_back(by_step(m, name));
    c.lines = marks;
    c.lines.insert(c.lines.end(), extra.begin(), extra.end());
    charts += "<figure>" + svg::line_chart(c) + "</figure>\n";
  };
  auto epoch_chart = [&](const std::string& group, const std::string& title,
                         const std::string& y_label) {
    if (!groups.count(group)) return;
    svg::Chart c;
    c.title = title;
    c.x_label = "epoch";
    c.integer_x = true;
    c.y_label = y_label;
    for (const auto& name : groups[group]) {
      auto s = by_epoch(m, name);
      if (!s.points.empty()) c.series.push_back(std::move(s));
    }
    charts += "<figure>" + svg::line_chart(c) + "</figure>\n";
  };
  step_chart("loss", "Loss by step", "loss");
  epoch_chart("loss", "Loss by epoch", "loss");
  step_chart("acc", "Accuracy by step", "accuracy");
  epoch_chart("acc", "Accuracy by epoch", "accuracy");
  step_chart("lr", "Learning rate", "learning rate");
  step_chart("grad", "Gradient norm", "norm");
  std::vector<svg::RefLine> thresholds;
  for (const auto& [mb, label] : info.memory_thresholds_mb)
    thresholds.push_back({label, mb, false});
  step_chart("memory", "Memory", "MB", thresholds);
  step_chart("throughput", "Throughput", "per second");
  step_chart("other", "Other metrics", "value");

  // Final metrics: the last value of each column.
  std::vector<std::pair<std::string, std::string>> finals;
  for (const auto& name : m.names) {
    const auto& v = m.values.at(name);
    for (size_t i = v.size(); i-- > 0;) {
      if (std::isfinite(v[i])) {
        finals.emplace_back(name,
                            fmt::format("{:.6g} (epoch {}, step {})", v[i], m.epoch[i], m.step[i]));
        break;
      }
    }
  }
  std::vector<std::pair<std::string, std::string>> run_rows;
  if (!m.step.empty()) {
    run_rows.emplace_back("Epochs", std::to_string(m.epoch.back() + 1));
    run_rows.emplace_back("Global steps", std::to_string(m.step.back()));
  }
  run_rows.emplace_back("Stop reason",
                        info.stop_reason.empty() ? "(none recorded)" : info.stop_reason);
  for (const auto& [step, label] : info.marks)
    run_rows.emplace_back(fmt::format("Step {}", step), label);

  std::string html = page_head(info.title);
  if (!info.stop_reason.empty()) {
    html += fmt::format("<p class=\"stop\">Stopped: {}</p>\n", esc(info.stop_reason));
  }
  html += "<h2>Plots</h2>\n<div class=\"charts\">\n" + charts + "</div>\n";
  html += "<h2>Run</h2>\n" + table("Run", run_rows) + table("Final metrics", finals);
  if (!info.environment.empty()) html += table("Environment", info.environment);
  if (hparams.empty()) {
    html += "<p>No configuration was logged (no hparams.yaml).</p>\n";
  } else {
    html += table("Configuration", hparams);
  }
  return html + kPageEnd;
}

std::string write_run_report(const std::string& dir, const RunReportInfo& info) {
  const std::string csv = (fs::path(dir) / "metrics.csv").string();
  std::ifstream in(csv, std::ios::binary);
  FRUGAL_CHECK(in, "run report: cannot read '", csv, "' (a CSVLogger's folder holds one)");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::pair<std::string, std::string>> hparams;
  const std::string yaml_path = (fs::path(dir) / "hparams.yaml").string();
  std::ifstream yaml(yaml_path, std::ios::binary);
  if (yaml) {
    try {
      hparams = detail::parse_flat_yaml(
          std::string((std::istreambuf_iterator<char>(yaml)), std::istreambuf_iterator<char>()));
    } catch (const Error& e) {
      throw Error(fmt::format("run report: '{}' {}", yaml_path, e.what()));
    }
  }
  std::string html;
  try {
    html = render_run_report(text, hparams, info);
  } catch (const Error& e) {
    throw Error(fmt::format("{} ('{}')", e.what(), csv));
  }
  const std::string path = (fs::path(dir) / "report.html").string();
  detail::write_file_atomically(path, html);
  return path;
}

// ---- the planner's page ----

namespace {

std::string cell_or_dash(double v, const char* format) {
  return std::isfinite(v) ? fmt::format(fmt::runtime(format), v) : std::string("-");
}

}  // namespace

std::string render_trials_report(const TrialsReport& report) {
  constexpr double kMiB = 1024.0 * 1024.0;
  const TrialsOptions& o = report.options;
  // One series per status, points labelled with their table row (1-based).
  svg::Chart by_time, by_memory;
  by_time.title = "Accuracy against time per epoch";
  by_time.x_label = fmt::format("estimated seconds per epoch over all {} training samples",
                                report.full_train_samples);
  by_memory.title = "Accuracy against peak memory";
  by_memory.x_label = report.device.rfind("cuda", 0) == 0 ? "peak reserved CUDA memory (MiB)"
                                                          : "peak RSS growth (MiB)";
  by_time.y_label = by_memory.y_label = o.accuracy_metric();
  for (auto status : {TrialResult::Status::kRanked, TrialResult::Status::kOverLimit,
                      TrialResult::Status::kFailed}) {
    svg::Series time_series{to_string(status), {}}, memory_series{to_string(status), {}};
    std::vector<std::string> time_labels, memory_labels;
    for (size_t i = 0; i < report.results.size(); ++i) {
      const TrialResult& r = report.results[i];
      if (r.status != status || !std::isfinite(r.val_acc)) continue;
      if (std::isfinite(r.full_epoch_seconds)) {
        time_series.points.emplace_back(r.full_epoch_seconds, r.val_acc);
        time_labels.push_back(std::to_string(i + 1));
      }
      if (r.peak_bytes >= 0) {
        memory_series.points.emplace_back(static_cast<double>(r.peak_bytes) / kMiB, r.val_acc);
        memory_labels.push_back(std::to_string(i + 1));
      }
    }
    if (!time_series.points.empty()) {
      by_time.series.push_back(std::move(time_series));
      by_time.point_labels.push_back(std::move(time_labels));
    }
    if (!memory_series.points.empty()) {
      by_memory.series.push_back(std::move(memory_series));
      by_memory.point_labels.push_back(std::move(memory_labels));
    }
  }
  if (o.max_epoch_seconds() > 0) by_time.lines.push_back({"limit", o.max_epoch_seconds(), true});
  if (o.max_memory_bytes() > 0) {
    by_memory.lines.push_back({"budget", o.max_memory_bytes() / kMiB, true});
  }

  std::string html = page_head("frugal plan: " + std::to_string(report.results.size()) +
                               " candidates on " + report.device);
  html += fmt::format(
      "<p>Each candidate trained {} epoch{} on {} of {} training samples (seed {}) and was "
      "validated on {} samples. Memory budget: {}; epoch time limit: {}. Score weights: memory "
      "{:g}, speed {:g}, accuracy {:g}, latency {:g}, size {:g}.</p>\n",
      o.epochs(), o.epochs() == 1 ? "" : "s", report.train_samples, report.full_train_samples,
      o.seed(), report.val_samples,
      o.max_memory_bytes() > 0 ? fmt::format("{:.1f} MiB", o.max_memory_bytes() / kMiB) : "none",
      o.max_epoch_seconds() > 0 ? fmt::format("{:g} s", o.max_epoch_seconds()) : "none",
      o.weight_memory(), o.weight_speed(), o.weight_accuracy(), o.weight_latency(),
      o.weight_size());
  if (const TrialResult* best = report.best()) {
    html += fmt::format("<p class=\"best\">Best: {}</p>\n", esc(best->config.describe()));
  } else {
    html += "<p class=\"stop\">No candidate ran within the limits.</p>\n";
  }
  html += "<h2>Plots</h2>\n<div class=\"charts\">\n<figure>" + svg::scatter_chart(by_time) +
          "</figure>\n<figure>" + svg::scatter_chart(by_memory) + "</figure>\n</div>\n";
  html +=
      "<h2>Candidates</h2>\n<div class=\"wide\"><table class=\"trials\"><caption>In rank order, "
      "then those over a limit, then the failed ones</caption>\n<tr><th>#</th><th>rank</th>"
      "<th>candidate</th><th>peak MiB</th><th>samples/s</th><th>full epoch s</th>"
      "<th>val acc</th><th>val loss</th><th>latency ms (1 / 64)</th><th>MB (fp32 / int8)</th>"
      "<th>score</th><th>status</th></tr>\n";
  for (size_t i = 0; i < report.results.size(); ++i) {
    const TrialResult& r = report.results[i];
    std::string status = to_string(r.status);
    if (!r.reason.empty()) status += ": " + r.reason;
    html += fmt::format(
        "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>\n",
        r.status == TrialResult::Status::kRanked ? "ranked" : "out", i + 1,
        r.rank > 0 ? std::to_string(r.rank) : "-", esc(r.config.describe()),
        r.peak_bytes >= 0 ? fmt::format("{:.1f}", static_cast<double>(r.peak_bytes) / kMiB) : "-",
        cell_or_dash(r.samples_per_second, "{:.0f}"), cell_or_dash(r.full_epoch_seconds, "{:.1f}"),
        cell_or_dash(r.val_acc, "{:.4f}"), cell_or_dash(r.val_loss, "{:.4f}"),
        cell_or_dash(r.latency_b1_ms, "{:.2f}"), cell_or_dash(r.latency_b64_ms, "{:.1f}"),
        r.model_bytes >= 0 ? fmt::format("{:.2f}", static_cast<double>(r.model_bytes) / 1e6) : "-",
        r.model_bytes_int8 >= 0
            ? fmt::format("{:.2f}", static_cast<double>(r.model_bytes_int8) / 1e6)
            : "-",
        cell_or_dash(r.score, "{:.3f}"), esc(status));
  }
  html += "</table></div>\n";
  return html + kPageEnd;
}

}  // namespace frugal

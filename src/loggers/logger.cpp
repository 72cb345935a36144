#include "frugal/loggers/logger.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>

#include "frugal/error.h"
#include "frugal/io/checkpoint.h"
#include "frugal/loggers/tensorboard.h"
#include "loggers/metric_format.h"

namespace frugal {

namespace fs = std::filesystem;

// ---- ConsoleLogger ----

namespace {
void print_metrics_line(std::ostream& out, const std::map<std::string, double>& metrics,
                        int64_t step, int64_t epoch) {
  // One string, one write: lines from several loggers or threads never interleave mid-line.
  out << fmt::format("epoch {} step {}: {}\n", epoch, step, detail::format_metrics(metrics))
      << std::flush;
}
}  // namespace

ConsoleLogger::ConsoleLogger(std::ostream* out, bool print_step_metrics)
    : out_(out), print_step_metrics_(print_step_metrics) {}

void ConsoleLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                                int64_t epoch) {
  if (!print_step_metrics_ || metrics.empty()) return;
  print_metrics_line(out_ ? *out_ : std::cout, metrics, step, epoch);
}

void ConsoleLogger::log_epoch_metrics(const std::map<std::string, double>& metrics, int64_t step,
                                      int64_t epoch) {
  if (metrics.empty()) return;
  print_metrics_line(out_ ? *out_ : std::cout, metrics, step, epoch);
}

// ---- file helpers ----

namespace detail {
namespace {

std::string errno_text(int error) { return std::strerror(error); }

[[noreturn]] void throw_io_error(const std::string& what, const std::string& path, int error) {
  throw Error(fmt::format("{} '{}': {}", what, path, errno_text(error)));
}

// Writes all of `data` to `fd` (write() may write less than asked); returns 0 or an errno value.
int write_fully(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

void fsync_folder(const fs::path& folder) {
  const std::string name = folder.empty() ? "." : folder.string();
  const int fd = ::open(name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_io_error("cannot open folder", name, errno);
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some file systems refuse fsync on folders (EINVAL); the rename itself is still atomic there.
  if (rc != 0 && error != EINVAL && error != EROFS)
    throw_io_error("cannot fsync folder", name, error);
}

// Appends whole lines in one write() call, then makes them durable.
void append_durably(const std::string& path, const std::string& content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) throw_io_error("cannot open for appending", path, errno);
  int error = write_fully(fd, content.data(), content.size());
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  ::close(fd);
  if (error != 0) throw_io_error("cannot append to", path, error);
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& content) {
  write_atomically(path, [&](const auto& sink) { sink(content.data(), content.size()); });
}

std::string csv_cell(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + '"';
}

}  // namespace detail

namespace detail {
// The next free N of version_N under `root` (0 when there is none).
int64_t next_log_version(const std::string& root_name) {
  const fs::path root(root_name);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return 0;
  int64_t next = 0;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("version_", 0) != 0 || !entry.is_directory(ec)) continue;
    const std::string digits = name.substr(8);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    try {
      next = std::max<int64_t>(next, std::stoll(digits) + 1);
    } catch (const std::out_of_range&) {
    }
  }
  return next;
}

}  // namespace detail

// ---- CSVLogger ----

namespace {

std::string csv_line(const std::vector<std::string>& columns,
                     const std::map<std::string, std::string>& row) {
  std::string line;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (i > 0) line += ',';
    auto it = row.find(columns[i]);
    if (it != row.end()) line += detail::csv_cell(it->second);
  }
  line += '\n';
  return line;
}

std::string csv_header(const std::vector<std::string>& columns) {
  std::string line;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (i > 0) line += ',';
    line += detail::csv_cell(columns[i]);
  }
  line += '\n';
  return line;
}

// A YAML plain scalar stays plain (so "10" reads back as a number and "true" as a bool) unless it
// would be invalid or read as something else structurally; then it is double-quoted.
bool yaml_needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  if (s.front() == ' ' || s.front() == '\t' || s.back() == ' ' || s.back() == '\t') return true;
  if (std::string(",[]{}#&*!|>'\"%@`").find(s.front()) != std::string::npos) return true;
  if ((s.front() == '-' || s.front() == '?' || s.front() == ':') &&
      (s.size() == 1 || s[1] == ' ')) {
    return true;
  }
  if (s.back() == ':') return true;
  if (s.find(": ") != std::string::npos || s.find(" #") != std::string::npos) return true;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

std::string yaml_scalar(const std::string& s) {
  if (!yaml_needs_quotes(s)) return s;
  std::string quoted = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        quoted += "\\\"";
        break;
      case '\\':
        quoted += "\\\\";
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\t':
        quoted += "\\t";
        break;
      case '\r':
        quoted += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          quoted += fmt::format("\\x{:02x}", c);
        } else {
          quoted += static_cast<char>(c);
        }
    }
  }
  return quoted + '"';
}

}  // namespace

CSVLogger::CSVLogger(CSVLoggerOptions options) : options_(std::move(options)) {
  FRUGAL_CHECK(options_.flush_logs_every_n_steps() >= 1,
               "CSVLoggerOptions: flush_logs_every_n_steps must be >= 1, got ",
               options_.flush_logs_every_n_steps());
  FRUGAL_CHECK(options_.version() >= -1,
               "CSVLoggerOptions: version must be >= 0 or -1 (next free), got ",
               options_.version());
  const fs::path root = fs::path(options_.save_dir()) / options_.name();
  const int64_t version =
      options_.version() >= 0 ? options_.version() : detail::next_log_version(root.string());
  version_ = version;
  dir_ = (root / fmt::format("version_{}", version)).string();
  // Created now, so that the next logger on the same root takes the next version.
  detail::ensure_writable_dir(dir_, /*create=*/true, "CSVLogger");
  columns_ = {"epoch", "step"};
}

CSVLogger::~CSVLogger() {
  try {
    flush();
  } catch (const std::exception& e) {
    std::cerr << "frugal: CSVLogger could not write its last rows: " << e.what() << "\n";
  }
}

std::string CSVLogger::metrics_path() const { return (fs::path(dir_) / "metrics.csv").string(); }

void CSVLogger::log_hyperparams(const std::map<std::string, std::string>& params) {
  for (const auto& [key, value] : params) hparams_[key] = value;
  std::string text;
  for (const auto& [key, value] : hparams_) {
    text += yaml_scalar(key);
    text += ": ";
    text += yaml_scalar(value);
    text += '\n';
  }
  detail::write_file_atomically((fs::path(dir_) / "hparams.yaml").string(), text);
}

void CSVLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                            int64_t epoch) {
  if (metrics.empty()) return;
  std::map<std::string, std::string> row;
  row["epoch"] = std::to_string(epoch);
  row["step"] = std::to_string(step);
  for (const auto& [name, value] : metrics) {
    if (name == "epoch" || name == "step") continue;  // the columns the logger owns
    row[name] = fmt::format("{}", value);             // shortest text that reads back exactly
  }
  pending_.push_back(std::move(row));
  last_step_ = step;
  if (step - last_flush_step_ >= options_.flush_logs_every_n_steps()) flush();
}

void CSVLogger::log_epoch_metrics(const std::map<std::string, double>& metrics, int64_t step,
                                  int64_t epoch) {
  log_metrics(metrics, step, epoch);
  flush();
}

void CSVLogger::flush() {
  last_flush_step_ = last_step_;
  if (pending_.empty()) return;
  // New names become columns in order of first appearance (within one row: by name).
  std::set<std::string> known(columns_.begin(), columns_.end());
  bool new_columns = false;
  for (const auto& row : pending_) {
    for (const auto& cell : row) {
      if (known.insert(cell.first).second) {
        columns_.push_back(cell.first);
        new_columns = true;
      }
    }
  }
  const size_t first_pending = written_.size();
  written_.insert(written_.end(), std::make_move_iterator(pending_.begin()),
                  std::make_move_iterator(pending_.end()));
  pending_.clear();

  if (!header_written_ || new_columns || !fs::exists(metrics_path())) {
    write_all();
    return;
  }
  std::string lines;
  for (size_t i = first_pending; i < written_.size(); ++i) lines += csv_line(columns_, written_[i]);
  try {
    detail::append_durably(metrics_path(), lines);
  } catch (...) {
    header_written_ = false;  // the next flush rewrites the whole file, these rows included
    throw;
  }
}

void CSVLogger::write_all() {
  std::string text = csv_header(columns_);
  for (const auto& row : written_) text += csv_line(columns_, row);
  header_written_ = false;  // until the file on disk has this header
  detail::write_file_atomically(metrics_path(), text);
  header_written_ = true;
}

}  // namespace frugal

// TensorBoard event files, written with a small protobuf encoder instead of protoc-generated code.
//
// Why a hand encoder: frugal writes five fixed messages (Event, Summary, SummaryMetadata,
// TensorProto, HParamsPluginData) and never parses them. The wire format for that is about 40
// lines (varints, length-delimited fields, fixed64/fixed32), and it keeps libprotobuf out of the
// link: PyPI's LibTorch 2.x carries its own protobuf symbols, and linking Debian's libprotobuf
// next to it risks two copies of one library in a process. Field numbers are TensorBoard's
// (tensorboard/compat/proto/{event,summary,tensor,tensor_shape}.proto,
// tensorboard/plugins/hparams/{api,plugin_data}.proto, google/protobuf/struct.proto); the test
// checks them with TensorBoard's own reader.
#include "frugal/loggers/tensorboard.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "distributed/data_parallel.h"
#include "frugal/error.h"

namespace frugal {

namespace fs = std::filesystem;

// ---- CRC-32C and TFRecord framing ----

namespace detail {
namespace {

std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
    table[i] = crc;
  }
  return table;
}

void put_u32_le(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

void put_u64_le(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t get_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_u64_le(out, data.size());
  put_u32_le(out, masked_crc32c(out.data(), 8));
  out += data;
  put_u32_le(out, masked_crc32c(data.data(), data.size()));
  return out;
}

TFRecordFile read_tfrecords(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FRUGAL_CHECK(in, "read_tfrecords: cannot open '", path, "'");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  TFRecordFile file;
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 12) break;  // header cut short
    const uint64_t length = get_le(p + pos, 8);
    const uint32_t length_crc = static_cast<uint32_t>(get_le(p + pos + 8, 4));
    FRUGAL_CHECK(length_crc == masked_crc32c(p + pos, 8), "read_tfrecords: '", path,
                 "': length CRC mismatch at offset ", pos);
    if (bytes.size() - pos - 12 < length + 4) break;  // data or its CRC cut short
    const uint32_t data_crc = static_cast<uint32_t>(get_le(p + pos + 12 + length, 4));
    FRUGAL_CHECK(data_crc == masked_crc32c(p + pos + 12, length), "read_tfrecords: '", path,
                 "': data CRC mismatch in the record at offset ", pos);
    file.records.emplace_back(bytes.data() + pos + 12, length);
    pos += 12 + length + 4;
  }
  file.trailing_bytes = bytes.size() - pos;
  return file;
}

}  // namespace detail

// ---- protobuf wire format (the subset the event file needs) ----

namespace {

class Proto {
 public:
  Proto& varint_field(int field, uint64_t v) {
    key(field, 0);
    varint(v);
    return *this;
  }
  Proto& double_field(int field, double v) {
    key(field, 1);
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    little_endian(bits, 8);
    return *this;
  }
  Proto& float_field(int field, float v) {
    key(field, 5);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    little_endian(bits, 4);
    return *this;
  }
  // Strings, bytes and embedded messages.
  Proto& bytes_field(int field, const std::string& bytes) {
    key(field, 2);
    varint(bytes.size());
    out_ += bytes;
    return *this;
  }
  Proto& message_field(int field, const Proto& message) { return bytes_field(field, message.out_); }
  const std::string& str() const { return out_; }

 private:
  void key(int field, int wire_type) { varint((static_cast<uint64_t>(field) << 3) | wire_type); }
  // The low `bytes` bytes of `bits`, least significant first (protobuf's fixed32/fixed64).
  void little_endian(uint64_t bits, int bytes) {
    for (int i = 0; i < bytes; ++i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);
  }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_ += static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    out_ += static_cast<char>(v);
  }
  std::string out_;
};

// event.proto: Event { double wall_time = 1; int64 step = 2; string file_version = 3;
// Summary summary = 5; }
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Proto event_header(int64_t step) {
  Proto event;
  event.double_field(1, now_seconds());
  if (step != 0) event.varint_field(2, static_cast<uint64_t>(step));
  return event;
}

// summary.proto: SummaryMetadata { PluginData plugin_data = 1; } PluginData { string plugin_name
// = 1; bytes content = 2; }
Proto plugin_metadata(const std::string& plugin, const std::string& content) {
  Proto data;
  data.bytes_field(1, plugin);
  if (!content.empty()) data.bytes_field(2, content);
  Proto metadata;
  metadata.message_field(1, data);
  return metadata;
}

// plugin_data.proto: HParamsPluginData { int32 version = 1; Experiment experiment = 2;
// SessionStartInfo session_start_info = 3; SessionEndInfo session_end_info = 4; } (version 0 is
// the default, so it is not written, as protobuf leaves it out.)
// The Event (at step 0) of one hparams plugin record: `content` in HParamsPluginData's `field`,
// under `tag`.
std::string hparams_event(const std::string& tag, int field, const Proto& content) {
  Proto plugin_data;
  plugin_data.message_field(field, content);
  // Summary.Value { string tag = 1; SummaryMetadata metadata = 9; }
  Proto value;
  value.bytes_field(1, tag);
  value.message_field(9, plugin_metadata("hparams", plugin_data.str()));
  Proto summary;
  summary.message_field(1, value);
  Proto event = event_header(0);
  event.message_field(5, summary);
  return event.str();
}

enum class HParamKind { kNumber, kBool, kString };

HParamKind kind_of(const std::string& text, double* number) {
  if (text == "true" || text == "false") return HParamKind::kBool;
  if (!text.empty() && text.find_first_not_of("0123456789+-.eE") == std::string::npos) {
    try {
      size_t used = 0;
      *number = std::stod(text, &used);
      if (used == text.size()) return HParamKind::kNumber;
    } catch (const std::exception&) {
    }
  }
  return HParamKind::kString;
}

std::atomic<int> event_file_counter{0};

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

}  // namespace

// ---- TensorBoardLogger ----

TensorBoardLogger::TensorBoardLogger(TensorBoardLoggerOptions options)
    : options_(std::move(options)) {
  FRUGAL_CHECK(options_.version() >= -1,
               "TensorBoardLoggerOptions: version must be >= 0 or -1 (next free), got ",
               options_.version());
  FRUGAL_CHECK(!options_.name().empty(), "TensorBoardLoggerOptions: name must not be empty");
  const fs::path root = fs::path(options_.save_dir()) / options_.name();
  const int64_t version =
      options_.version() >= 0 ? options_.version() : detail::next_log_version(root.string());
  dir_ = (root / fmt::format("version_{}", version)).string();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  FRUGAL_CHECK(!ec, "TensorBoardLogger: cannot create log folder '", dir_, "': ", ec.message());
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  path_ = (fs::path(dir_) / fmt::format("events.out.tfevents.{}.{}.{}.{}", seconds, host_name(),
                                        ::getpid(), event_file_counter++))
              .string();
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  FRUGAL_CHECK(fd >= 0, "TensorBoardLogger: cannot create '", path_, "': ", std::strerror(errno));
  ::close(fd);
  Proto first = event_header(0);
  first.bytes_field(3, "brain.Event:2");
  add_event(first.str());
  flush();
}

TensorBoardLogger::~TensorBoardLogger() {
  try {
    flush();
  } catch (const std::exception& e) {
    std::cerr << "frugal: TensorBoardLogger could not write its last records: " << e.what() << "\n";
  }
}

void TensorBoardLogger::add_event(const std::string& event) { pending_ += detail::tfrecord(event); }

void TensorBoardLogger::log_hyperparams(const std::map<std::string, std::string>& params) {
  for (const auto& [key, value] : params) hparams_[key] = value;
  // SessionStartInfo { map<string, google.protobuf.Value> hparams = 1; double start_time_secs =
  // 5; }; google.protobuf.Value { double number_value = 2; string string_value = 3; bool
  // bool_value = 4; }. A later call repeats the whole session start, as Lightning does.
  Proto start;
  for (const auto& [key, text] : hparams_) {
    double number = 0;
    Proto value;
    switch (kind_of(text, &number)) {
      case HParamKind::kNumber:
        value.double_field(2, number);
        break;
      case HParamKind::kBool:
        value.varint_field(4, text == "true" ? 1 : 0);
        break;
      case HParamKind::kString:
        value.bytes_field(3, text);
        break;
    }
    Proto entry;  // map entry: key = 1, value = 2
    entry.bytes_field(1, key).message_field(2, value);
    start.message_field(1, entry);
  }
  start.double_field(5, now_seconds());
  add_event(hparams_event("_hparams_/session_start_info", 3, start));
  flush();
}

void TensorBoardLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                                    int64_t /*epoch*/) {
  if (metrics.empty()) return;
  // One event per scalar, as SummaryWriter.add_scalar writes them. Summary { repeated Value
  // value = 1; } Value { string tag = 1; float simple_value = 2; }
  for (const auto& [tag, number] : metrics) {
    if (std::find(metric_tags_.begin(), metric_tags_.end(), tag) == metric_tags_.end()) {
      metric_tags_.push_back(tag);
    }
    Proto value;
    value.bytes_field(1, tag).float_field(2, static_cast<float>(number));
    Proto summary;
    summary.message_field(1, value);
    Proto event = event_header(step);
    event.message_field(5, summary);
    add_event(event.str());
  }
  flush();
}

void TensorBoardLogger::log_text(const std::string& tag, const std::string& text, int64_t step) {
  FRUGAL_CHECK(!tag.empty(), "TensorBoardLogger::log_text: the tag must not be empty");
  // tensor.proto: TensorProto { DataType dtype = 1 (DT_STRING = 7); TensorShapeProto
  // tensor_shape = 2; repeated bytes string_val = 8; } TensorShapeProto { repeated Dim dim = 2; }
  // Dim { int64 size = 1; }. The text plugin's content is TextPluginData(version=0): empty.
  Proto dim;
  dim.varint_field(1, 1);
  Proto shape;
  shape.message_field(2, dim);
  Proto tensor;
  tensor.varint_field(1, 7).message_field(2, shape).bytes_field(8, text);
  Proto value;
  value.bytes_field(1, tag + "/text_summary")
      .message_field(9, plugin_metadata("text", ""))
      .message_field(8, tensor);
  Proto summary;
  summary.message_field(1, value);
  Proto event = event_header(step);
  event.message_field(5, summary);
  add_event(event.str());
  flush();
}

void TensorBoardLogger::flush() {
  if (pending_.empty()) return;
  // One write of whole records, then fsync: a crash leaves complete records and at most one cut
  // record at the end, which readers (TensorBoard's included) skip. A failed write (disk full) is
  // cut back to the last whole record and its records stay pending: the next flush appends them
  // whole, instead of after a torn record that would end every reader there.
  const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  FRUGAL_CHECK(fd >= 0, "TensorBoardLogger: cannot open '", path_, "': ", std::strerror(errno));
  const off_t whole = ::lseek(fd, 0, SEEK_END);
  const char* data = pending_.data();
  size_t left = pending_.size();
  int error = 0;
  while (left > 0) {
    const ssize_t n = ::write(fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = errno;
      break;
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  if (error != 0 && whole >= 0 && ::ftruncate(fd, whole) != 0) {
    std::fprintf(stderr, "TensorBoardLogger: could not cut '%s' back to %lld bytes: %s\n",
                 path_.c_str(), static_cast<long long>(whole), std::strerror(errno));
  }
  ::close(fd);
  FRUGAL_CHECK(error == 0, "TensorBoardLogger: cannot append to '", path_,
               "': ", std::strerror(error));
  pending_.clear();
}

void TensorBoardLogger::finalize(const std::string& status) {
  if (finalized_) return flush();
  finalized_ = true;
  // Experiment { repeated HParamInfo hparam_infos = 4; repeated MetricInfo metric_infos = 5; }
  // HParamInfo { string name = 1; DataType type = 4 (STRING 1, BOOL 2, FLOAT64 3); }
  // MetricInfo { MetricName name = 1; } MetricName { string group = 1; string tag = 2; }
  if (!hparams_.empty()) {
    Proto experiment;
    for (const auto& [key, text] : hparams_) {
      double number = 0;
      const HParamKind kind = kind_of(text, &number);
      Proto info;
      info.bytes_field(1, key).varint_field(4, kind == HParamKind::kNumber ? 3
                                               : kind == HParamKind::kBool ? 2
                                                                           : 1);
      experiment.message_field(4, info);
    }
    for (const auto& tag : metric_tags_) {
      Proto name;
      name.bytes_field(2, tag);
      Proto info;
      info.message_field(1, name);
      experiment.message_field(5, info);
    }
    add_event(hparams_event("_hparams_/experiment", 2, experiment));
  }
  // SessionEndInfo { Status status = 1 (SUCCESS 1, FAILURE 2, UNKNOWN 0); double end_time_secs
  // = 2; }
  Proto end;
  end.varint_field(1, status == "success" ? 1 : status == "failed" ? 2 : 0);
  end.double_field(2, now_seconds());
  add_event(hparams_event("_hparams_/session_end_info", 4, end));
  flush();
}

std::vector<std::shared_ptr<Logger>> make_file_loggers(const std::string& which,
                                                       const std::string& save_dir) {
  FRUGAL_CHECK(which == "csv" || which == "tensorboard" || which == "both" || which == "none",
               "logger must be csv, tensorboard, both or none, got '", which, "'");
  std::vector<std::shared_ptr<Logger>> loggers;
  // Only rank 0 writes logs (as the Trainer, which drops the loggers of the other ranks): made on
  // every rank, the loggers would create a folder and an event file per rank.
  if (const auto env = detail::read_distributed_env(); env && env->rank != 0) return loggers;
  int64_t version = -1;
  if (which == "csv" || which == "both") {
    auto csv = std::make_shared<CSVLogger>(CSVLoggerOptions(save_dir));
    version = csv->version();
    loggers.push_back(std::move(csv));
  }
  if (which == "tensorboard" || which == "both") {
    loggers.push_back(
        std::make_shared<TensorBoardLogger>(TensorBoardLoggerOptions(save_dir).version(version)));
  }
  return loggers;
}

}  // namespace frugal

// TensorBoardLogger: CRC-32C, TFRecord framing, the Event/Summary encoding (checked by a small
// decoder here and by TensorBoard's own EventAccumulator when the venv has it), crash safety,
// and the Trainer's default loggers.
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "disk_full.h"
#include "test_support.h"

namespace fs = std::filesystem;
using frugal::testing::error_message;
using frugal::testing::temp_dir;

namespace {

// ---- a minimal protobuf decoder: enough to read back what the logger writes ----

struct Field {
  int number = 0;
  int wire = 0;
  uint64_t varint = 0;  // wire 0, 1 (bits), 5 (bits)
  std::string bytes;    // wire 2
};

std::vector<Field> decode(const std::string& s) {
  std::vector<Field> fields;
  size_t pos = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (pos >= s.size()) throw std::runtime_error("varint past the end");
      const auto b = static_cast<unsigned char>(s[pos++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (pos < s.size()) {
    const uint64_t key = varint();
    Field f;
    f.number = static_cast<int>(key >> 3);
    f.wire = static_cast<int>(key & 7);
    if (f.wire == 0) {
      f.varint = varint();
    } else if (f.wire == 1 || f.wire == 5) {
      const int n = f.wire == 1 ? 8 : 4;
      if (pos + n > s.size()) throw std::runtime_error("fixed past the end");
      std::memcpy(&f.varint, s.data() + pos, n);
      pos += n;
    } else if (f.wire == 2) {
      const uint64_t n = varint();
      if (pos + n > s.size()) throw std::runtime_error("bytes past the end");
      f.bytes = s.substr(pos, n);
      pos += n;
    } else {
      throw std::runtime_error("unexpected wire type");
    }
    fields.push_back(f);
  }
  return fields;
}

const Field* find(const std::vector<Field>& fields, int number) {
  for (const auto& f : fields) {
    if (f.number == number) return &f;
  }
  return nullptr;
}

double as_double(const Field& f) {
  double d;
  std::memcpy(&d, &f.varint, 8);
  return d;
}

float as_float(const Field& f) {
  const auto bits = static_cast<uint32_t>(f.varint);
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

struct Scalar {
  std::string tag;
  int64_t step;
  float value;
};

// Event { wall_time 1, step 2, file_version 3, summary 5 }, Summary { value 1 },
// Value { tag 1, simple_value 2 }.
std::vector<Scalar> scalars_of(const std::vector<std::string>& records) {
  std::vector<Scalar> out;
  for (const auto& record : records) {
    const auto event = decode(record);
    const Field* summary = find(event, 5);
    if (!summary) continue;
    const Field* step = find(event, 2);
    for (const auto& value : decode(summary->bytes)) {
      const auto v = decode(value.bytes);
      const Field* simple = find(v, 2);
      if (simple && simple->wire == 5) {
        out.push_back(
            {find(v, 1)->bytes, step ? static_cast<int64_t>(step->varint) : 0, as_float(*simple)});
      }
    }
  }
  return out;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) {
      files.push_back(e.path().string());
    }
  }
  return files;
}

void write_sample_run(frugal::TensorBoardLogger& logger) {
  logger.log_hyperparams({{"lr", "0.1"}, {"optimizer", "SGD"}, {"deterministic", "true"}});
  logger.log_metrics({{"train/loss", 1.5}}, 4, 0);
  logger.log_metrics({{"train/loss", 1.25}}, 8, 0);
  logger.log_epoch_metrics({{"val/acc", 0.5}, {"val/loss", 1.125}}, 8, 0);
  logger.log_metrics({{"train/loss", 0.75}}, 12, 1);
  logger.log_text("notes", "first run", 12);
  logger.finalize("success");
}

}  // namespace

// ---- CRC-32C ----

TEST(Crc32c, MatchesKnownVectors) {
  // RFC 3720 (iSCSI) B.4 test vectors and the usual check value.
  EXPECT_EQ(frugal::detail::crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(frugal::detail::crc32c("", 0), 0u);
  const std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(frugal::detail::crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(frugal::detail::crc32c(ones.data(), 32), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending += static_cast<char>(i);
  EXPECT_EQ(frugal::detail::crc32c(ascending.data(), 32), 0x46DD794Eu);
  // Continuing a CRC gives the CRC of the concatenation.
  EXPECT_EQ(frugal::detail::crc32c("6789", 4, frugal::detail::crc32c("12345", 5)), 0xE3069283u);
}

TEST(Crc32c, MaskedAsTFRecordDoes) {
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(frugal::detail::masked_crc32c("123456789", 9),
            ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TFRecord, FramesLengthAndData) {
  const std::string rec = frugal::detail::tfrecord("abc");
  ASSERT_EQ(rec.size(), 8u + 4u + 3u + 4u);
  EXPECT_EQ(rec.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(rec.substr(12, 3), "abc");
  uint32_t length_crc, data_crc;
  std::memcpy(&length_crc, rec.data() + 8, 4);
  std::memcpy(&data_crc, rec.data() + 15, 4);
  EXPECT_EQ(length_crc, frugal::detail::masked_crc32c(rec.data(), 8));
  EXPECT_EQ(data_crc, frugal::detail::masked_crc32c("abc", 3));
}

// ---- the logger ----

TEST(TensorBoardLogger, WritesOneEventFileInTheVersionFolder) {
  const std::string dir = temp_dir("tb_file");
  frugal::TensorBoardLogger first(frugal::TensorBoardLoggerOptions(dir).name("run"));
  frugal::TensorBoardLogger second(frugal::TensorBoardLoggerOptions(dir).name("run"));
  EXPECT_EQ(first.log_dir(), (fs::path(dir) / "run" / "version_0").string());
  EXPECT_EQ(second.log_dir(), (fs::path(dir) / "run" / "version_1").string());
  const auto files = event_files(first.log_dir());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0], first.event_file());
  // events.out.tfevents.<time>.<host>.<pid>.<n>
  const std::string name = fs::path(files[0]).filename().string();
  EXPECT_NE(name.find("." + std::to_string(::getpid()) + "."), std::string::npos) << name;
  // The first record is file_version "brain.Event:2", on disk at once.
  const auto file = frugal::detail::read_tfrecords(files[0]);
  ASSERT_EQ(file.records.size(), 1u);
  EXPECT_EQ(file.trailing_bytes, 0u);
  const auto event = decode(file.records[0]);
  ASSERT_NE(find(event, 3), nullptr);
  EXPECT_EQ(find(event, 3)->bytes, "brain.Event:2");
  const double wall = as_double(*find(event, 1));
  EXPECT_NEAR(wall, static_cast<double>(std::time(nullptr)), 60.0);
}

TEST(TensorBoardLogger, RejectsBadOptions) {
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "version", error_message([] {
        frugal::TensorBoardLogger(frugal::TensorBoardLoggerOptions(temp_dir("tb_bad")).version(-2));
      }));
}

TEST(TensorBoardLogger, RoundTripEveryRecordCrcAndScalar) {
  const std::string dir = temp_dir("tb_roundtrip");
  frugal::TensorBoardLogger logger(frugal::TensorBoardLoggerOptions(dir).name("run"));
  write_sample_run(logger);
  const auto file = frugal::detail::read_tfrecords(logger.event_file());  // verifies each CRC
  EXPECT_EQ(file.trailing_bytes, 0u);
  // file_version, session start, 5 scalars, text, experiment, session end.
  ASSERT_EQ(file.records.size(), 10u);
  const auto scalars = scalars_of(file.records);
  ASSERT_EQ(scalars.size(), 5u);
  const std::vector<std::tuple<std::string, int64_t, float>> expected = {{"train/loss", 4, 1.5f},
                                                                         {"train/loss", 8, 1.25f},
                                                                         {"val/acc", 8, 0.5f},
                                                                         {"val/loss", 8, 1.125f},
                                                                         {"train/loss", 12, 0.75f}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(scalars[i].tag, std::get<0>(expected[i]));
    EXPECT_EQ(scalars[i].step, std::get<1>(expected[i]));
    EXPECT_EQ(scalars[i].value, std::get<2>(expected[i]));
  }
  // The hparams records carry plugin "hparams": Value.metadata (9) .plugin_data (1) .plugin_name.
  int hparams_records = 0;
  for (const auto& record : file.records) {
    const auto event = decode(record);  // (find returns pointers into these vectors)
    const Field* summary = find(event, 5);
    if (!summary) continue;
    const auto values = decode(summary->bytes);
    const auto value = decode(find(values, 1)->bytes);
    const Field* metadata = find(value, 9);
    if (!metadata) continue;
    const auto metadata_fields = decode(metadata->bytes);
    const auto plugin_data = decode(find(metadata_fields, 1)->bytes);
    const std::string plugin = find(plugin_data, 1)->bytes;
    if (plugin == "hparams") ++hparams_records;
    if (plugin == "text") {
      EXPECT_EQ(find(value, 1)->bytes, "notes/text_summary");
      const auto tensor = decode(find(value, 8)->bytes);
      EXPECT_EQ(find(tensor, 1)->varint, 7u);  // DT_STRING
      EXPECT_EQ(find(tensor, 8)->bytes, "first run");
    }
  }
  EXPECT_EQ(hparams_records, 3);
}

TEST(TensorBoardLogger, ACutRecordLosesOnlyItselfACorruptOneIsNamed) {
  const std::string dir = temp_dir("tb_cut");
  std::string path;
  {
    frugal::TensorBoardLogger logger(frugal::TensorBoardLoggerOptions(dir).name("run"));
    logger.log_metrics({{"a", 1.0}}, 1, 0);
    logger.log_metrics({{"a", 2.0}}, 2, 0);
    path = logger.event_file();
  }
  const auto whole = frugal::detail::read_tfrecords(path);
  ASSERT_EQ(whole.records.size(), 3u);
  const auto size = fs::file_size(path);
  const auto last = whole.records.back().size() + 16;
  // A crash in the middle of the last write: every cut point keeps the complete prefix.
  for (uintmax_t cut : {size - 1, size - 4, size - last / 2, size - last + 5}) {
    const std::string copy = path + ".cut";
    fs::copy_file(path, copy, fs::copy_options::overwrite_existing);
    fs::resize_file(copy, cut);
    const auto file = frugal::detail::read_tfrecords(copy);
    ASSERT_EQ(file.records.size(), 2u) << "cut at " << cut;
    EXPECT_EQ(file.records,
              std::vector<std::string>(whole.records.begin(), whole.records.end() - 1));
    EXPECT_EQ(file.trailing_bytes, cut - (size - last));
    const auto scalars = scalars_of(file.records);
    ASSERT_EQ(scalars.size(), 1u);
    EXPECT_EQ(scalars[0].value, 1.0f);
  }
  // A flipped byte inside a complete record is corruption, not a cut: the reader says where.
  std::string bytes = frugal::testing::read_text(path);
  bytes[bytes.size() - last + 14] ^= 0x01;
  const std::string bad = path + ".bad";
  std::ofstream(bad, std::ios::binary) << bytes;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "data CRC mismatch",
                      error_message([&] { frugal::detail::read_tfrecords(bad); }));
}

// ---- TensorBoard's own reader ----

#ifndef FRUGAL_VENV_PYTHON
#define FRUGAL_VENV_PYTHON ".deps/venv/bin/python"
#endif

namespace {

const char* kReaderScript = R"PY(
import sys
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
except ImportError as e:
    print("MISSING", e)
    sys.exit(0)
for path in sys.argv[1:]:
    ea = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    print("FILE", path)
    for tag in sorted(ea.Tags()["scalars"]):
        for e in ea.Scalars(tag):
            print("SCALAR", tag, e.step, repr(e.value))
    for tag, content in sorted(ea.PluginTagToContent("hparams").items()):
        d = plugin_data_pb2.HParamsPluginData.FromString(content)
        kind = d.WhichOneof("data")
        print("HPARAMS", tag, kind)
        if kind == "session_start_info":
            for k, v in sorted(d.session_start_info.hparams.items()):
                print("HPARAM", k, v.WhichOneof("kind"), getattr(v, v.WhichOneof("kind")))
        elif kind == "experiment":
            for m in d.experiment.metric_infos:
                print("METRIC", m.name.tag)
        elif kind == "session_end_info":
            print("STATUS", d.session_end_info.status)
    for tag in ea.Tags()["tensors"]:
        if tag.endswith("/text_summary"):
            print("TEXT", tag, ea.Tensors(tag)[0].tensor_proto.string_val[0].decode())
)PY";

// Runs the reader on `files`; "" (and a GTEST_SKIP message in *skip) when it cannot run.
std::string tensorboard_read(const std::vector<std::string>& files, std::string* skip) {
  const std::string python = FRUGAL_VENV_PYTHON;
  if (!fs::exists(python)) {
    *skip = "no venv at " + python + " (python3 -m venv .deps/venv && pip install tensorboard)";
    return "";
  }
  const std::string dir = temp_dir("tb_reader");
  const std::string script = (fs::path(dir) / "read.py").string();
  std::ofstream(script) << kReaderScript;
  std::string args = frugal::testing::shell_quote(script);
  for (const auto& f : files) args += " " + frugal::testing::shell_quote(f);
  const auto run = frugal::testing::run_program(python, args, dir, "reader");
  if (run.exit_code != 0) {
    ADD_FAILURE() << run.describe();
    return "";
  }
  if (run.out.rfind("MISSING", 0) == 0) {
    *skip = "the tensorboard package is not importable in " + python + ": " + run.out;
    return "";
  }
  return run.out;
}

}  // namespace

TEST(TensorBoardLogger, TensorBoardsEventAccumulatorReadsEverything) {
  const std::string dir = temp_dir("tb_python");
  frugal::TensorBoardLogger logger(frugal::TensorBoardLoggerOptions(dir).name("run"));
  write_sample_run(logger);
  std::string skip;
  const std::string out = tensorboard_read({logger.event_file()}, &skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  const std::string expected = "FILE " + logger.event_file() +
                               "\n"
                               "SCALAR train/loss 4 1.5\n"
                               "SCALAR train/loss 8 1.25\n"
                               "SCALAR train/loss 12 0.75\n"
                               "SCALAR val/acc 8 0.5\n"
                               "SCALAR val/loss 8 1.125\n"
                               "HPARAMS _hparams_/experiment experiment\n"
                               "METRIC train/loss\n"
                               "METRIC val/acc\n"
                               "METRIC val/loss\n"
                               "HPARAMS _hparams_/session_end_info session_end_info\n"
                               "STATUS 1\n"
                               "HPARAMS _hparams_/session_start_info session_start_info\n"
                               "HPARAM deterministic bool_value True\n"
                               "HPARAM lr number_value 0.1\n"
                               "HPARAM optimizer string_value SGD\n"
                               "TEXT notes/text_summary first run\n";
  EXPECT_EQ(out, expected);
}

// ---- with the Trainer ----

TEST(TensorBoardLogger, TrainerDefaultWritesCsvAndTensorBoardInOneFolder) {
  const std::string dir = temp_dir("tb_fit");
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  frugal::Classifier task(net, frugal::SGD(0.1));
  auto train = frugal::testing::make_toy_data(64, 8, 3, 0);
  auto val = frugal::testing::make_toy_data(16, 8, 3, 1);
  auto train_loader =
      std::make_shared<frugal::TensorLoader>(train.x, train.y, frugal::TensorLoaderOptions(8));
  auto val_loader =
      std::make_shared<frugal::TensorLoader>(val.x, val.y, frugal::TensorLoaderOptions(8));
  std::string log_dir;
  {
    frugal::Trainer trainer(
        frugal::testing::quiet_options(dir).logger(true).max_epochs(2).log_every_n_steps(4));
    ASSERT_EQ(trainer.loggers().size(), 2u);
    trainer.fit(task, train_loader, val_loader);
    log_dir = trainer.log_dir();
    EXPECT_EQ(trainer.loggers()[0]->log_dir(), trainer.loggers()[1]->log_dir());
  }
  EXPECT_TRUE(fs::exists(fs::path(log_dir) / "metrics.csv"));
  const auto files = event_files(log_dir);
  ASSERT_EQ(files.size(), 1u);
  const auto scalars = scalars_of(frugal::detail::read_tfrecords(files[0]).records);
  // train/loss at steps 4, 8, 12, 16; per epoch val/acc, val/loss, train/acc (and what else the
  // Classifier logs at epoch end): every scalar of the CSV is there with its step.
  std::map<std::string, std::vector<int64_t>> steps;
  for (const auto& s : scalars) steps[s.tag].push_back(s.step);
  EXPECT_EQ(steps["train/loss"], (std::vector<int64_t>{4, 8, 12, 16}));
  EXPECT_EQ(steps["val/acc"], (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(steps["val/loss"], (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(steps["train/acc"], (std::vector<int64_t>{8, 16}));
  std::string skip;
  const std::string out = tensorboard_read(files, &skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  EXPECT_NE(out.find("SCALAR train/loss 16 "), std::string::npos) << out;
  EXPECT_NE(out.find("HPARAM max_epochs number_value 2.0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("STATUS 1\n"), std::string::npos) << out;
}

// Disk full while records are appended: RLIMIT_FSIZE makes write() fail part-way (EFBIG), as a
// full disk does (ENOSPC). The file is cut back to its last whole record, the error names it,
// and the records that failed are appended whole by the next flush once there is space.
TEST(TensorBoardLogger, DiskFullKeepsWholeRecordsAndRetriesTheFailedOnes) {
  const std::string dir = temp_dir("tb_disk_full");
  frugal::TensorBoardLogger logger(frugal::TensorBoardLoggerOptions().save_dir(dir));
  logger.log_metrics({{"train/loss", 1.5}}, 1, 0);
  const std::string path = logger.event_file();
  const auto whole = fs::file_size(path);
  const size_t records = frugal::detail::read_tfrecords(path).records.size();

  std::string message;
  frugal::testing::with_disk_full_after(whole + 10, [&] {  // less than one more record
    message = error_message([&] { logger.log_metrics({{"train/loss", 1.25}}, 2, 0); });
  });
  const auto after_failure = fs::file_size(path);

  EXPECT_NE(message.find("cannot append to '" + path + "'"), std::string::npos) << message;
  EXPECT_NE(message.find("File too large"), std::string::npos) << message;
  EXPECT_EQ(after_failure, whole) << "cut back to the last whole record";
  logger.log_metrics({{"train/loss", 1.0}}, 3, 0);  // flushes
  const auto file = frugal::detail::read_tfrecords(path);
  EXPECT_EQ(file.trailing_bytes, 0u);
  ASSERT_EQ(file.records.size(), records + 2) << "the failed record, then the next one";
  std::vector<int64_t> steps;
  for (size_t k = records; k < file.records.size(); ++k) {
    for (const Field& f : decode(file.records[k])) {
      if (f.number == 2) steps.push_back(static_cast<int64_t>(f.varint));  // Event.step
    }
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 3}));
}

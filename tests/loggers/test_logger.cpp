// ConsoleLogger, CSVLogger and the atomic file write they rely on.
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "test_support.h"

namespace fs = std::filesystem;
using frugal::testing::error_message;
using frugal::testing::temp_dir;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::set<std::string> entries(const std::string& folder) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

frugal::CSVLoggerOptions csv_options(const std::string& dir, int64_t flush_every = 100) {
  return frugal::CSVLoggerOptions(dir).name("run").flush_logs_every_n_steps(flush_every);
}

}  // namespace

// ---- ConsoleLogger ----

TEST(ConsoleLogger, PrintsEpochMetricsAsOneLineSortedByName) {
  std::ostringstream out;
  frugal::ConsoleLogger logger(&out);
  logger.log_epoch_metrics({{"val/loss", 0.25012}, {"train/acc", 0.91234}}, 1200, 3);
  EXPECT_EQ(out.str(), "epoch 3 step 1200: train/acc=0.9123 val/loss=0.2501\n");
}

TEST(ConsoleLogger, StepMetricsOnlyWhenAsked) {
  std::ostringstream quiet_out;
  frugal::ConsoleLogger quiet(&quiet_out);
  quiet.log_metrics({{"train/loss", 0.5}}, 10, 0);
  EXPECT_EQ(quiet_out.str(), "");

  std::ostringstream out;
  frugal::ConsoleLogger verbose(&out, /*print_step_metrics=*/true);
  verbose.log_metrics({{"train/loss", 0.5}}, 10, 0);
  EXPECT_EQ(out.str(), "epoch 0 step 10: train/loss=0.5000\n");
}

TEST(ConsoleLogger, SmallAndLargeValuesKeepTheirDigits) {
  std::ostringstream out;
  frugal::ConsoleLogger logger(&out);
  logger.log_epoch_metrics({{"lr", 1e-5}, {"big", 3.14159e7}, {"zero", 0.0}}, 1, 0);
  EXPECT_EQ(out.str(), "epoch 0 step 1: big=3.142e+07 lr=1e-05 zero=0.0000\n");
}

TEST(ConsoleLogger, EmptyMetricsPrintNothing) {
  std::ostringstream out;
  frugal::ConsoleLogger logger(&out, true);
  logger.log_metrics({}, 1, 0);
  logger.log_epoch_metrics({}, 1, 0);
  EXPECT_EQ(out.str(), "");
}

// ---- CSVLogger: layout ----

TEST(CSVLogger, WritesEpochStepThenMetricColumnsAndRows) {
  const std::string dir = temp_dir("csv_rows");
  {
    frugal::CSVLogger logger(csv_options(dir));
    EXPECT_EQ(logger.log_dir(), (fs::path(dir) / "run" / "version_0").string());
    EXPECT_EQ(logger.metrics_path(),
              (fs::path(dir) / "run" / "version_0" / "metrics.csv").string());
    logger.log_metrics({{"train/loss", 0.5}}, 1, 0);
    logger.log_metrics({{"train/loss", 0.25}}, 2, 0);
    logger.log_metrics({{"train/loss", 0.1}}, 3, 1);
    logger.flush();
    EXPECT_EQ(read_text(logger.metrics_path()),
              "epoch,step,train/loss\n"
              "0,1,0.5\n"
              "0,2,0.25\n"
              "1,3,0.1\n");
  }
}

TEST(CSVLogger, ColumnsFollowFirstAppearanceAndMissingCellsAreEmpty) {
  const std::string dir = temp_dir("csv_columns");
  frugal::CSVLogger logger(csv_options(dir));
  logger.log_metrics({{"train/loss", 0.5}}, 1, 0);
  // Within one row new names come in name order; later names go after earlier ones.
  logger.log_epoch_metrics({{"val/loss", 0.4}, {"val/acc", 0.75}}, 1, 0);
  logger.log_metrics({{"train/loss", 0.3}, {"lr-SGD", 0.01}}, 2, 1);
  logger.flush();
  EXPECT_EQ(read_text(logger.metrics_path()),
            "epoch,step,train/loss,val/acc,val/loss,lr-SGD\n"
            "0,1,0.5,,,\n"
            "0,1,,0.75,0.4,\n"
            "1,2,0.3,,,0.01\n");
}

TEST(CSVLogger, NewMetricRewritesTheFileWithTheWiderHeader) {
  const std::string dir = temp_dir("csv_rewrite");
  frugal::CSVLogger logger(csv_options(dir));
  logger.log_metrics({{"train/loss", 0.5}}, 1, 0);
  logger.log_metrics({{"train/loss", 0.25}}, 2, 0);
  logger.flush();
  EXPECT_EQ(read_text(logger.metrics_path()), "epoch,step,train/loss\n0,1,0.5\n0,2,0.25\n");

  logger.log_epoch_metrics({{"val/acc", 0.875}}, 2, 0);
  logger.flush();
  EXPECT_EQ(read_text(logger.metrics_path()),
            "epoch,step,train/loss,val/acc\n"
            "0,1,0.5,\n"
            "0,2,0.25,\n"
            "0,2,,0.875\n");

  // Known columns only: appended, header unchanged.
  logger.log_metrics({{"train/loss", 0.125}}, 3, 1);
  logger.flush();
  EXPECT_EQ(read_text(logger.metrics_path()),
            "epoch,step,train/loss,val/acc\n"
            "0,1,0.5,\n"
            "0,2,0.25,\n"
            "0,2,,0.875\n"
            "1,3,0.125,\n");
}

TEST(CSVLogger, ValuesReadBackExactly) {
  const std::string dir = temp_dir("csv_values");
  frugal::CSVLogger logger(csv_options(dir));
  const double third = 1.0 / 3.0;
  logger.log_metrics({{"a", third}, {"b", 1e-5}, {"c", 1e20}, {"d", -2.0}}, 7, 2);
  logger.flush();
  const auto lines = lines_of(read_text(logger.metrics_path()));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "epoch,step,a,b,c,d");
  EXPECT_EQ(lines[1], "2,7,0.3333333333333333,1e-05,1e+20,-2");
  EXPECT_EQ(std::stod("0.3333333333333333"), third);
}

TEST(CSVLogger, NamesWithCommasOrQuotesAreQuoted) {
  const std::string dir = temp_dir("csv_quote");
  frugal::CSVLogger logger(csv_options(dir));
  logger.log_metrics({{"acc,top5", 0.5}, {"say \"hi\"", 1.0}}, 1, 0);
  logger.flush();
  EXPECT_EQ(read_text(logger.metrics_path()),
            "epoch,step,\"acc,top5\",\"say \"\"hi\"\"\"\n"
            "0,1,0.5,1\n");
}

// ---- CSVLogger: versions ----

TEST(CSVLogger, VersionIsTheNextFreeNumber) {
  const std::string dir = temp_dir("csv_versions");
  frugal::CSVLogger first(csv_options(dir));
  frugal::CSVLogger second(csv_options(dir));
  EXPECT_EQ(fs::path(first.log_dir()).filename(), "version_0");
  EXPECT_EQ(fs::path(second.log_dir()).filename(), "version_1");
  EXPECT_TRUE(fs::is_directory(second.log_dir()));

  frugal::CSVLogger fixed(csv_options(dir).version(7));
  EXPECT_EQ(fs::path(fixed.log_dir()).filename(), "version_7");
  // Not versions: a file named like one, and names that are not version_<digits>.
  std::ofstream(fs::path(dir) / "run" / "version_20") << "x";
  fs::create_directories(fs::path(dir) / "run" / "version_x9");
  fs::create_directories(fs::path(dir) / "run" / "other_30");
  frugal::CSVLogger next(csv_options(dir));
  EXPECT_EQ(fs::path(next.log_dir()).filename(), "version_8");
}

TEST(CSVLogger, DefaultsFollowLightning) {
  const std::string dir = temp_dir("csv_defaults");
  frugal::CSVLogger logger{frugal::CSVLoggerOptions(dir)};
  EXPECT_EQ(logger.log_dir(), (fs::path(dir) / "frugal_logs" / "version_0").string());
  EXPECT_EQ(frugal::CSVLoggerOptions().flush_logs_every_n_steps(), 100);
}

TEST(CSVLogger, BadOptionsAreRefusedNamingTheOption) {
  const std::string dir = temp_dir("csv_bad");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "flush_logs_every_n_steps must be >= 1, got 0",
                      error_message([&] { frugal::CSVLogger logger(csv_options(dir, 0)); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "version must be >= 0 or -1", error_message([&] {
                        frugal::CSVLogger logger(csv_options(dir).version(-2));
                      }));
}

// ---- CSVLogger: hparams.yaml ----

TEST(CSVLogger, HyperparamsYamlQuotesOnlyWhereNeeded) {
  const std::string dir = temp_dir("csv_hparams");
  frugal::CSVLogger logger(csv_options(dir));
  logger.log_hyperparams({{"max_epochs", "10"},
                          {"precision", "bf16-mixed"},
                          {"deterministic", "true"},
                          {"lr", "-0.5"},
                          {"title", "run: big"},
                          {"note", "a #b"},
                          {"empty", ""},
                          {"list", "[1, 2]"},
                          {"path", "C:\\tmp \"x\""},
                          {"multi", "a\nb"},
                          {"dash", "-"},
                          {"padded", " x"}});
  const std::string path = (fs::path(logger.log_dir()) / "hparams.yaml").string();
  EXPECT_EQ(read_text(path),
            "dash: \"-\"\n"
            "deterministic: true\n"
            "empty: \"\"\n"
            "list: \"[1, 2]\"\n"
            "lr: -0.5\n"
            "max_epochs: 10\n"
            "multi: \"a\\nb\"\n"
            "note: \"a #b\"\n"
            "padded: \" x\"\n"
            "path: C:\\tmp \"x\"\n"
            "precision: bf16-mixed\n"
            "title: \"run: big\"\n");

  // A second call merges (the task's hparams after the trainer's).
  logger.log_hyperparams({{"max_epochs", "20"}, {"hidden", "64"}});
  const auto lines = lines_of(read_text(path));
  EXPECT_EQ(lines.size(), 13u);
  EXPECT_EQ(lines[3], "hidden: 64");
  EXPECT_EQ(lines[6], "max_epochs: 20");
}

// ---- CSVLogger: durability ----

TEST(CSVLogger, RowsReachDiskEveryNRowsBeforeDestruction) {
  const std::string dir = temp_dir("csv_flush");
  std::string path;
  {
    frugal::CSVLogger logger(csv_options(dir, /*flush_every=*/3));
    path = logger.metrics_path();
    logger.log_metrics({{"loss", 1.0}}, 1, 0);
    logger.log_metrics({{"loss", 2.0}}, 2, 0);
    EXPECT_FALSE(fs::exists(path)) << "rows are buffered until the third";
    logger.log_metrics({{"loss", 3.0}}, 3, 0);
    ASSERT_TRUE(fs::exists(path));
    EXPECT_EQ(read_text(path), "epoch,step,loss\n0,1,1\n0,2,2\n0,3,3\n");
    logger.log_metrics({{"loss", 4.0}}, 4, 0);
    logger.log_metrics({{"loss", 5.0}}, 5, 0);
    EXPECT_EQ(lines_of(read_text(path)).size(), 4u);
    logger.log_metrics({{"loss", 6.0}}, 6, 0);  // appended
    EXPECT_EQ(read_text(path), "epoch,step,loss\n0,1,1\n0,2,2\n0,3,3\n0,4,4\n0,5,5\n0,6,6\n");
    logger.log_metrics({{"loss", 7.0}}, 7, 1);
    EXPECT_EQ(lines_of(read_text(path)).size(), 7u);
  }
  EXPECT_EQ(lines_of(read_text(path)).size(), 8u) << "the destructor flushes the last row";
  EXPECT_EQ(lines_of(read_text(path)).back(), "1,7,7");
}

TEST(CSVLogger, FinalizeFlushes) {
  const std::string dir = temp_dir("csv_finalize");
  frugal::CSVLogger logger(csv_options(dir));
  logger.log_metrics({{"loss", 1.5}}, 1, 0);
  EXPECT_FALSE(fs::exists(logger.metrics_path()));
  logger.finalize("success");
  EXPECT_EQ(read_text(logger.metrics_path()), "epoch,step,loss\n0,1,1.5\n");
}

TEST(CSVLogger, FileIsACompleteCsvAfterEveryFlush) {
  const std::string dir = temp_dir("csv_complete");
  frugal::CSVLogger logger(csv_options(dir, 2));
  for (int64_t step = 1; step <= 25; ++step) {
    std::map<std::string, double> metrics{{"train/loss", 1.0 / step}};
    if (step % 5 == 0) metrics["val/loss_" + std::to_string(step)] = step;  // new column
    logger.log_metrics(metrics, step, step / 10);
    if (!fs::exists(logger.metrics_path())) continue;
    const std::string text = read_text(logger.metrics_path());
    ASSERT_EQ(text.back(), '\n') << "after step " << step;
    const auto lines = lines_of(text);
    const auto commas = std::count(lines[0].begin(), lines[0].end(), ',');
    for (const auto& line : lines) {
      ASSERT_EQ(std::count(line.begin(), line.end(), ','), commas) << line;
    }
    EXPECT_EQ(static_cast<int64_t>(lines.size()), 1 + step / 2 * 2) << "after step " << step;
  }
}

TEST(CSVLogger, LeavesNoTemporaryFiles) {
  const std::string dir = temp_dir("csv_no_temp");
  frugal::CSVLogger logger(csv_options(dir, 1));
  logger.log_hyperparams({{"a", "1"}});
  for (int step = 0; step < 5; ++step) {
    logger.log_metrics({{"m" + std::to_string(step), 1.0}}, step, 0);  // a rewrite every time
  }
  logger.log_hyperparams({{"b", "2"}});
  EXPECT_EQ(entries(logger.log_dir()), (std::set<std::string>{"hparams.yaml", "metrics.csv"}));
}

TEST(CSVLogger, RowsSurviveAnOverwrittenVersionFolder) {
  // A fixed version over an old run replaces its metrics.csv instead of appending to it.
  const std::string dir = temp_dir("csv_overwrite");
  {
    frugal::CSVLogger old(csv_options(dir).version(0));
    old.log_metrics({{"old", 1.0}}, 1, 0);
  }
  frugal::CSVLogger logger(csv_options(dir).version(0));
  logger.log_metrics({{"new", 2.0}}, 1, 0);
  logger.flush();
  EXPECT_EQ(read_text(logger.metrics_path()), "epoch,step,new\n0,1,2\n");
}

// ---- write_file_atomically ----

TEST(WriteFileAtomically, ReplacesTheWholeFile) {
  const std::string dir = temp_dir("atomic_write");
  const std::string path = (fs::path(dir) / "out.txt").string();
  frugal::detail::write_file_atomically(path, "a much longer first content\n");
  frugal::detail::write_file_atomically(path, "short\n");
  EXPECT_EQ(read_text(path), "short\n");
  EXPECT_EQ(entries(dir), (std::set<std::string>{"out.txt"}));
}

TEST(WriteFileAtomically, FailureNamesThePathAndTheReason) {
  const std::string dir = temp_dir("atomic_fail");
  // Missing folders are created; a folder that is a file cannot be.
  frugal::detail::write_file_atomically((fs::path(dir) / "file").string(), "x");
  const std::string path = (fs::path(dir) / "file" / "out.txt").string();
  const std::string message =
      error_message([&] { frugal::detail::write_file_atomically(path, "x"); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, path, message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "Not a directory", message);
  EXPECT_EQ(entries(dir), std::set<std::string>{"file"});
}

// ---- with the Trainer ----

namespace {

struct FitRun {
  std::shared_ptr<frugal::TensorLoader> train;
  std::shared_ptr<frugal::TensorLoader> val;
};

FitRun toy_run() {
  auto train = frugal::testing::make_toy_data(64, 8, 3, 0);
  auto val = frugal::testing::make_toy_data(16, 8, 3, 1);
  return {std::make_shared<frugal::TensorLoader>(train.x, train.y, frugal::TensorLoaderOptions(8)),
          std::make_shared<frugal::TensorLoader>(val.x, val.y, frugal::TensorLoaderOptions(8))};
}

}  // namespace

TEST(ConsoleLogger, PrintsOneLinePerEpochEndDuringFit) {
  std::ostringstream out;
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  frugal::Classifier task(net, frugal::SGD(0.1));
  auto run = toy_run();
  frugal::Trainer trainer(frugal::testing::quiet_options(temp_dir("console_fit")).max_epochs(2), {},
                          {std::make_shared<frugal::ConsoleLogger>(&out)});
  trainer.fit(task, run.train, run.val);
  // Per epoch: the validation row, then the training epoch row (8 steps per epoch).
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 4u) << out.str();
  EXPECT_EQ(lines[0].rfind("epoch 0 step 8: val/acc=", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find(" val/loss="), std::string::npos);
  EXPECT_EQ(lines[1].rfind("epoch 0 step 8: train/acc=", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("epoch 1 step 16: val/acc=", 0), 0u) << lines[2];
  EXPECT_EQ(lines[3].rfind("epoch 1 step 16: train/acc=", 0), 0u) << lines[3];
  EXPECT_EQ(lines[3].find("train/loss"), std::string::npos) << "a step metric";
}

TEST(CSVLogger, RecordsAFit) {
  const std::string dir = temp_dir("csv_fit");
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  frugal::Classifier task(net, frugal::SGD(0.1));
  auto run = toy_run();
  auto csv = std::make_shared<frugal::CSVLogger>(csv_options(dir));
  {
    frugal::Trainer trainer(frugal::testing::quiet_options(dir).max_epochs(2).log_every_n_steps(4),
                            {}, {csv});
    trainer.fit(task, run.train, run.val);
    EXPECT_EQ(trainer.log_dir(), csv->log_dir());
  }
  // finalize("success") flushed everything, long before the logger's destruction.
  const auto lines = lines_of(read_text(csv->metrics_path()));
  ASSERT_EQ(lines.size(), 9u) << read_text(csv->metrics_path());
  EXPECT_EQ(lines[0], "epoch,step,train/loss,val/acc,val/loss,train/acc");
  const std::vector<std::string> starts = {"0,4,",  "0,8,",  "0,8,,",  "0,8,,,,",
                                           "1,12,", "1,16,", "1,16,,", "1,16,,,,"};
  for (size_t i = 0; i < starts.size(); ++i) {
    EXPECT_EQ(lines[i + 1].rfind(starts[i], 0), 0u) << lines[i + 1];
    EXPECT_EQ(std::count(lines[i + 1].begin(), lines[i + 1].end(), ','), 5) << lines[i + 1];
  }
  const std::string hparams = read_text((fs::path(csv->log_dir()) / "hparams.yaml").string());
  EXPECT_NE(hparams.find("\nmax_epochs: 2\n"), std::string::npos) << hparams;
  EXPECT_NE(hparams.find("\nlog_every_n_steps: 4\n"), std::string::npos) << hparams;
}
